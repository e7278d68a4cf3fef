"""ONNX export pieces every kind uses: the dynamo exporter call, the checks every graph file
gets, the package's lineage (file hashes, library versions, the model it came from), fused
attention for encoder graphs (ONNX Runtime's transformer optimizer) and dynamic INT8 graphs."""

from __future__ import annotations

import importlib
import logging
import shutil
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
import transformers
from onnx import helper, numpy_helper
from transformers import AutoConfig

from serving.package import MANIFEST
from tasks.common.errors import ExportError
from tasks.common.io import sha256_file
from tasks.common.paths import Paths


def dynamo_export(module, out: Path, opset: int, names: list[str], outputs: list[str], shapes,
                  args: tuple = (), kwargs: dict | None = None) -> None:
    """torch.onnx.export with the dynamo exporter (torch.export), one self-contained file (fine
    below protobuf's 2 GB limit).

    Why dynamo and not the legacy TorchScript exporter (dynamo=False, still present in 2.13):
    both gave the same logits on BERT/MiniLM, but the legacy one is deprecated and traces
    Python branches in transformers' masking code as constants (its TracerWarnings say the
    trace "might not generalize to other inputs"), whereas torch.export keeps batch and
    sequence symbolic and fails loudly if the model would specialise either. Dynamo builds at
    opset 18 and converts down when asked for 17 (onnx's version converter); each kind's
    parity gate is what vouches for the result either way.
    """
    with warnings.catch_warnings():
        # Cosmetic: says each axis name "will not be used" because it equals itself.
        warnings.filterwarnings("ignore", message=r".*The axis name: .* will not be used")
        torch.onnx.export(
            module,
            args=args,
            kwargs=kwargs,
            f=str(out),
            dynamo=True,
            opset_version=opset,
            input_names=names,
            output_names=outputs,
            dynamic_shapes=shapes,
            external_data=False,
            optimize=True,
            verbose=False,
        )


# The IR version of the graphs written here by hand (translation's reorder.onnx and search.onnx):
# torch.onnx's own, so a package's graphs load wherever its exported ones do. onnx 1.23's helper
# stamps IR 14 by default, which onnxruntime 1.31 refuses ("Unsupported model IR version: 14, max
# supported IR version: 13", seen on onnxruntime-gpu 1.31.1, 2026-12-04) and so do older builds such
# as requirements-gpu.txt's onnxruntime-gpu 1.26.0; IR 10 loads in onnxruntime 1.16 and later.
HAND_BUILT_IR_VERSION = 10


def hand_built_model(graph: onnx.GraphProto, opset: int) -> onnx.ModelProto:
    """A graph made with onnx.helper as a model every supported onnxruntime loads, checked."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="transfer-pipeline",
                              ir_version=HAND_BUILT_IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model


def checked_graph(path: Path, opset: int, extra: list[str] | None = None) -> onnx.ModelProto:
    """The ONNX file, after checking what deployers are promised: a valid graph, one
    self-contained file (no external data; `extra`: stray files beside it), the requested opset."""
    onnx.checker.check_model(str(path))
    model = onnx.load(str(path), load_external_data=False)
    if extra or any(onnx.external_data_helper.uses_external_data(t) for t in model.graph.initializer):
        shown = "" if extra is None else f" {extra}"
        raise ExportError(f"{path}: weights were written as external data{shown}, expected one self-contained file")
    # Dynamo builds at opset 18 and keeps 18 if converting down to 17 fails (only a warning).
    actual = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    if actual != opset:
        raise ExportError(f"{path}: exported at opset {actual}, not the requested export.opset {opset} (try 18)")
    return model


def describe_value(value) -> dict:
    """A graph input or output as the file declares it: name, dtype, shape, symbolic axes."""
    tensor = value.type.tensor_type
    shape = [dim.dim_param or dim.dim_value for dim in tensor.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    dynamic = {str(i): dim for i, dim in enumerate(shape) if isinstance(dim, str)}
    return {"name": value.name, "dtype": dtype, "shape": shape, "dynamic_axes": dynamic}


def file_hashes(package: Path) -> dict[str, str]:
    return {f.name: sha256_file(f) for f in sorted(package.iterdir()) if f.is_file() and f.name != MANIFEST}


def library_versions() -> dict:
    """The versions a package was exported with (a deployer's first question when numbers differ)."""
    return {
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def source_info(model_dir: Path) -> dict:
    """Lineage: which model this package was built from."""
    config = AutoConfig.from_pretrained(str(model_dir))
    weights = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    return {
        "path": str(model_dir),
        "model_type": config.model_type,
        "architectures": list(config.architectures or []),
        "config_sha256": sha256_file(model_dir / "config.json"),
        "weights_sha256": {f.name: sha256_file(f) for f in weights},
    }


def remove_stale(paths: Paths) -> None:
    """A failed export leaves no package behind, as under `dvc repro` (which deletes a stage's
    outputs before running it): an old package must not pass for one of the current model."""
    shutil.rmtree(paths.onnx, ignore_errors=True)
    (paths.metrics / "export.json").unlink(missing_ok=True)


# ---------------------------------------------------------------- fused attention
# ONNX Runtime's transformer optimizer (onnxruntime.transformers.optimizer) rewrites a BERT-like
# graph into its contrib ops (Attention, BiasGelu, ...; not SkipLayerNormalization, slower on CPU
# than the two nodes it replaces: serving.package.SLOW_ON_CPU): one kernel per attention block
# instead of ~20 nodes. It finds attention by matching node patterns, and the
# graphs transformers 5 exports through dynamo do not match them: with SDPA and with eager
# attention (whose mask transformers 5 builds by indexing: And, GatherND; the optimizer says
# "failed to match mask path") it fuses 0 Attention nodes. So the export runs the model's own
# eager attention with the padding mask transformers 4 built for SDPA (`classic_mask`, a
# masked_fill: its Where cannot be mistaken for eager's scaling Mul, as a (1 - mask) * min Mul
# is), and split_unsqueezes undoes the one fold of dynamo's optimizer that hides that pattern.
# The numbers are the same (the parity gate checks the graph that ships); only the ops differ.
# (The legacy TorchScript exporter with eager attention fuses too, EmbedLayerNormalization
# included, but tasks.common.onnx_export.dynamo_export says why the export stays on dynamo.)

CLASSIC_ATTENTION = "onnx_classic"
# Encoders whose graphs the optimizer's "bert" rewriter handles (BERT-style attention blocks).
OPTIMIZER_MODEL_TYPES = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "camembert": "bert", "electra": "bert"}
CONTRIB_DOMAIN = "com.microsoft"


def classic_mask(batch_size: int, q_length: int, kv_length: int, attention_mask=None, dtype=torch.float32, **kwargs):
    """transformers 4's padding mask for SDPA (_prepare_4d_attention_mask_for_sdpa): 0 where a
    position is attended, dtype's lowest value where it is padding, [batch, 1, q, kv]. Its ops
    (Unsqueeze, Expand, Cast, Sub, Cast, Where) are a path the optimizer's attention fusion matches."""
    if attention_mask is None:
        return None
    expanded = attention_mask[:, None, None, :].expand(batch_size, 1, q_length, kv_length).to(dtype)
    inverted = 1.0 - expanded
    return inverted.masked_fill(inverted.to(torch.bool), torch.finfo(dtype).min)


@contextmanager
def fusable_attention(model) -> Iterator[bool]:
    """The model runs its eager attention with `classic_mask` inside the block (yields True),
    its own attention again after it. Yields False, changing nothing, for an architecture
    whose modeling module has no eager_attention_forward or that takes no custom attention."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    module = importlib.import_module(type(model.base_model).__module__)
    eager = getattr(module, "eager_attention_forward", None)
    previous = model.config._attn_implementation
    switched = False
    if eager is not None:
        AttentionInterface.register(CLASSIC_ATTENTION, eager)
        AttentionMaskInterface.register(CLASSIC_ATTENTION, classic_mask)
        try:
            model.set_attn_implementation(CLASSIC_ATTENTION)
            switched = True
        except (ValueError, NotImplementedError):  # a model that takes no custom attention
            pass
    try:
        yield switched
    finally:
        if switched:
            model.set_attn_implementation(previous)


def split_unsqueezes(model: onnx.ModelProto) -> int:
    """Rewrite each Unsqueeze over several constant axes as a chain of one-axis Unsqueezes (the
    same tensor): the optimizer's mask pattern expects Unsqueeze, Unsqueeze where dynamo's
    optimizer folded them into one. Returns how many were split."""
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    constants.update(
        {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in model.graph.node if n.op_type == "Constant" and n.attribute}
    )
    nodes, split = [], 0
    for node in model.graph.node:
        axes = constants.get(node.input[1]) if node.op_type == "Unsqueeze" and len(node.input) == 2 else None
        if axes is None or axes.size < 2 or (axes < 0).any():
            nodes.append(node)
            continue
        previous = node.input[0]
        for i, axis in enumerate(sorted(int(a) for a in axes.ravel())):
            name = f"{node.name or node.output[0]}_axis{i}"
            model.graph.initializer.append(numpy_helper.from_array(np.array([axis], dtype=np.int64), f"{name}_axes"))
            out = node.output[0] if i == axes.size - 1 else f"{name}_out"
            nodes.append(helper.make_node("Unsqueeze", [previous, f"{name}_axes"], [out], name=name))
            previous = out
        split += 1
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return split


def contrib_counts(model: onnx.ModelProto) -> dict[str, int]:
    """Nodes of ONNX Runtime's contrib ops (com.microsoft) by op type: the fused ones."""
    counts = Counter(node.op_type for node in model.graph.node if node.domain == CONTRIB_DOMAIN)
    return dict(sorted(counts.items()))


# onnxruntime's logger severities (0 verbose .. 4 fatal). It has a setter and no getter, so
# fuse_graph cannot restore what was set before: it goes back to onnxruntime's own default.
ORT_LOG_ERROR = 3
ORT_LOG_DEFAULT = 2  # warning


def fuse_graph(path: Path, config) -> dict[str, int]:
    """Rewrite the encoder graph at `path` in place with ONNX Runtime's transformer optimizer
    (its basic graph optimizations, then its BERT fusions) and return the fused nodes by op
    type ({} for a model type it has no rewriter for; the graph is then left as exported)."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = OPTIMIZER_MODEL_TYPES.get(config.model_type)
    if model_type is None:
        return {}
    model = onnx.load(str(path))
    split_unsqueezes(model)
    # Quiet: its session's "Removing initializer ... not used" lines are cosmetic.
    onnxruntime.set_default_logger_severity(ORT_LOG_ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="fuse-") as tmp:
            staged = Path(tmp) / "split.onnx"
            onnx.save(model, str(staged))
            options = FusionOptions(model_type)
            # Residual Add + LayerNormalization stay two nodes: see serving.package.SLOW_ON_CPU
            options.enable_skip_layer_norm = options.enable_bias_skip_layer_norm = False
            optimized = optimize_model(
                str(staged), model_type=model_type, num_heads=config.num_attention_heads, hidden_size=config.hidden_size,
                optimization_options=options,
            )
    finally:
        onnxruntime.set_default_logger_severity(ORT_LOG_DEFAULT)
    optimized.save_model_to_file(str(path))
    return contrib_counts(optimized.model)


# ---------------------------------------------------------------- dynamic INT8


class _DropMessage(logging.Filter):
    def __init__(self, text: str):
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def fold_weight_transposes(model: onnx.ModelProto) -> int:
    """Replace each Transpose of an initializer by the transposed initializer (in place; the
    original stays for its other readers). quantize_dynamic quantizes a MatMul only when its
    weight is an initializer: a tied output embedding, read by the output layer through a
    Transpose (and by the embedding's Gather as it is), would otherwise stay float32. Returns
    how many were folded."""
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    kept, folded = [], 0
    for node in model.graph.node:
        if node.op_type != "Transpose" or node.input[0] not in initializers:
            kept.append(node)
            continue
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        weight = numpy_helper.to_array(initializers[node.input[0]])
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight.transpose(perm)), node.output[0]))
        folded += 1
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return folded


def drop_initializer_value_info(model: onnx.ModelProto) -> None:
    """Remove the value_info entries of initializers: their dims are their shape. torch.onnx
    writes such entries (classifier.weight [2, 384]), and a tool that rewrites a weight in place
    leaves them stale: onnxruntime 1.31's quantize_dynamic transposes the head's Gemm weight, then
    stops in its own shape inference ("Inferred shape and existing shape differ in dimension 0:
    (384) vs (2)"; onnxruntime 1.32 does not)."""
    weights = {tensor.name for tensor in model.graph.initializer}
    for info in [info for info in model.graph.value_info if info.name in weights]:
        model.graph.value_info.remove(info)


def quantize_graph(source: Path, out: Path, op_types: list[str] | None = None, per_channel: bool = False,
                   reduce_range: bool = False, exclude: list[str] | None = None) -> dict:
    """Dynamic INT8 (onnxruntime.quantization.quantize_dynamic): QInt8 weights stored in the
    file, activations quantized per batch at run time; what was asked is returned for the manifest.
    Weights behind a Transpose are folded first (fold_weight_transposes), so they are quantized too."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(source)
    folded = fold_weight_transposes(model)
    drop_initializer_value_info(model)
    # Its advice to run onnxruntime's shape-inference pre-processing first is for static
    # (calibrated) quantization of vision models; it changes nothing for these dynamic graphs.
    advice = _DropMessage("consider to run pre-processing before quantization")
    logging.getLogger().addFilter(advice)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folded_file = Path(tmp) / source.name
            onnx.save(model, folded_file)
            quantize_dynamic(
                str(folded_file), str(out), op_types_to_quantize=op_types, per_channel=per_channel,
                reduce_range=reduce_range, weight_type=QuantType.QInt8, nodes_to_exclude=exclude or None,
            )
    finally:
        logging.getLogger().removeFilter(advice)
    return {
        "weight_transposes_folded": folded,
        "method": "onnxruntime.quantization.quantize_dynamic",
        "weight_type": "QInt8",
        "op_types": op_types or "all supported",
        "per_channel": per_channel,
        "reduce_range": reduce_range,
        "excluded_nodes": len(exclude or []),
    }


def int8_gate(scores: dict, p, metric: str, agreement: str, quantization: dict | None) -> dict:
    """The INT8 gate's record: `scores` (fp32 and int8 in points on `texts` target test items)
    with the drop and the limit. Over export.max_int8_drop: an ExportError, one line with the
    figures (`agreement`: how often the two precisions gave the same output, in words)."""
    drop = round(scores["fp32"] - scores["int8"], 4)
    if drop > p.max_int8_drop:
        raise ExportError(
            f"INT8 gate failed: {metric} on {scores['texts']} target test items is {scores['int8']:.2f} with INT8 vs "
            f"{scores['fp32']:.2f} with fp32, a drop of {drop:.2f} points over export.max_int8_drop {p.max_int8_drop:g} "
            f"({agreement}); raise export.max_int8_drop or set export.int8: false to ship fp32 only"
        )
    return {**scores, "drop": drop, "max_drop": p.max_int8_drop, "unit": "points", "quantization": quantization}
