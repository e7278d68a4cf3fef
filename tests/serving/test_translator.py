"""OnnxTranslator, the torch-free runtime for exported translation packages: greedy and beam
search with a KV cache that give transformers' `generate` token ids, hashes checked on load,
no torch import, and the stdin -> JSON command line.

The package under test is made by the real export stage from a tiny Marian (d_model 32, 2+2
layers) trained for a few seconds on real Multi30k en->fr pairs, with a BPE vocabulary trained
on those pairs and the contract's special tokens. The builders are shared with
tests/stages/test_translation_export.py.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from tasks.common.io import write_jsonl_atomic
from serving.package import PackageError
from tasks.common.paths import Paths
from serving.translator import OnnxTranslator, trim
from tasks.params import Params, parse_params
from tests.conftest import SHARED_DATA, _require

REPO = Path(__file__).resolve().parents[2]
MULTI30K = SHARED_DATA / "multi30k"
SPECIALS = ["<pad>", "</s>", "<unk>", "<2de>", "<2fr>"]  # the contract's ids 0, 1, 2, then tags
MAX_LENGTH = 24  # source tokens, tag and </s> included: some test sentences are truncated
MAX_NEW_TOKENS = 12
GATE_SENTENCES = 24
# A d_model-32 Marian fitted for seconds is no measure of INT8 on a real one; the fixture's
# INT8 gate only has to pass, the gate tests set their own limits.
TINY_MAX_INT8_DROP = 20.0


# ---------------------------------------------------------------- shared builders


def multi30k_lines(split: str, lang: str, count: int) -> list[str]:
    path = _require(MULTI30K / f"{split}.{lang}.gz")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [line.rstrip("\n") for line, _ in zip(handle, range(count))]


def tiny_tokenizer(texts: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Metaspace()
    core.decoder = decoders.Metaspace()
    core.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, show_progress=False))
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        additional_special_tokens=SPECIALS[3:], model_max_length=MAX_LENGTH,
    )


def tiny_translator(src: list[str], tgt: list[str], steps: int = 60, seed: int = 0):
    """A d_model-32 Marian fitted for `steps` Adam steps on (src, tgt) so its outputs depend on
    the input (a random one says the same thing for every sentence)."""
    import torch
    from transformers import MarianConfig, MarianMTModel

    tokenizer = tiny_tokenizer(src + tgt)
    torch.manual_seed(seed)
    config = MarianConfig(
        vocab_size=len(tokenizer), decoder_vocab_size=len(tokenizer), d_model=32,
        encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128, dropout=0.0,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        forced_eos_token_id=1,  # exercises the runtime's forced </s> at the length limit
    )
    model = MarianMTModel(config)
    tag = tokenizer.convert_tokens_to_ids("<2fr>")
    words = lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"]  # noqa: E731
    sources = [[tag] + ids[: MAX_LENGTH - 2] + [1] for ids in words(src)]
    labels = [ids[:MAX_LENGTH - 1] + [1] for ids in words(tgt)]
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    model.train()
    for step in range(steps):
        batch = [(step * 16 + i) % len(src) for i in range(16)]
        width, depth = max(len(sources[i]) for i in batch), max(len(labels[i]) for i in batch)
        ids = torch.tensor([sources[i] + [0] * (width - len(sources[i])) for i in batch])
        target = torch.tensor([labels[i] + [-100] * (depth - len(labels[i])) for i in batch])
        loss = model(input_ids=ids, attention_mask=(ids != 0).long(), labels=target).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval(), tokenizer


def build_workspace(root: Path) -> Paths:
    """models/target (model + fast tokenizer) and data/prepared/target/test.jsonl (real
    test_2016_flickr en->fr rows in the contract's format)."""
    paths = Paths(root)
    model, tokenizer = tiny_translator(multi30k_lines("train", "en", 64), multi30k_lines("train", "fr", 64))
    model.save_pretrained(paths.target_model)
    tokenizer.save_pretrained(paths.target_model)
    src, tgt = multi30k_lines("test_2016_flickr", "en", 40), multi30k_lines("test_2016_flickr", "fr", 40)
    rows = [{"id": f"test-{i}", "src": s, "tgt": t, "src_lang": "en", "tgt_lang": "fr"} for i, (s, t) in enumerate(zip(src, tgt))]
    write_jsonl_atomic(paths.split_file("target", "test"), rows)
    return paths


def export_params(**export) -> Params:
    pair = lambda tgt: {"path": str(MULTI30K), "format": "text", "languages": {"src": "en", "tgt": tgt}}  # noqa: E731
    return parse_params(
        {
            "task": {"kind": "translation"},
            "data": {"source": pair("de"), "target": pair("fr")},
            "model": {"init": "scratch"},
            "tokenize": {"max_length": MAX_LENGTH},
            "evaluate": {"baselines": ["target_only"], "generation": {"max_new_tokens": MAX_NEW_TOKENS, "num_beams": 3, "no_repeat_ngram_size": 2}},
            "export": {"opset": 17, "parity_samples": GATE_SENTENCES, "max_int8_drop": TINY_MAX_INT8_DROP, **export},
        }
    )


_SHARED: dict = {}


def exported_workspace(tmp_path_factory) -> tuple[Paths, dict]:
    """One tiny workspace exported once per test session (shared with the stage tests): read
    it, or copy it before changing anything."""
    if not _SHARED:
        from tasks.translation import export

        paths = build_workspace(tmp_path_factory.mktemp("translation-exported"))
        _SHARED["workspace"] = (paths, export.run(export_params(), paths))
    return _SHARED["workspace"]


def test_sentences(count: int = GATE_SENTENCES) -> list[str]:
    return multi30k_lines("test_2016_flickr", "en", count)


test_sentences.__test__ = False  # a helper, not a test


def torch_generate(paths: Paths, translator: OnnxTranslator, texts: list[str], **generation) -> list[list[int]]:
    """transformers' generate on the same padded batches the runtime builds, trimmed alike."""
    import torch
    from transformers import MarianMTModel

    model = MarianMTModel.from_pretrained(str(paths.target_model)).eval()
    out: list[list[int]] = [[] for _ in texts]
    for index in translator.plan_batches(texts, generation.pop("batch_size", 32)):
        ids, mask = translator.pad([translator.encode_ids(texts[i]) for i in index])
        with torch.no_grad():
            rows = model.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), do_sample=False, **generation)
        for i, row in zip(index, rows.tolist()):
            out[i] = trim(row[1:], translator.eos_id, translator.pad_id)
    return out


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def exported(tmp_path_factory) -> Paths:
    return exported_workspace(tmp_path_factory)[0]


@pytest.fixture
def translator(exported) -> OnnxTranslator:
    return OnnxTranslator(exported.onnx)


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("max_new_tokens", [3, MAX_NEW_TOKENS])
def test_greedy_ids_equal_generate_on_a_batch_of_mixed_lengths(exported, translator, max_new_tokens):
    texts = test_sentences()  # 6 to 30+ tokens: padded batches, some truncated to MAX_LENGTH
    assert max(len(translator.encode_ids(t)) for t in texts) == MAX_LENGTH > min(len(translator.encode_ids(t)) for t in texts)
    plain = {"num_beams": 1, "max_new_tokens": max_new_tokens, "no_repeat_ngram_size": 0}  # greedy as evaluate runs it
    ours = translator.generate_ids(texts, **plain)
    assert ours == torch_generate(exported, translator, texts, **plain)
    if max_new_tokens == 3:  # no room to finish: generation_config.forced_eos_token_id ends every row
        assert all(len(row) == 3 and row[-1] == translator.eos_id for row in ours)
    else:
        assert len({tuple(row) for row in ours}) > 3, "outputs must depend on the input for this test to mean much"


@pytest.mark.parametrize(
    "options",
    [
        {"early_stopping": False, "length_penalty": 1.0, "no_repeat_ngram_size": 0},
        {"early_stopping": True, "length_penalty": 0.5, "no_repeat_ngram_size": 0},
        {"early_stopping": False, "length_penalty": 2.0, "no_repeat_ngram_size": 1},
        {"early_stopping": "never", "length_penalty": 1.0, "no_repeat_ngram_size": 3},
        {"early_stopping": True, "length_penalty": 1.0, "no_repeat_ngram_size": 2, "repetition_penalty": 1.5},
    ],
)
def test_beam_ids_equal_generate_beam_search(exported, translator, options):
    texts = test_sentences(16)
    ours = translator.generate_ids(texts, num_beams=3, batch_size=8, **options)
    reference = torch_generate(exported, translator, texts, num_beams=3, max_new_tokens=MAX_NEW_TOKENS, batch_size=8, **options)
    assert ours == reference
    assert ours != translator.generate_ids(texts, num_beams=1, **options), "beam search should change some outputs"


def test_greedy_repetition_guards_equal_generate(exported, translator):
    texts = test_sentences(16)
    guards = {"no_repeat_ngram_size": 2, "repetition_penalty": 1.3}
    ours = translator.generate_ids(texts, num_beams=1, **guards)
    assert ours == torch_generate(exported, translator, texts, num_beams=1, max_new_tokens=MAX_NEW_TOKENS, **guards)
    unguarded = translator.generate_ids(texts, num_beams=1, no_repeat_ngram_size=0, repetition_penalty=1.0)
    assert ours != unguarded, "the guards should change some outputs"
    for row in ours:  # no bigram twice
        bigrams = list(zip([translator.start_id, *row], row))
        assert len(bigrams) == len(set(bigrams))


def test_defaults_decode_as_the_evaluate_stage_and_an_argument_overrides_one_setting(exported, translator):
    """The README's calls: translate(texts) gives the evaluate stage's beam tokens (the
    manifest's beams and no-repeat guard), translate(texts, num_beams=2) changes the beams only."""
    from transformers import AutoTokenizer, MarianMTModel

    from tasks.translation.evaluate import decoding_options
    from tasks.translation.model import generate_ids

    model = MarianMTModel.from_pretrained(str(exported.target_model)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(exported.target_model))
    texts, beam = test_sentences(16), decoding_options(export_params())["beam"]
    evaluated = lambda **change: generate_ids(  # noqa: E731
        model, tokenizer, texts, "fr", batch_size=32, device="cpu", max_length=MAX_LENGTH, **{**beam, **change}
    )
    runtime = lambda **change: [  # noqa: E731  (evaluate's ids stop before </s>)
        row[:-1] if row and row[-1] == translator.eos_id else row for row in translator.generate_ids(texts, **change)
    ]
    assert beam["no_repeat_ngram_size"] == 2 and beam["num_beams"] == 3
    assert runtime() == evaluated()
    assert runtime(num_beams=2) == evaluated(num_beams=2)
    assert runtime(no_repeat_ngram_size=0) == evaluated(no_repeat_ngram_size=0) != evaluated()
    assert translator.translate(texts) == [translator.decode(ids) for ids in evaluated()]


def test_top_k_matches_a_full_stable_sort_with_ties():
    """Wide rows take the grid path (widths that fill a grid and widths that need padding, a tie
    at the k-th value, rows of -inf, a NaN), narrow rows the sort; all give torch.topk's order:
    best first, ties by lower index."""
    import numpy as np

    from serving.translator import top_k

    rng = np.random.default_rng(0)
    tied = rng.integers(0, 6, size=(32, 600)).astype(np.float32)  # ties everywhere, at the k-th place too
    tied[::7, 5:] = -np.inf
    distinct = rng.standard_normal((32, 640)).astype(np.float32)
    blocked = distinct.copy()
    blocked[3] = -np.inf
    blocked[5, rng.integers(0, 640, 300)] = -np.inf
    with_nan = tied.copy()
    with_nan[2, 7] = np.nan
    for scores in (tied, distinct, blocked, with_nan, tied[:, :40], tied[:, :333]):
        for k in (1, 3, 8, 40):
            values, index = top_k(scores, k)
            expected = np.argsort(-scores, axis=-1, kind="stable")[:, :k]
            assert (index == expected).all()
            assert np.array_equal(values, np.take_along_axis(scores, expected, axis=-1), equal_nan=True)


def test_block_repeated_ngrams_matches_a_loop_over_rows():
    import numpy as np

    from serving.translator import block_repeated_ngrams

    def reference(scores, sequences, size):
        for row, tokens in enumerate(sequences.tolist()):
            prefix = tokens[len(tokens) - size + 1 :] if size > 1 else []
            for start in range(len(tokens) - size + 1):
                if tokens[start : start + size - 1] == prefix:
                    scores[row, tokens[start + size - 1]] = -np.inf

    rng = np.random.default_rng(1)
    for size in (1, 2, 3, 4):
        for length in (0, 1, 3, 9):
            sequences = rng.integers(0, 4, size=(5, length))  # few token values: many repeats
            got, expected = np.zeros((5, 6)), np.zeros((5, 6))
            block_repeated_ngrams(got, sequences, size)
            reference(expected, sequences, size)
            assert (got == expected).all(), (size, length)


def test_batching_does_not_change_the_ids(translator):
    texts = test_sentences(12)
    assert translator.generate_ids(texts, batch_size=1) == translator.generate_ids(texts, batch_size=12)


def test_source_encoding_follows_the_contract(translator):
    ids = translator.encode_ids("A man rides a bike.")
    assert ids[0] == translator.manifest["language_tags"]["<2fr>"] == translator.tag_id
    assert ids[-1] == translator.eos_id == 1 and translator.pad_id == 0
    assert len(translator.encode_ids(" ".join(test_sentences(10)))) == MAX_LENGTH


@pytest.mark.parametrize("raw", [" A man rides a bike.", "A  man\trides a bike.\n", "\ufeffA man rides a bike.",
                                 "A man\x00 rides a bike.\x1b", "A man rides a bike.\r"])
def test_a_source_is_encoded_as_ingest_cleaned_the_training_texts(translator, raw):
    # byte-level BPE sees every space: a leading space, a double space, a tab, a BOM (the first
    # line of a Windows file on stdin) or a control character gave tokens never seen in training
    assert translator.encode_ids(raw) == translator.encode_ids("A man rides a bike.")


@pytest.mark.parametrize("raw", ["  two  spaces\t", "nul\x00 and esc\x1b[0m", "line\r\nbreak", "caf\u00e9 \u200b", "\x85next"])
def test_serving_cleans_texts_as_ingest_does(raw):
    from serving.package import clean_text as serving_clean
    from tasks.common.sources import clean_text as ingest_clean

    assert serving_clean(raw) == ingest_clean(raw)


def test_translate_decodes_without_special_tokens(translator):
    texts = test_sentences(4)
    out = translator.translate(texts)
    assert len(out) == 4 and all(isinstance(t, str) for t in out)
    assert not any(token in t for t in out for token in ("<pad>", "</s>", "<2fr>"))
    assert out == [translator.decode(ids) for ids in translator.generate_ids(texts)]


def test_runtime_translates_without_importing_torch_or_transformers(exported):
    code = (
        "import sys; from serving.translator import OnnxTranslator; "
        f"t = OnnxTranslator({str(exported.onnx)!r}); t.translate(['A dog runs.'], num_beams=2); "
        "loaded = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "sys.exit(f'imported {loaded}' if loaded else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr or result.stdout


def test_cli_reads_stdin_and_prints_one_json_line_per_sentence(exported, translator):
    texts = test_sentences(3)
    result = subprocess.run(
        [sys.executable, "-m", "serving", str(exported.onnx), "--beams", "2"],
        input="\n".join(texts) + "\n\n", cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["source"] for line in lines[:3]] == texts
    assert [line["translation"] for line in lines[:3]] == translator.translate(texts, num_beams=2, max_new_tokens=MAX_NEW_TOKENS)
    assert lines[3:] == [{"error": "line 4 is empty", "line": 4}]  # the blank line keeps its place


def test_cli_decodes_as_the_manifest_says_by_default(exported, translator):
    texts = test_sentences(3)
    result = subprocess.run(
        [sys.executable, "-m", "serving", str(exported.onnx)],
        input="\n".join(texts), cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert translator.decoding() == {"num_beams": 3, "max_new_tokens": MAX_NEW_TOKENS, "length_penalty": 1.0,
                                     "no_repeat_ngram_size": 2, "repetition_penalty": 1.0}
    expected = translator.translate(texts)
    assert [json.loads(line)["translation"] for line in result.stdout.splitlines()] == expected


def test_thread_count_reaches_every_session_and_a_bad_one_is_named(exported, monkeypatch):
    threads = lambda t: {s.get_session_options().intra_op_num_threads for s in (t.encoder, t.decoder, t.decoder_with_past)}  # noqa: E731
    monkeypatch.delenv("TRANSLATOR_THREADS", raising=False)
    assert threads(OnnxTranslator(exported.onnx)) == {1}
    assert threads(OnnxTranslator(exported.onnx, threads=2)) == {2}
    monkeypatch.setenv("TRANSLATOR_THREADS", "3")
    assert threads(OnnxTranslator(exported.onnx)) == {3}
    monkeypatch.setenv("TRANSLATOR_THREADS", "two")
    with pytest.raises(PackageError, match=r"TRANSLATOR_THREADS\) must be a whole number >= 1, got 'two'"):
        OnnxTranslator(exported.onnx)
    result = subprocess.run(
        [sys.executable, "-m", "serving", str(exported.onnx), "--threads", "0"],
        input="A dog.\n", cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1] == (
        "python -m serving: error: argument --threads: must be > 0, got 0"
    )


def test_cli_names_a_missing_package_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "serving", str(tmp_path / "nowhere")],
        input="A dog.\n", cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: serve: {tmp_path / 'nowhere' / 'manifest.json'} not found: "
                                                  "not an exported model package (run the export stage)"]


def test_a_changed_graph_fails_the_hash_check(exported, tmp_path):
    package = Path(shutil.copytree(exported.onnx, tmp_path / "onnx"))
    with (package / "decoder_with_past.onnx").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(PackageError, match=r"decoder_with_past\.onnx: sha256 .* does not match manifest\.json"):
        OnnxTranslator(package)


def test_a_classification_package_is_refused(exported, tmp_path):
    package = Path(shutil.copytree(exported.onnx, tmp_path / "onnx"))
    manifest = json.loads((package / "manifest.json").read_text())
    (package / "manifest.json").write_text(json.dumps({**manifest, "task": "classification"}))
    with pytest.raises(PackageError, match="a 'classification' package, not a translation one"):
        OnnxTranslator(package)


# ---------------------------------------------------------------- INT8


def test_int8_graphs_are_listed_scored_with_bleu_and_run(exported, translator):
    manifest = translator.manifest
    names = ("encoder.int8.onnx", "decoder.int8.onnx", "decoder_with_past.int8.onnx")
    assert all(name in manifest["files"] for name in names) and manifest["serve_precision"] == "fp32"
    int8 = manifest["int8"]
    assert int8["metric"] == "bleu" and int8["texts"] == GATE_SENTENCES and int8["bleu_signature"].startswith("nrefs:1")
    assert int8["drop"] == pytest.approx(int8["fp32"] - int8["int8"], abs=1e-3) and int8["drop"] <= int8["max_drop"]
    assert 0 <= int8["identical"] <= GATE_SENTENCES and set(int8["bytes"]) == set(names)
    # the tied output layer (read through a Transpose of the embedding) is quantized too: no
    # MatMul of any INT8 graph keeps a float32 weight
    assert int8["quantization"]["weight_transposes_folded"] >= 1
    for name in names:
        graph = onnx.load(exported.onnx / name).graph
        weights = {tensor.name for tensor in graph.initializer}
        assert not [n.name for n in graph.node if n.op_type in ("MatMul", "Transpose") and set(n.input) & weights], name
    quantized = OnnxTranslator(exported.onnx, precision="int8")
    assert quantized.precision == "int8" and quantized.graph_files == names
    texts = test_sentences(8)
    out = quantized.translate(texts, num_beams=2)
    assert len(out) == 8 and all(isinstance(text, str) for text in out)
    same = sum(a == b for a, b in zip(quantized.generate_ids(texts), translator.generate_ids(texts)))
    assert same >= 4, "INT8 greedy ids should mostly equal fp32's"


def test_precision_int8_on_a_package_without_int8_graphs_is_refused(exported, tmp_path):
    from tests.serving.conftest import read_manifest_json, write_manifest_json

    package = Path(shutil.copytree(exported.onnx, tmp_path / "onnx"))
    manifest = read_manifest_json(package)
    for name in ("encoder.int8.onnx", "decoder.int8.onnx", "decoder_with_past.int8.onnx"):
        (package / name).unlink()
        del manifest["files"][name]
    del manifest["serve_precision"]  # as a package exported before INT8
    write_manifest_json(package, manifest)
    assert OnnxTranslator(package).precision == "fp32"
    with pytest.raises(PackageError, match=r"no INT8 graph \(encoder\.int8\.onnx, decoder\.int8\.onnx, decoder_with_past\.int8\.onnx not in files\)"):
        OnnxTranslator(package, precision="int8")


# ---------------------------------------------------------------- the KV cache on the device


def test_a_device_kv_cache_gives_the_host_cache_ids(exported, translator):
    """kv_cache "device": every graph through ONNX Runtime IO binding, the cache kept in
    OrtValues and reordered by reorder.onnx (what a CUDA session does; here on the CPU device):
    the very ids of the numpy cache, greedy and beam, with rows leaving the batch as they finish."""
    on_device = OnnxTranslator(exported.onnx, kv_cache="device")
    assert on_device.device == ("cpu", 0) and translator.device is None, "auto on CPU keeps the cache in numpy"
    texts = test_sentences(16)
    for options in ({"num_beams": 1}, {"num_beams": 3, "early_stopping": True}, {"num_beams": 2, "no_repeat_ngram_size": 2}):
        assert on_device.generate_ids(texts, batch_size=8, **options) == translator.generate_ids(texts, batch_size=8, **options)
    # rows leaving the batch (this tiny model seldom ends a row early): the same take on real caches
    ids, mask = translator.pad([translator.encode_ids(text) for text in texts[:4]])
    _, host_self, host_cross = translator.first_step(translator.encode(ids, mask), mask)
    _, device_self, device_cross = on_device.first_step(on_device.encode(ids, mask), mask)
    going = np.array([3, 1])
    for host, device in ((host_self, device_self), (host_cross, device_cross)):
        assert all(not isinstance(tensor, np.ndarray) for tensor in device), "OrtValues, not numpy"
        for expected, taken in zip(translator.take(host, going), on_device.take(device, going)):
            np.testing.assert_array_equal(taken.numpy(), expected)


def test_the_reorder_graph_gathers_rows_of_every_cached_tensor(exported):
    import onnxruntime as ort

    from serving.translator import REORDER_FILE, reorder_names

    layers = OnnxTranslator(exported.onnx).layers
    inputs, index_name, outputs = reorder_names(layers)
    session = ort.InferenceSession(str(exported.onnx / REORDER_FILE), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [*inputs, index_name] and [o.name for o in session.get_outputs()] == outputs
    rng = np.random.default_rng(0)
    # keys and values of other layouts side by side, as self keys (heads, dim, past) and values (heads, past, dim)
    tensors = [rng.standard_normal((3, 2, 4 + i % 2, 5 - i % 2)).astype(np.float32) for i in range(len(inputs))]
    index = np.array([2, 2, 0, 1, 0])
    taken = session.run(None, {**dict(zip(inputs, tensors)), index_name: index})
    for tensor, out in zip(tensors, taken):
        np.testing.assert_array_equal(out, tensor[index])


def exported_before(exported: Paths, tmp_path: Path, graph: str) -> Path:
    """A copy of the exported package without `graph`, as a package exported before it was."""
    from tests.serving.conftest import read_manifest_json, write_manifest_json

    package = Path(shutil.copytree(exported.onnx, tmp_path / "onnx"))
    manifest = read_manifest_json(package)
    (package / graph).unlink()
    del manifest["files"][graph]
    write_manifest_json(package, manifest)
    return package


def test_a_device_kv_cache_needs_the_reorder_graph(exported, tmp_path):
    package = exported_before(exported, tmp_path, "reorder.onnx")
    assert OnnxTranslator(package).device is None
    with pytest.raises(PackageError, match=r"kv_cache 'device' needs reorder\.onnx, which this package .* does not list"):
        OnnxTranslator(package, kv_cache="device")
    with pytest.raises(PackageError, match=r"kv_cache 'gpu' is not one of \['auto', 'host', 'device'\]"):
        OnnxTranslator(package, kv_cache="gpu")


# ---------------------------------------------------------------- the beam step's scoring graph


def test_the_search_graph_scores_candidates_as_the_numpy_step(exported):
    """search.onnx against the numpy path (log_softmax, banned pairs at -inf, running scores,
    top_k): ties everywhere (integer logits), a row banned whole, a pair banned twice, no pair at
    all, one sentence and several: the same indices in the same order, the same scores."""
    import onnxruntime as ort

    from serving.translator import SEARCH_FILE, log_softmax, search_names, top_k

    session = ort.InferenceSession(str(exported.onnx / SEARCH_FILE), providers=["CPUExecutionProvider"])
    inputs, outputs = search_names()
    assert [i.name for i in session.get_inputs()] == inputs and [o.name for o in session.get_outputs()] == outputs
    rng = np.random.default_rng(0)
    for sentences, beams, vocab in ((1, 4, 700), (3, 2, 50), (5, 3, 400)):
        rows = sentences * beams
        for logits in (rng.integers(0, 4, (rows, vocab)).astype(np.float32), rng.standard_normal((rows, vocab)).astype(np.float32)):
            running = -rng.integers(0, 3, (rows, 1)).astype(np.float32)
            banned_pairs = [np.zeros((0, 2), dtype=np.int64),
                            np.array([[0, 3], [0, 3], [rows - 1, vocab - 1]]),
                            np.stack([np.zeros(vocab, dtype=np.int64), np.arange(vocab)], axis=1)]  # row 0 banned whole
            for banned in banned_pairs:
                keep = 2 * beams
                scores, index = session.run(None, {"logits": logits, "running_scores": running, "banned": banned,
                                                   "grid": np.array([sentences, -1]), "k": np.array([keep])})
                expected = log_softmax(logits.copy())
                expected[banned[:, 0], banned[:, 1]] = -np.inf
                expected_scores, expected_index = top_k((expected + running).reshape(sentences, -1), keep)
                np.testing.assert_array_equal(index, expected_index)
                np.testing.assert_allclose(scores, expected_scores, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "options",
    [
        {"num_beams": 3, "early_stopping": True, "no_repeat_ngram_size": 2},
        {"num_beams": 4, "early_stopping": False, "length_penalty": 0.6, "no_repeat_ngram_size": 1},
        {"num_beams": 2, "max_new_tokens": 4},  # the last step forces </s>: scored by numpy
        {"num_beams": 3, "repetition_penalty": 1.4},  # a penalty rescales scores: numpy
    ],
)
def test_the_search_graph_and_numpy_give_the_same_beam_ids(exported, translator, options):
    graph_search, numpy_search = OnnxTranslator(exported.onnx, search="graph"), OnnxTranslator(exported.onnx, search="numpy")
    assert translator.search is not None and numpy_search.search is None, "auto uses the package's search.onnx"
    texts = test_sentences(16)
    assert graph_search.generate_ids(texts, batch_size=8, **options) == numpy_search.generate_ids(texts, batch_size=8, **options)


def test_the_search_graph_is_used_where_it_can_be(exported, monkeypatch):
    """search "graph": every beam step runs search.onnx, but the one that forces </s> and every
    step under a repetition penalty (their scores are not a ban away from the log-softmax);
    "auto": only steps of SEARCH_GRAPH_MIN_SENTENCES sentences or more."""
    from serving.translator import SEARCH_GRAPH_MIN_SENTENCES

    translator = OnnxTranslator(exported.onnx, search="graph")
    steps, graph_runs = [], []
    real_search, real_step = translator.search, translator.best_candidates

    def step(logits, so_far, running_scores, max_length, options, keep):
        steps.append(translator.forces_eos(so_far.shape[1], max_length))
        return real_step(logits, so_far, running_scores, max_length, options, keep)

    monkeypatch.setattr(translator, "best_candidates", step)
    monkeypatch.setattr(translator, "search", type("Counted", (), {"run": lambda self, *a: graph_runs.append(1) or real_search.run(*a)})())
    translator.generate_ids(test_sentences(4), num_beams=2, max_new_tokens=4, batch_size=4)
    assert True in steps and len(graph_runs) == steps.count(False) > 0, "every step but the forced one"
    steps.clear(), graph_runs.clear()
    translator.generate_ids(test_sentences(4), num_beams=2, repetition_penalty=1.2, batch_size=4)
    assert steps and graph_runs == []
    steps.clear()
    translator.search_min_sentences = OnnxTranslator(exported.onnx).search_min_sentences  # as "auto"
    assert translator.search_min_sentences == SEARCH_GRAPH_MIN_SENTENCES > 4
    translator.generate_ids(test_sentences(4), num_beams=2, max_new_tokens=4, batch_size=4)
    assert steps and graph_runs == [], "4 sentences: numpy"


def test_a_package_without_the_search_graph_searches_in_numpy(exported, tmp_path):
    package = exported_before(exported, tmp_path, "search.onnx")
    old = OnnxTranslator(package)
    assert old.search is None
    texts = test_sentences(8)
    assert old.generate_ids(texts, num_beams=3) == OnnxTranslator(exported.onnx).generate_ids(texts, num_beams=3)
    with pytest.raises(PackageError, match=r"search 'graph' needs search\.onnx, which this package .* does not list"):
        OnnxTranslator(package, search="graph")
    with pytest.raises(PackageError, match=r"search 'fast' is not one of \['auto', 'graph', 'numpy'\]"):
        OnnxTranslator(package, search="fast")
