"""The export stage's fused and INT8 graphs on the tiny random BERT classifier (2 layers,
hidden 32; WordPiece vocabulary from 200 real amazon snippets): model.onnx carries ONNX
Runtime's fused attention and still passes parity, model.int8.onnx is listed with its hash,
scored against fp32 on the target test split and gated by export.max_int8_drop."""

from __future__ import annotations

import collections

import onnx
import pytest

from serving.classifier import OnnxClassifier
from serving.package import PackageError
from tasks.classification import export
from tasks.common.errors import ExportError, ParamsError
from tasks.common.io import read_json, sha256_file
from tests.serving.test_classifier import TEST_ROWS, TINY_MAX_INT8_DROP, export_params, val_texts

# exported, exported_copy: tests/classification/conftest.py (the tiny workspace, exported once per session)
LAYERS = 2


def contrib_ops(path) -> dict[str, int]:
    graph = onnx.load(str(path))
    return dict(collections.Counter(n.op_type for n in graph.graph.node if n.domain == "com.microsoft"))


# ---------------------------------------------------------------- fused fp32


def test_model_onnx_has_fused_attention_and_the_counts_are_recorded(exported):
    paths, metrics = exported
    manifest = read_json(paths.onnx / "manifest.json")
    fused = manifest["fused_nodes"]
    # one Attention and one BiasGelu per layer; the residual Add + LayerNormalization pairs stay
    # unfused (SkipLayerNormalization is slower on CPU: serving.package.SLOW_ON_CPU)
    assert fused == {"Attention": LAYERS, "BiasGelu": LAYERS}
    assert contrib_ops(paths.onnx / "model.onnx") == fused  # the graph that ships
    assert metrics["fused_nodes"] == fused == read_json(paths.metrics / "export.json")["fused_nodes"]
    assert manifest["parity"]["max_abs_logit_diff"] < 1e-4  # checked on the fused graph


def test_the_model_keeps_its_own_attention_after_export(exported):
    from tasks.classification.export import load_target
    from tasks.common.onnx_export import fusable_attention

    model, _ = load_target(exported[0].target_model)
    before = model.config._attn_implementation
    with fusable_attention(model) as fusable:
        assert fusable and model.config._attn_implementation == "onnx_classic"
    assert model.config._attn_implementation == before


# ---------------------------------------------------------------- INT8


def test_int8_graph_is_listed_with_its_hash_and_scored_on_the_test_split(exported):
    paths, metrics = exported
    manifest = read_json(paths.onnx / "manifest.json")
    assert manifest["files"]["model.int8.onnx"] == sha256_file(paths.onnx / "model.int8.onnx")
    assert manifest["serve_precision"] == "fp32"  # export.serve_int8 defaults to false
    int8 = manifest["int8"]
    assert int8 == metrics["int8"] == read_json(paths.metrics / "export.json")["int8"]
    assert int8["metric"] == "f1_macro" and int8["split"] == "target/test" and int8["texts"] == TEST_ROWS
    assert int8["drop"] == pytest.approx(int8["fp32"] - int8["int8"], abs=1e-3)
    assert int8["drop"] <= int8["max_drop"] == TINY_MAX_INT8_DROP
    assert int8["label_agreement"] >= 0.9
    assert int8["quantization"]["weight_type"] == "QInt8" and int8["quantization"]["per_channel"] is True
    assert 0 < int8["bytes"] < (paths.onnx / "model.onnx").stat().st_size
    assert contrib_ops(paths.onnx / "model.int8.onnx").keys() & {"QAttention", "DynamicQuantizeMatMul", "MatMulInteger"}


def test_int8_classifier_agrees_with_fp32_on_most_texts(exported, amazon_file):
    package, texts = exported[0].onnx, val_texts(amazon_file)
    fp32, int8 = OnnxClassifier(package), OnnxClassifier(package, precision="int8")
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    assert int8.graph_file == "model.int8.onnx"
    same = sum(a == b for a, b in zip(fp32.predict(texts), int8.predict(texts)))
    assert same >= 0.9 * len(texts)


def test_a_drop_over_max_int8_drop_fails_in_one_line_and_leaves_no_package(exported_copy, monkeypatch):
    figures = {"metric": "f1_macro", "split": "target/test", "texts": TEST_ROWS, "fp32": 81.25, "int8": 74.5,
               "label_agreement": 0.9, "fp32_seconds": 0.1, "int8_seconds": 0.05}
    monkeypatch.setattr(export, "score_precisions", lambda *args: dict(figures))
    assert exported_copy.onnx.exists()  # a package from an earlier export ...
    with pytest.raises(ExportError) as failure:
        export.run(export_params(max_int8_drop=5.0), exported_copy)
    message = str(failure.value)
    assert "\n" not in message
    assert f"macro-F1 on {TEST_ROWS} target test items is 74.50 with INT8 vs 81.25 with fp32" in message
    assert "a drop of 6.75 points over export.max_int8_drop 5 (label agreement 90.0%)" in message
    assert not exported_copy.onnx.exists()  # ... must not pass for this one; nothing half-written either
    assert not (exported_copy.metrics / "export.json").exists()
    assert not list(exported_copy.onnx.parent.glob(".onnx.*"))


def test_a_zero_tolerance_gate_on_the_real_scores_fails_or_passes_by_the_measured_drop(exported_copy, exported):
    """max_int8_drop 0 against the real INT8 graph: the stage's verdict is the measured drop's."""
    measured = exported[1]["int8"]["drop"]
    if measured > 0:
        with pytest.raises(ExportError, match=r"over export\.max_int8_drop 0 "):
            export.run(export_params(max_int8_drop=0.0), exported_copy)
    else:
        assert export.run(export_params(max_int8_drop=0.0), exported_copy)["int8"]["drop"] == measured


def test_int8_false_writes_no_int8_graph_and_int8_is_then_refused(exported_copy):
    metrics = export.run(export_params(int8=False), exported_copy)
    assert metrics["int8"] is None and metrics["serve_precision"] == "fp32"
    manifest = read_json(exported_copy.onnx / "manifest.json")
    assert "model.int8.onnx" not in manifest["files"] and not (exported_copy.onnx / "model.int8.onnx").exists()
    assert "int8" not in manifest
    assert OnnxClassifier(exported_copy.onnx).precision == "fp32"
    with pytest.raises(PackageError, match=r"no INT8 graph \(model\.int8\.onnx not in files\)"):
        OnnxClassifier(exported_copy.onnx, precision="int8")


def test_serve_int8_needs_int8():
    with pytest.raises(ParamsError, match="export.serve_int8: true needs export.int8: true"):
        export_params(int8=False, serve_int8=True)
