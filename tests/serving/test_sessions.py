"""The sessions serving/ builds: ONNX Runtime's fusions that are slower on CPU stay out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from serving.package import inference_session, precision_warning, provider_names

HIDDEN = 16


def residual_layer_norm(path: Path) -> Path:
    """x + skip, then LayerNormalization: the pattern ORT fuses into SkipLayerNormalization."""
    gamma = numpy_helper.from_array(np.ones(HIDDEN, np.float32), "gamma")
    beta = numpy_helper.from_array(np.zeros(HIDDEN, np.float32), "beta")
    nodes = [helper.make_node("Add", ["x", "skip"], ["sum"]),
             helper.make_node("LayerNormalization", ["sum", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-12)]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", "tokens", HIDDEN]) for name in ("x", "skip")]
    graph = helper.make_graph(nodes, "residual", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [gamma, beta])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), path)
    return path


def optimized_ops(tmp_path: Path, make_session) -> set[str]:
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    session = make_session(residual_layer_norm(tmp_path / "residual.onnx"), options)
    feeds = {name: np.random.default_rng(0).standard_normal((2, 3, HIDDEN)).astype(np.float32) for name in ("x", "skip")}
    expected = feeds["x"] + feeds["skip"]
    expected = (expected - expected.mean(-1, keepdims=True)) / np.sqrt(expected.var(-1, keepdims=True) + 1e-12)
    np.testing.assert_allclose(session.run(None, feeds)[0], expected, atol=1e-5)
    return {node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}


def test_onnxruntime_alone_fuses_the_residual_layer_norm(tmp_path):
    # what the serving sessions undo: without them, ORT's CPU session fuses the pair
    ops = optimized_ops(tmp_path, lambda path, options: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]))
    assert "SkipLayerNormalization" in ops


def test_a_cpu_session_keeps_add_and_layer_norm_apart(tmp_path):
    ops = optimized_ops(tmp_path, lambda path, options: inference_session(path, ["CPUExecutionProvider"], options))
    assert "SkipLayerNormalization" not in ops
    assert {"Add", "LayerNormalization"} <= ops


def test_provider_names_accepts_names_and_pairs():
    assert provider_names([("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_int8_on_cuda_is_warned_about_and_nothing_else_is():
    warning = precision_warning(["CUDAExecutionProvider", "CPUExecutionProvider"], "int8")
    assert warning and "--precision fp32" in warning
    assert precision_warning(["CUDAExecutionProvider", "CPUExecutionProvider"], "fp32") is None
    assert precision_warning(["CPUExecutionProvider"], "int8") is None
