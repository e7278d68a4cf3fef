"""tasks.common.onnx_export.fold_weight_transposes: a weight read through a Transpose becomes
a transposed initializer of its own (so quantize_dynamic sees it), and the graph computes the same."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from tasks.common.onnx_export import drop_initializer_value_info, fold_weight_transposes


def tied_graph(weight: np.ndarray):
    """logits = hidden @ weight.T, embedded = weight[ids]: a tied embedding and output layer."""
    vocab, width = weight.shape
    nodes = [
        helper.make_node("Transpose", ["weight"], ["weight_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["hidden", "weight_t"], ["logits"]),
        helper.make_node("Gather", ["weight", "ids"], ["embedded"]),
    ]
    graph = helper.make_graph(
        nodes, "tied",
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["rows", width]),
         helper.make_tensor_value_info("ids", TensorProto.INT64, ["rows"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["rows", vocab]),
         helper.make_tensor_value_info("embedded", TensorProto.FLOAT, ["rows", width])],
        [numpy_helper.from_array(weight, "weight")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def outputs(model, feeds: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_a_transposed_weight_becomes_an_initializer_and_the_outputs_stay():
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((7, 3)).astype(np.float32)
    feeds = {"hidden": rng.standard_normal((2, 3)).astype(np.float32), "ids": np.array([6, 0])}
    model = tied_graph(weight)
    before = outputs(model, feeds)

    assert fold_weight_transposes(model) == 1
    assert [node.op_type for node in model.graph.node] == ["MatMul", "Gather"]
    weights = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    np.testing.assert_array_equal(weights["weight_t"], weight.T)
    np.testing.assert_array_equal(weights["weight"], weight)  # the Gather still reads it
    for was, now in zip(before, outputs(model, feeds)):
        np.testing.assert_array_equal(now, was)
    assert fold_weight_transposes(model) == 0, "nothing left to fold"


def test_value_info_of_weights_is_dropped_so_no_tool_can_find_it_stale():
    """torch.onnx writes value_info for initializers (classifier.weight [2, 384]); onnxruntime
    1.31's quantize_dynamic transposes the head's Gemm weight and then fails its shape inference
    on that stale entry ("differ in dimension 0: (384) vs (2)"). A weight's dims are its shape."""
    model = tied_graph(np.zeros((7, 3), dtype=np.float32))
    model.graph.value_info.append(helper.make_tensor_value_info("weight", TensorProto.FLOAT, [7, 3]))
    model.graph.value_info.append(helper.make_tensor_value_info("weight_t", TensorProto.FLOAT, [3, 7]))
    model.graph.value_info.append(helper.make_tensor_value_info("other", TensorProto.FLOAT, ["rows", 7]))

    fold_weight_transposes(model)  # quantize_graph's order: weight_t is an initializer from here on
    drop_initializer_value_info(model)

    assert [info.name for info in model.graph.value_info] == ["other"]
