"""Packages for the serving tests, each exported once per session by the real export stage:

classification  a 2-layer, hidden-32 random BERT classifier whose WordPiece vocabulary is
                trained on 200 real amazon review snippets (tasks.classification.export)
translation     a d_model-32 Marian fitted for a few seconds on real Multi30k en->fr pairs,
                with a BPE vocabulary and the contract's special tokens (tasks.translation.export)

Read the exported packages, or `package_copy` them before changing anything. `serve` runs
`python -m serving PACKAGE` in a subprocess, the way a deployer does.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional

import pytest

from serving.package import MANIFEST, sealed
from tasks.common.io import write_jsonl_atomic
from tasks.common.paths import Paths
from tasks.params import Params, parse_params
from tests.conftest import SHARED_DATA, _require

REPO = Path(__file__).resolve().parents[2]

# classification
LABELS = ["negative", "positive"]
MAX_LENGTH = 64  # tokenizer limit, below the model's 128 positions: the manifest's max_length
PARITY_SAMPLES = 40
TEST_ROWS = 120  # target test rows the INT8 gate scores
# Tiny random models are no measure of INT8 on a real one (the demo MiniLM's choice is in
# tasks/classification/export.py); the fixtures' INT8 gates only have to pass, the gate tests
# set their own limits.
TINY_MAX_INT8_DROP = 20.0

# translation
MULTI30K = SHARED_DATA / "multi30k"
SPECIALS = ["<pad>", "</s>", "<unk>", "<2de>", "<2fr>"]  # the contract's ids 0, 1, 2, then the tags
TRANSLATION_MAX_LENGTH = 24  # source tokens, tag and </s> included
MAX_NEW_TOKENS = 12
NUM_BEAMS = 3
GATE_SENTENCES = 16


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: builds a fresh virtual environment and pip-installs into it (about a minute)")


# ---------------------------------------------------------------- real texts


def amazon_texts(amazon_file: Path, start: int, stop: int) -> list[str]:
    """Texts of data rows [start, stop) of the tab-separated amazon file (header
    id/sentiment/text; texts hold quote characters, so no csv quoting rules)."""
    lines = amazon_file.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t", 2)[2] for line in lines[start:stop]]


def amazon_test_rows(amazon_file: Path, start: int, stop: int) -> list[dict]:
    """Data rows [start, stop) as target test rows, labelled by the sign of their mean rating
    (the pipeline's threshold rule): what the export's INT8 gate scores."""
    lines = amazon_file.read_text(encoding="utf-8").splitlines()[1:]
    rows = []
    for line in lines[start:stop]:
        row_id, rating, text = line.split("\t", 2)
        rows.append({"id": row_id, "text": text, "label": LABELS[float(rating) > 0]})
    return rows


def multi30k_lines(split: str, lang: str, count: int) -> list[str]:
    path = _require(MULTI30K / f"{split}.{lang}.gz")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [line.rstrip("\n") for line, _ in zip(handle, range(count))]


# ---------------------------------------------------------------- classification package


def tiny_classifier(texts: list[str]):
    """A 2-layer, hidden-32 random BERT classifier and a WordPiece tokenizer trained on `texts`
    that feeds token_type_ids (as BERT's own do). A wide init spreads the logits, so
    predictions use both classes."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    from tasks.classification.tokenize import train_wordpiece

    trained = train_wordpiece(texts, vocab_size=400, max_length=MAX_LENGTH)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=trained.backend_tokenizer,
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
        model_max_length=MAX_LENGTH,
        **trained.special_tokens_map,
    )
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, initializer_range=0.2,
        pad_token_id=tokenizer.pad_token_id, num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)), label2id={name: i for i, name in enumerate(LABELS)},
    )
    return BertForSequenceClassification(config).eval(), tokenizer


def classification_params() -> Params:
    return parse_params(
        {
            "data": {"source": {"path": "unused-source.tsv"}, "target": {"path": "unused-target.tsv"}},
            "task": {"labels": LABELS},
            "export": {"opset": 17, "parity_samples": PARITY_SAMPLES, "parity_tolerance": 1e-4,
                       "max_int8_drop": TINY_MAX_INT8_DROP},
        }
    )


@pytest.fixture(scope="session")
def classification_workspace(tmp_path_factory, amazon_file) -> Paths:
    """models/target (the tiny classifier), data/prepared/target/val.jsonl (real amazon texts,
    the export's parity texts), test.jsonl (real labelled amazon rows, the INT8 gate's) and
    models/onnx exported by the real export stage (fp32 and INT8 graphs)."""
    from tasks.classification import export

    paths = Paths(tmp_path_factory.mktemp("serving-classification"))
    model, tokenizer = tiny_classifier(amazon_texts(amazon_file, 0, 200))
    model.save_pretrained(paths.target_model)
    tokenizer.save_pretrained(paths.target_model)
    val = amazon_texts(amazon_file, 200, 200 + PARITY_SAMPLES)
    rows = [{"id": f"v{i}", "text": text, "label": LABELS[i % 2]} for i, text in enumerate(val)]
    write_jsonl_atomic(paths.split_file("target", "val"), rows)
    write_jsonl_atomic(paths.split_file("target", "test"), amazon_test_rows(amazon_file, 400, 400 + TEST_ROWS))
    export.run(classification_params(), paths)
    return paths


@pytest.fixture(scope="session")
def classification_package(classification_workspace) -> Path:
    return classification_workspace.onnx


@pytest.fixture(scope="session")
def classification_texts(amazon_file) -> list[str]:
    """50 real amazon snippets the model never saw (neither its vocabulary nor the parity check)."""
    return amazon_texts(amazon_file, 300, 350)


# ---------------------------------------------------------------- translation package


def tiny_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Metaspace()
    core.decoder = decoders.Metaspace()
    core.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, show_progress=False))
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        additional_special_tokens=SPECIALS[3:], model_max_length=TRANSLATION_MAX_LENGTH,
    )


def tiny_translator(src: list[str], tgt: list[str], steps: int = 60):
    """A d_model-32 Marian fitted for `steps` Adam steps on (src, tgt), so its outputs depend
    on the input (a random one says the same thing for every sentence)."""
    import torch
    from transformers import MarianConfig, MarianMTModel

    tokenizer = tiny_tokenizer(src + tgt)
    torch.manual_seed(0)
    config = MarianConfig(
        vocab_size=len(tokenizer), decoder_vocab_size=len(tokenizer), d_model=32,
        encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128, dropout=0.0,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, forced_eos_token_id=1,
    )
    model = MarianMTModel(config)
    tag = tokenizer.convert_tokens_to_ids("<2fr>")
    words = tokenizer(src + tgt, add_special_tokens=False)["input_ids"]
    sources = [[tag] + ids[: TRANSLATION_MAX_LENGTH - 2] + [1] for ids in words[: len(src)]]
    labels = [ids[: TRANSLATION_MAX_LENGTH - 1] + [1] for ids in words[len(src) :]]
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for step in range(steps):
        batch = [(step * 16 + i) % len(src) for i in range(16)]
        width, depth = max(len(sources[i]) for i in batch), max(len(labels[i]) for i in batch)
        ids = torch.tensor([sources[i] + [0] * (width - len(sources[i])) for i in batch])
        target = torch.tensor([labels[i] + [-100] * (depth - len(labels[i])) for i in batch])
        model(input_ids=ids, attention_mask=(ids != 0).long(), labels=target).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval(), tokenizer


def translation_params() -> Params:
    pair = lambda tgt: {"path": str(MULTI30K), "format": "text", "languages": {"src": "en", "tgt": tgt}}  # noqa: E731
    return parse_params(
        {
            "task": {"kind": "translation"},
            "data": {"source": pair("de"), "target": pair("fr")},
            "model": {"init": "scratch"},
            "tokenize": {"max_length": TRANSLATION_MAX_LENGTH},
            "evaluate": {"baselines": ["target_only"],
                         "generation": {"max_new_tokens": MAX_NEW_TOKENS, "num_beams": NUM_BEAMS}},
            "export": {"opset": 17, "parity_samples": GATE_SENTENCES, "max_int8_drop": TINY_MAX_INT8_DROP},
        }
    )


@pytest.fixture(scope="session")
def translation_workspace(tmp_path_factory) -> Paths:
    """models/target (the tiny Marian), data/prepared/target/test.jsonl (real
    test_2016_flickr en->fr rows, the export gate's sentences) and models/onnx exported by the
    real export stage."""
    from tasks.translation import export

    paths = Paths(tmp_path_factory.mktemp("serving-translation"))
    model, tokenizer = tiny_translator(multi30k_lines("train", "en", 64), multi30k_lines("train", "fr", 64))
    model.save_pretrained(paths.target_model)
    tokenizer.save_pretrained(paths.target_model)
    src, tgt = multi30k_lines("test_2016_flickr", "en", 40), multi30k_lines("test_2016_flickr", "fr", 40)
    rows = [{"id": f"test-{i}", "src": s, "tgt": t, "src_lang": "en", "tgt_lang": "fr"}
            for i, (s, t) in enumerate(zip(src, tgt))]
    write_jsonl_atomic(paths.split_file("target", "test"), rows)
    export.run(translation_params(), paths)
    return paths


@pytest.fixture(scope="session")
def translation_package(translation_workspace) -> Path:
    return translation_workspace.onnx


@pytest.fixture(scope="session")
def translation_texts() -> list[str]:
    """20 real Multi30k English test sentences (test_2016_flickr)."""
    return multi30k_lines("test_2016_flickr", "en", 20)


# ---------------------------------------------------------------- helpers


def read_manifest_json(package: Path) -> dict:
    return json.loads((package / MANIFEST).read_text(encoding="utf-8"))


def write_manifest_json(package: Path, manifest: dict, seal: bool = True) -> None:
    """Write `manifest`, re-sealed (a digest that matches, so only the edit itself is wrong)
    unless `seal` is False (an edit made after export, as a person would)."""
    content = sealed(manifest) if seal else manifest
    (package / MANIFEST).write_text(json.dumps(content, indent=2), encoding="utf-8")


@pytest.fixture
def package_copy(tmp_path) -> Callable[[Path], Path]:
    """package_copy(package) -> a private copy to break."""

    def copy(package: Path) -> Path:
        return Path(shutil.copytree(package, tmp_path / f"copy-{package.parent.parent.name}"))

    return copy


def clean_env() -> dict:
    """The environment for a subprocess: offline hubs, and no PYTHONPATH (what is importable
    is what the interpreter's own environment has, plus the working directory for `-m`)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return env


def serve(
    package: Path,
    lines: Sequence[str] = (),
    args: Sequence[str] = (),
    python: Optional[str] = None,
    cwd: Optional[Path] = None,
) -> subprocess.CompletedProcess:
    """`python -m serving PACKAGE [args] < lines`; by default the repo's interpreter in the
    repo root (where `serving` imports from the work tree)."""
    return subprocess.run(
        [python or sys.executable, "-m", "serving", str(package), *args],
        input="".join(line + "\n" for line in lines),
        cwd=cwd or REPO,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def json_lines(result: subprocess.CompletedProcess) -> list[dict]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]
