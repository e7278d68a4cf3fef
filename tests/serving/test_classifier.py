"""OnnxClassifier, the torch-free runtime for exported packages: hashes checked on load,
dynamic padding, truncation, batching that does not change logits.

The package under test is made by the real export stage from a tiny random BERT classifier
whose WordPiece vocabulary is trained on 200 real amazon review snippets. The helpers that
build that workspace are shared with tests/stages/test_export.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from serving.classifier import OnnxClassifier, load_tokenizer
from serving.package import PackageError
from tasks.common.paths import Paths
from tasks.params import Params, parse_params

REPO = Path(__file__).resolve().parents[2]
LABELS = ["negative", "positive"]
MAX_LENGTH = 64
PARITY_SAMPLES = 40
TEST_ROWS = 120  # target test rows the INT8 gate scores
# A 2-layer hidden-32 random model is no measure of INT8 on a real one (the demo MiniLM's
# choice is in tasks/classification/export.py); the fixture's gate only has to pass, the gate
# tests set their own limits.
TINY_MAX_INT8_DROP = 20.0


# ---------------------------------------------------------------- shared builders


def amazon_texts(amazon_file: Path, count: int) -> list[str]:
    """The first `count` texts of the tab-separated file (header id/sentiment/text; texts hold
    quote characters, so no csv quoting rules)."""
    lines = amazon_file.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t", 2)[2] for line in lines[:count]]


def tiny_classifier(texts: list[str], labels=LABELS, token_type_ids: bool = True, seed: int = 0):
    """A 2-layer, hidden-32 random BERT classifier and its WordPiece tokenizer (trained on
    `texts`). A wide init spreads the logits, so predictions use both classes."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    from tasks.classification.tokenize import train_wordpiece

    tokenizer = train_wordpiece(texts, vocab_size=400, max_length=MAX_LENGTH)
    if token_type_ids:
        # BERT's own tokenizers (MiniLM's included) feed token_type_ids; train_wordpiece's
        # (the scratch pipeline's) does not, like RoBERTa/DistilBERT.
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=tokenizer.backend_tokenizer,
            model_input_names=["input_ids", "token_type_ids", "attention_mask"],
            model_max_length=MAX_LENGTH,
            **tokenizer.special_tokens_map,
        )
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        initializer_range=0.2,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    return BertForSequenceClassification(config).eval(), tokenizer


def val_texts(amazon_file: Path) -> list[str]:
    """Real texts of mixed lengths plus one far over MAX_LENGTH tokens (truncation path)."""
    texts = amazon_texts(amazon_file, 260)[200:]
    return texts[:PARITY_SAMPLES - 1] + [" ".join(texts[:30])] + texts[PARITY_SAMPLES - 1 :]


def labelled_test_rows(amazon_file: Path, start: int = 400, count: int = TEST_ROWS) -> list[dict]:
    """Real amazon rows the model never saw, labelled by the sign of their mean rating (the
    pipeline's threshold rule): the target test split the INT8 gate scores."""
    lines = amazon_file.read_text(encoding="utf-8").splitlines()[1 + start : 1 + start + count]
    rows = []
    for line in lines:
        row_id, rating, text = line.split("\t", 2)
        rows.append({"id": row_id, "text": text, "label": LABELS[float(rating) > 0]})
    return rows


def build_workspace(root: Path, amazon_file: Path, **model_options) -> Paths:
    """models/target (save_pretrained model + fast tokenizer) and data/prepared/target/{val,test}.jsonl."""
    paths = Paths(root)
    model, tokenizer = tiny_classifier(amazon_texts(amazon_file, 200), **model_options)
    model.save_pretrained(paths.target_model)
    tokenizer.save_pretrained(paths.target_model)
    val = paths.split_file("target", "val")
    val.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"v{i}", "text": text, "label": LABELS[i % 2]} for i, text in enumerate(val_texts(amazon_file))]
    val.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    test = "".join(json.dumps(row) + "\n" for row in labelled_test_rows(amazon_file))
    paths.split_file("target", "test").write_text(test, encoding="utf-8")
    return paths


def export_params(labels: list[str] = LABELS, **export) -> Params:
    return parse_params(
        {
            "data": {"source": {"path": "unused-source.tsv"}, "target": {"path": "unused-target.tsv"}},
            "task": {"labels": labels},
            "export": {"opset": 17, "parity_samples": PARITY_SAMPLES, "parity_tolerance": 1e-4,
                       "max_int8_drop": TINY_MAX_INT8_DROP, **export},
        }
    )


# ---------------------------------------------------------------- fixtures


_SHARED: dict = {}


def exported_workspace(tmp_path_factory, amazon_file) -> tuple[Paths, dict]:
    """One tiny workspace exported once per test session (exports cost seconds), shared with
    tests/stages/test_export.py: read it, or copy it before changing anything."""
    if not _SHARED:
        from tasks.classification import export

        paths = build_workspace(tmp_path_factory.mktemp("exported"), amazon_file)
        _SHARED["workspace"] = (paths, export.run(export_params(), paths))
    return _SHARED["workspace"]


@pytest.fixture
def package(tmp_path_factory, amazon_file) -> Path:
    return exported_workspace(tmp_path_factory, amazon_file)[0].onnx


@pytest.fixture(scope="module")
def texts(amazon_file) -> list[str]:
    return val_texts(amazon_file)


@pytest.fixture
def package_copy(package, tmp_path) -> Path:
    return Path(shutil.copytree(package, tmp_path / "onnx"))


# ---------------------------------------------------------------- tests


def test_runtime_imports_neither_torch_nor_transformers():
    code = (
        "import sys, serving.classifier, serving.__main__; "
        "loaded = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "sys.exit(f'imported {loaded}' if loaded else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr or result.stdout


def test_predict_returns_label_names_in_input_order(package, texts):
    classifier = OnnxClassifier(package)
    logits = classifier.logits(texts)
    assert logits.shape == (len(texts), 2) and logits.dtype == np.float32
    assert classifier.predict(texts) == [LABELS[i] for i in logits.argmax(axis=1)]
    assert classifier.predict(texts[5:6]) == [LABELS[int(logits[5].argmax())]]


def test_logits_do_not_depend_on_batching_or_padding(package, texts):
    classifier = OnnxClassifier(package)
    alone = np.concatenate([classifier.logits([text]) for text in texts])  # no padding at all
    for batch_size in (7, 32, len(texts)):
        np.testing.assert_allclose(classifier.logits(texts, batch_size=batch_size), alone, atol=1e-5)


def test_texts_reach_the_tokenizer_cleaned_as_ingest_cleaned_the_training_texts(package):
    """Ingest collapses whitespace and drops control characters in every training text; the
    runtime must tokenize a request the same way (a tokenizer without BERT's normalizer, a
    byte-level BPE say, would otherwise get tokens for "  " or a tab the model never saw)."""
    classifier = OnnxClassifier(package)
    seen: list[str] = []
    encode_batch = classifier.tokenizer.encode_batch
    classifier.tokenizer = type("Spy", (), {"encode_batch": lambda self, batch: seen.extend(batch) or encode_batch(batch)})()
    raw = ["\ufeff great   value\t", "broke\x07 after\r\na day ", "fine"]
    logits = classifier.logits(raw)
    assert sorted(seen) == sorted(["great value", "broke after a day", "fine"])
    np.testing.assert_allclose(logits, OnnxClassifier(package).logits(["great value", "broke after a day", "fine"]), atol=1e-6)


def test_batches_are_padded_to_their_longest_text_and_truncated_to_max_length(package, texts):
    classifier = OnnxClassifier(package)
    short = classifier.encode(texts[:3])
    longest = max(len(classifier.tokenizer.encode(text).ids) for text in texts[:3])
    assert short["input_ids"].shape == (3, longest) and longest < MAX_LENGTH
    assert set(short) == {"input_ids", "attention_mask", "token_type_ids"}
    long_text = " ".join(texts)
    assert classifier.encode([long_text])["input_ids"].shape == (1, MAX_LENGTH)
    assert classifier.logits([long_text]).shape == (1, 2)


def test_tokenizer_padding_saved_in_tokenizer_json_is_replaced_by_dynamic_padding(package, tmp_path):
    # Packaged tokenizers (e.g. MiniLM's) can carry fixed 128-token padding in tokenizer.json.
    from tokenizers import Tokenizer

    fixed = Tokenizer.from_file(str(package / "tokenizer.json"))
    fixed.enable_padding(length=MAX_LENGTH, pad_id=0, pad_token="[PAD]")
    fixed.save(str(tmp_path / "tokenizer.json"))
    spec = {"pad_token": "[PAD]", "pad_token_id": 0, "padding_side": "right", "truncation_side": "right"}
    tokenizer = load_tokenizer(tmp_path / "tokenizer.json", MAX_LENGTH, spec)
    batch = tokenizer.encode_batch(["good", "good value for the money"])
    assert len(batch[0].ids) == len(batch[1].ids) < MAX_LENGTH
    assert batch[0].attention_mask[-1] == 0


def test_a_changed_file_fails_the_hash_check(package_copy):
    with (package_copy / "tokenizer.json").open("a", encoding="utf-8") as handle:
        handle.write(" ")
    with pytest.raises(PackageError, match=r"tokenizer\.json: sha256 .* does not match manifest\.json"):
        OnnxClassifier(package_copy)


def test_a_missing_file_is_named(package_copy):
    (package_copy / "model.onnx").unlink()
    with pytest.raises(PackageError, match=r"model\.onnx: listed in manifest\.json but missing"):
        OnnxClassifier(package_copy)


def test_a_folder_without_manifest_is_not_a_package(tmp_path):
    with pytest.raises(PackageError, match="manifest.json not found"):
        OnnxClassifier(tmp_path)


def test_an_unknown_format_version_is_refused(package_copy):
    manifest = json.loads((package_copy / "manifest.json").read_text())
    (package_copy / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99}))
    with pytest.raises(PackageError, match="format_version 99"):
        OnnxClassifier(package_copy)


def test_command_line_reads_stdin_and_prints_one_json_line_per_text(package, texts):
    done = subprocess.run(
        [sys.executable, "-m", "serving", str(package)],
        input="\n".join(texts[:3]) + "\n", capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [row["text"] for row in rows] == texts[:3]
    assert [row["label"] for row in rows] == OnnxClassifier(package).predict(texts[:3])


def test_command_line_on_a_missing_package_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "serving", str(tmp_path / "nope")],
                          input="hi\n", capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: serve:") and "nope" in done.stderr


def test_serve_entrypoint_hands_a_classifier_package_to_the_classifier(package, texts):
    done = subprocess.run(
        [sys.executable, "-m", "serving", str(package)],
        input="\n".join(texts[:2]) + "\n", capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["label"] for line in done.stdout.splitlines()] == OnnxClassifier(package).predict(texts[:2])


def test_serve_entrypoint_on_a_folder_without_manifest_is_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "serving", str(tmp_path)], input="hi\n",
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 1 and done.stderr.startswith("error: serve:") and "manifest.json" in done.stderr


def test_serve_finds_the_package_among_options(package, texts, monkeypatch):
    """argparse takes the package wherever it stands among the options, and MODEL_DIR without one."""
    for argv in ([str(package), "--threads", "1"], ["--threads", "1", str(package)]):
        done = subprocess.run([sys.executable, "-m", "serving", *argv], input=texts[0] + "\n",
                              capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
        assert done.returncode == 0, done.stderr
    monkeypatch.setenv("MODEL_DIR", str(package))
    done = subprocess.run([sys.executable, "-m", "serving"], input=texts[0] + "\n", capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], env={**__import__("os").environ})
    assert done.returncode == 0 and json.loads(done.stdout)["text"] == texts[0]


# ---------------------------------------------------------------- precision (fp32 | int8 | auto)


def reseal(package: Path, change) -> None:
    """Edit the manifest and re-seal it (its digest made to match), as an export would write it."""
    from tests.serving.conftest import read_manifest_json, write_manifest_json

    manifest = read_manifest_json(package)
    change(manifest)
    write_manifest_json(package, manifest)


def test_precision_auto_follows_serve_precision_and_defaults_to_fp32(package, package_copy):
    classifier = OnnxClassifier(package)
    assert classifier.precision == "fp32" and classifier.graph_file == "model.onnx"
    reseal(package_copy, lambda m: m.update(serve_precision="int8"))
    served = OnnxClassifier(package_copy)
    assert served.precision == "int8" and served.graph_file == "model.int8.onnx"
    assert OnnxClassifier(package_copy, precision="fp32").precision == "fp32"
    reseal(package_copy, lambda m: m.pop("serve_precision"))  # a package exported before INT8
    assert OnnxClassifier(package_copy).precision == "fp32"


def test_int8_without_an_int8_graph_is_a_package_error(package_copy):
    (package_copy / "model.int8.onnx").unlink()
    reseal(package_copy, lambda m: (m.pop("serve_precision"), m["files"].pop("model.int8.onnx")))
    assert OnnxClassifier(package_copy).precision == "fp32"  # an old package still loads
    with pytest.raises(PackageError, match=r"no INT8 graph \(model\.int8\.onnx not in files\) but precision int8 was asked for"):
        OnnxClassifier(package_copy, precision="int8")
    reseal(package_copy, lambda m: m.update(serve_precision="int8"))
    with pytest.raises(PackageError, match=r"not in files\) but its serve_precision says int8"):
        OnnxClassifier(package_copy)


def test_an_unknown_precision_is_refused(package):
    with pytest.raises(PackageError, match=r"precision 'fp16' is not one of \['auto', 'fp32', 'int8'\]"):
        OnnxClassifier(package, precision="fp16")


def test_a_changed_int8_graph_fails_the_hash_check_at_either_precision(package_copy):
    with (package_copy / "model.int8.onnx").open("ab") as handle:
        handle.write(b"\0")
    for precision in ("fp32", "int8"):
        with pytest.raises(PackageError, match=r"model\.int8\.onnx: sha256 .* does not match manifest\.json"):
            OnnxClassifier(package_copy, precision=precision)
