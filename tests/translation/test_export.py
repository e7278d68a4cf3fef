"""The export stage for task.kind translation: three self-contained ONNX graphs with dynamic
batch/source/past axes, a manifest whose hashes match the files, the gate (ONNX greedy ids ==
model.generate ids) with its timing figures, and failures that leave the old package alone.

The tiny model is built in tests/unit/test_seq2seq_runtime.py (a d_model-32 Marian fitted on
real Multi30k en->fr pairs); the last test exports the model the real translation stages
(tokenize, pretrain, finetune) produce.
"""

from __future__ import annotations

import shutil

import onnx
import pytest

from tasks.common.errors import ExportError, HandoffError
from tasks.common.io import read_json, read_jsonl
from tasks.common.io import sha256_file
from tasks.common.paths import Paths
from serving.translator import OnnxTranslator
from tasks.translation import export
from tasks.translation.model import generate_ids
from tasks.translation.gate import load_target
from tests.translation.conftest import tiny_translation_params
from tests.serving.test_translator import (
    GATE_SENTENCES,
    MAX_NEW_TOKENS,
    export_params,
    exported_workspace,
    test_sentences,
    torch_generate,
)

GRAPHS = ("encoder.onnx", "decoder.onnx", "decoder_with_past.onnx")


@pytest.fixture
def exported(tmp_path_factory) -> Paths:
    return exported_workspace(tmp_path_factory)[0]


@pytest.fixture
def workspace(exported, tmp_path) -> Paths:
    """A private copy of the exported workspace (models/onnx included) for one test."""
    shutil.copytree(exported.root, tmp_path, dirs_exist_ok=True)
    return Paths(tmp_path)


def package_hashes(paths: Paths) -> dict[str, str]:
    return {f.name: sha256_file(f) for f in sorted(paths.onnx.iterdir())}


def shapes(manifest: dict, graph: str, side: str) -> dict[str, list]:
    return {value["name"]: value["shape"] for value in manifest["graphs"][graph][side]}


# ---------------------------------------------------------------- the package


def test_package_is_three_graphs_tokenizer_and_manifest(exported):
    names = {f.name for f in exported.onnx.iterdir()}
    assert {*GRAPHS, "tokenizer.json", "tokenizer_config.json", "manifest.json"} <= names
    assert not [name for name in names if name.endswith(".data") or name.startswith(".")], "no external data"
    assert not list(exported.onnx.parent.glob(".onnx.*")), "temp dirs must not be left beside the package"


def test_every_graph_is_ir_10_as_torch_onnx_writes_it(exported):
    """onnx 1.23's helper stamps IR 14 by default, which onnxruntime-gpu 1.31.1 refused to load
    (reorder.onnx, on an H200, 2026-12-04): the hand-built reorder and search graphs must be IR 10
    like the exported ones, or a GPU deployment cannot load the package."""
    graphs = sorted(exported.onnx.glob("*.onnx"))
    assert {"reorder.onnx", "search.onnx"} <= {graph.name for graph in graphs}
    assert {graph.name: onnx.load(str(graph), load_external_data=False).ir_version for graph in graphs} == {
        graph.name: 10 for graph in graphs}


def test_manifest_hashes_match_the_files_and_cover_all_of_them(exported):
    manifest = read_json(exported.onnx / "manifest.json")
    on_disk = {f.name for f in exported.onnx.iterdir()} - {"manifest.json"}
    assert manifest["files"] == {name: sha256_file(exported.onnx / name) for name in on_disk}


def test_manifest_describes_languages_tokens_and_model(exported):
    manifest = read_json(exported.onnx / "manifest.json")
    assert manifest["task"] == "translation" and manifest["format_version"] == 1 and manifest["opset"] == 17
    assert manifest["languages"] == {"src": "en", "tgt": "fr"} and manifest["language_tag"] == "<2fr>"
    assert manifest["language_tags"] == {"<2de>": 3, "<2fr>": 4} and manifest["language_tag_id"] == 4
    assert manifest["special_tokens"] == {"pad_id": 0, "eos_id": 1, "unk_id": 2, "decoder_start_id": 0}
    assert manifest["num_layers"] == {"encoder": 2, "decoder": 2}
    assert (manifest["num_heads"], manifest["head_dim"], manifest["d_model"]) == (2, 16, 32)
    assert manifest["generation"]["forced_eos_token_id"] == 1 and manifest["generation"]["num_beams"] == 3
    for graph in GRAPHS:  # the opset the file really has, not just the one asked for
        model = onnx.load(str(exported.onnx / graph), load_external_data=False)
        assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 17


def test_graphs_have_dynamic_batch_source_and_past_axes(exported):
    manifest = read_json(exported.onnx / "manifest.json")
    assert shapes(manifest, "encoder.onnx", "inputs") == {"input_ids": ["batch", "source"], "attention_mask": ["batch", "source"]}
    assert shapes(manifest, "encoder.onnx", "outputs") == {"encoder_hidden_states": ["batch", "source", 32]}
    # a Marian model gets the restated decoder step (tasks/translation/decoder_step.py): keys
    # cached transposed, [batch, heads, head_dim, positions]; values [batch, heads, positions, head_dim]
    assert manifest["decoder_graphs"] == "marian_step"
    first = shapes(manifest, "decoder.onnx", "outputs")
    assert first["present.1.self.key"] == ["batch", 2, 16, 1] and first["present.1.cross.value"] == ["batch", 2, "source", 16]
    assert first["present.0.cross.key"] == ["batch", 2, 16, "source"]
    past_in, past_out = shapes(manifest, "decoder_with_past.onnx", "inputs"), shapes(manifest, "decoder_with_past.onnx", "outputs")
    assert past_in["past.0.self.key"] == ["batch", 2, 16, "past"] and past_in["past.1.cross.key"] == ["batch", 2, 16, "source"]
    assert past_out["present.0.self.value"] == ["batch", 2, "past + 1", 16]
    assert past_out["present.0.self.key"] == ["batch", 2, 16, "past + 1"]
    assert set(past_out) == {"logits"} | {f"present.{i}.self.{kv}" for i in range(2) for kv in ("key", "value")}


def test_other_architectures_get_traced_decoder_graphs_that_pass_the_gate(workspace, monkeypatch):
    """The generic path (transformers' decoder traced with its cache, keys untransposed) is what
    a non-Marian init gets: same package contract, same gate, beam ids equal generate's too."""
    monkeypatch.setattr(export, "supports_fast_step", lambda model: False)
    metrics = export.run(export_params(), workspace)
    manifest = read_json(workspace.onnx / "manifest.json")
    assert manifest["decoder_graphs"] == "traced"
    assert metrics["gate"]["identical"] == GATE_SENTENCES
    assert shapes(manifest, "decoder_with_past.onnx", "inputs")["past.0.self.key"] == ["batch", 2, "past", 16]
    translator, texts = OnnxTranslator(workspace.onnx), test_sentences()
    options = {"num_beams": 3, "max_new_tokens": MAX_NEW_TOKENS, "no_repeat_ngram_size": 2}
    assert translator.generate_ids(texts, **options) == torch_generate(workspace, translator, texts, **options)


def test_gate_figures_are_in_the_manifest_and_metrics(exported):
    metrics = read_json(exported.metrics / "export.json")
    gate = metrics["gate"]
    assert gate == read_json(exported.onnx / "manifest.json")["gate"]
    assert gate["sentences"] == gate["identical"] == GATE_SENTENCES
    assert 0 <= gate["max_abs_first_step_logit_diff"] < 1e-4
    assert gate["ort_greedy_seconds"] > 0 and gate["torch_generate_seconds"] > 0
    assert gate["speedup"] == pytest.approx(gate["torch_generate_seconds"] / gate["ort_greedy_seconds"], rel=0.01)
    assert gate["beam"]["num_beams"] == 3 and gate["beam"]["identical"] == GATE_SENTENCES
    assert gate["beam"]["ort_seconds"] > 0 and gate["beam"]["torch_generate_seconds"] > 0
    assert metrics["onnx_bytes"].keys() == set(GRAPHS) and metrics["opset"] == 17


# ---------------------------------------------------------------- failures keep the old package


@pytest.fixture
def reuse_graphs(exported, monkeypatch):
    """export_graphs copies the graphs already exported from this very model (a re-export
    costs seconds, and these tests are about what happens after it)."""

    def copy_graphs(model, package, *args):
        for name in GRAPHS:
            shutil.copyfile(exported.onnx / name, package / name)
        return read_json(exported.onnx / "manifest.json")["decoder_graphs"]

    monkeypatch.setattr(export, "export_graphs", copy_graphs)
    return copy_graphs


def assert_old_package_kept(paths: Paths, before: dict, metrics_before: str) -> None:
    assert package_hashes(paths) == before
    assert (paths.metrics / "export.json").read_text() == metrics_before
    assert not list(paths.onnx.parent.glob(".onnx.*")), "the failed export's temp dir must be removed"


def test_a_runtime_that_drops_a_token_fails_the_gate_and_keeps_the_old_package(workspace, reuse_graphs, monkeypatch):
    before, metrics_before = package_hashes(workspace), (workspace.metrics / "export.json").read_text()
    generate = OnnxTranslator.generate_ids

    def drop_last_token_of_first(self, texts, **kwargs):
        rows = generate(self, texts, **kwargs)
        return [rows[0][:-1], *rows[1:]]

    monkeypatch.setattr(OnnxTranslator, "generate_ids", drop_last_token_of_first)
    with pytest.raises(ExportError, match=rf"differs from model\.generate on 1 of {GATE_SENTENCES} .*first: sentence 1 "):
        export.run(export_params(), workspace)
    assert_old_package_kept(workspace, before, metrics_before)


def test_a_beam_search_that_differs_fails_the_gate_even_when_greedy_agrees(workspace, reuse_graphs, monkeypatch):
    """The gate decodes with the manifest's beams and guards too (what translate() runs by
    default): a beam search that drops the no-repeat guard is refused."""
    before, metrics_before = package_hashes(workspace), (workspace.metrics / "export.json").read_text()
    beam = OnnxTranslator.beam

    def unguarded_beam(self, ids, mask, beams, max_new_tokens, options):
        return beam(self, ids, mask, beams, max_new_tokens, {**options, "no_repeat_ngram_size": 0})

    monkeypatch.setattr(OnnxTranslator, "beam", unguarded_beam)
    with pytest.raises(ExportError, match=r"ONNX beam-3 decode differs from model\.generate on \d+ of"):
        export.run(export_params(), workspace)
    assert_old_package_kept(workspace, before, metrics_before)


def test_perturbed_decoder_weights_fail_the_gate(workspace, reuse_graphs, monkeypatch):
    """The graph on disk (hashed after the damage, so the hash check passes) decodes
    differently: only the greedy-id gate can catch it."""
    before, metrics_before = package_hashes(workspace), (workspace.metrics / "export.json").read_text()
    def damaged(model, package, *args):
        kind = reuse_graphs(model, package, *args)
        path = package / "decoder_with_past.onnx"
        graph = onnx.load(str(path))
        vocab = model.config.vocab_size
        for tensor in graph.graph.initializer:  # negate the vocabulary-sized weights (embeddings, output bias)
            if vocab in tensor.dims and tensor.data_type == onnx.TensorProto.FLOAT:
                tensor.CopyFrom(onnx.numpy_helper.from_array(-onnx.numpy_helper.to_array(tensor), tensor.name))
        onnx.save(graph, str(path))
        return kind

    monkeypatch.setattr(export, "export_graphs", damaged)
    with pytest.raises(ExportError, match=r"ONNX greedy decode differs from model\.generate on \d+ of"):
        export.run(export_params(), workspace)
    assert_old_package_kept(workspace, before, metrics_before)


def test_a_bleu_drop_over_max_int8_drop_fails_in_one_line_and_keeps_the_old_package(workspace, reuse_graphs, monkeypatch):
    before, metrics_before = package_hashes(workspace), (workspace.metrics / "export.json").read_text()
    figures = {"metric": "bleu", "split": "target/test", "texts": GATE_SENTENCES, "fp32": 30.5, "int8": 28.25,
               "bleu_signature": "nrefs:1", "identical": 10, "fp32_seconds": 1.0, "int8_seconds": 0.5}
    monkeypatch.setattr(export, "score_precisions", lambda *args: dict(figures))
    with pytest.raises(ExportError) as failure:
        export.run(export_params(max_int8_drop=2.0), workspace)
    message = str(failure.value)
    assert "\n" not in message
    assert f"BLEU on {GATE_SENTENCES} target test items is 28.25 with INT8 vs 30.50 with fp32, a drop of 2.25 points " \
           f"over export.max_int8_drop 2 (identical translations 10/{GATE_SENTENCES})" in message
    assert_old_package_kept(workspace, before, metrics_before)


def test_int8_false_writes_fp32_graphs_only(workspace, reuse_graphs):
    metrics = export.run(export_params(int8=False), workspace)
    assert metrics["int8"] is None and metrics["serve_precision"] == "fp32" and metrics["fused_nodes"] == {}
    assert not list(workspace.onnx.glob("*.int8.onnx"))
    assert OnnxTranslator(workspace.onnx).precision == "fp32"


def test_serve_int8_makes_the_runtime_load_the_int8_graphs(workspace, reuse_graphs):
    export.run(export_params(serve_int8=True), workspace)
    assert read_json(workspace.onnx / "manifest.json")["serve_precision"] == "int8"
    translator = OnnxTranslator(workspace.onnx)
    assert translator.precision == "int8" and translator.graph_files[0] == "encoder.int8.onnx"


def test_missing_inputs_are_named_in_one_line(workspace):
    test_split = workspace.split_file("target", "test")
    test_split.unlink()
    with pytest.raises(HandoffError, match=rf"^{test_split} not found: run the ingest stage first$"):
        export.run(export_params(), workspace)
    shutil.rmtree(workspace.target_model)  # checked first: the model is the stage's main input
    with pytest.raises(HandoffError, match=rf"^{workspace.target_model} has no model \(config\.json missing\)"):
        export.run(export_params(), workspace)


# ---------------------------------------------------------------- the real stages' model


def test_stage_exports_the_finetuned_pipeline_model(translation_finetuned, tmp_path):
    """The model that tokenize/pretrain/finetune made passes the gate, and the package
    translates the target test sentences as evaluate does."""
    shutil.copytree(translation_finetuned, tmp_path, dirs_exist_ok=True)
    paths, params = Paths(tmp_path), tiny_translation_params()
    metrics = export.run(params, paths)
    assert metrics["gate"]["identical"] == metrics["gate"]["sentences"] == params.export.parity_samples
    translator = OnnxTranslator(paths.onnx)
    assert translator.manifest["languages"] == {"src": "en", "tgt": "fr"}
    texts = [row["src"] for row in read_jsonl(paths.split_file("target", "test"))[:12]]
    g = params.evaluate.generation
    ours = translator.generate_ids(texts, num_beams=g.num_beams, max_new_tokens=g.max_new_tokens)
    model, tokenizer = load_target(paths.target_model)
    theirs = generate_ids(model, tokenizer, texts, "fr", num_beams=g.num_beams, max_new_tokens=g.max_new_tokens,
                          batch_size=32, device="cpu", max_length=params.tokenize.max_length)
    # evaluate's ids stop before </s> and drop padding; the runtime's keep the </s>
    assert [[i for i in row if i not in (0, 1)] for row in ours] == theirs, "beam search must match evaluate's"
