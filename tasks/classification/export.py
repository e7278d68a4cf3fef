"""Export models/target to a self-contained ONNX package (models/onnx) that deployers run with
onnxruntime + tokenizers + numpy (serving.classifier.OnnxClassifier), and prove it
gives PyTorch's logits on validation texts before anything is written.

Package: model.onnx (one file, dynamic batch and sequence axes; ONNX Runtime's fused
attention and layer-norm ops, tasks.common.onnx_export.fuse_graph), model.int8.onnx (its
dynamic-INT8 twin, export.int8), the tokenizer files that save_pretrained writes
(tokenizer.json is what the runtime reads), manifest.json (opset, inputs/outputs, labels,
max_length, sha256 of every file, parity figures, fused nodes, the INT8 gate, serve_precision,
versions, source, and a digest of the manifest itself, which the loader checks).

The INT8 gate: both graphs classify the whole target test split through OnnxClassifier; the
stage fails when INT8's macro-F1 is more than export.max_int8_drop points below fp32's.
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from collections.abc import Sequence

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedModel

from serving.classifier import INT8_MODEL_FILE, MODEL_FILE, OUTPUT, TASK, OnnxClassifier
from serving.package import FORMAT_VERSION, MANIFEST, SERVE_PRECISION, TOKENIZER_FILE, sealed
from tasks.classification.metrics import classification_metrics
from tasks.classification.model import load_classifier, model_labels
from tasks.common.errors import ExportError, HandoffError
from tasks.common.io import atomic_dir, write_json_atomic
from tasks.common.onnx_export import (
    checked_graph,
    describe_value,
    dynamo_export,
    file_hashes,
    fusable_attention,
    fuse_graph,
    int8_gate,
    library_versions,
    quantize_graph,
    remove_stale,
    source_info,
)
from tasks.common.paths import Paths
from tasks.common.prepared import prepared_split
from tasks.params import ExportParams, Params

AXES = {0: "batch", 1: "sequence"}
# Parity batches cycle through these sizes over the texts in file order, so every batch but
# the first mixes lengths (padding is exercised) and the graph sees several batch sizes.
PARITY_BATCH_SIZES = (1, 7, 32)
# Two texts of different lengths to trace with: batch 2 and a padded sequence longer than 2,
# so no axis is 0/1-specialised and batch and sequence never look like the same symbol.
TRACE_TEXTS = ["a short example", "a somewhat longer example text, traced so that the export sees padding"]
# Dynamic INT8 as chosen on the demo's fine-tuned MiniLM by validation label agreement and
# macro-F1 (297 texts): MatMul and the fused Attention only (embeddings stay fp32: quantizing
# their Gather saves 36 MB, no time, and scored lower), one scale per output channel
# (per_channel: 99.0% agreement against 96.3% with one scale per tensor) and 7-bit weights
# (reduce_range: as accurate here, and no int16 saturation of u8 x s8 products on CPUs
# without VNNI, where a package may be served).
QUANTIZATION = {"op_types": ["MatMul", "Attention"], "per_channel": True, "reduce_range": True}


# ---------------------------------------------------------------- inputs from earlier stages


def check_target(model_dir: Path, labels: Sequence[str]) -> None:
    if not (model_dir / "config.json").is_file():
        raise HandoffError(f"{model_dir} not found: run the finetune stage first")
    found = model_labels(model_dir)
    if found != list(labels):
        raise HandoffError(f"{model_dir}: model labels {found} differ from task.labels {list(labels)}")


def parity_texts(paths: Paths, count: int) -> list[str]:
    texts = [row["text"] for row in prepared_split(paths, "target", "val")[:count]]
    if not texts:
        raise HandoffError(f"{paths.split_file('target', 'val')} has no rows: the parity check needs validation texts")
    return texts


def load_target(model_dir: Path):
    # float32 on CPU: the reference the ONNX graph must match, whatever the training device.
    # load_classifier: the class config.json's classifier_pooling names (the graph holds the pooling).
    model = load_classifier(model_dir, model_labels(model_dir), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token_id is None:
        raise HandoffError(f"{model_dir}: tokenizer has no pad token, so batches cannot be padded")
    return model.eval().to("cpu"), tokenizer


def input_names(model: PreTrainedModel, tokenizer) -> list[str]:
    """input_ids and attention_mask always; token_type_ids only when the tokenizer produces
    them and the model takes them (BERT yes, RoBERTa/DistilBERT no)."""
    names = ["input_ids", "attention_mask"]
    takes = inspect.signature(model.forward).parameters
    if "token_type_ids" in tokenizer.model_input_names and "token_type_ids" in takes:
        names.append("token_type_ids")
    return names


def max_length(model: PreTrainedModel, tokenizer) -> int:
    # model_max_length is a huge sentinel when unset; max_position_embeddings is the hard limit.
    limits = [tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", None)]
    return int(min(limit for limit in limits if limit))


def encode(tokenizer, texts: Sequence[str], names: Sequence[str], length: int) -> dict[str, np.ndarray]:
    """The training side's tokenization: truncate to `length`, pad to the batch's longest."""
    batch = tokenizer(
        list(texts),
        padding=True,
        truncation=True,
        max_length=length,
        return_attention_mask=True,
        return_token_type_ids="token_type_ids" in names,
        return_tensors="np",
    )
    return {name: batch[name].astype(np.int64) for name in names}


# ---------------------------------------------------------------- graph


def export_graph(model: PreTrainedModel, sample: dict[str, np.ndarray], out: Path, opset: int) -> None:
    """The classifier graph, dynamic batch and sequence (tasks.common.onnx_export says why dynamo),
    traced with the attention ONNX Runtime's optimizer can fuse (fusable_attention)."""
    kwargs = {name: torch.from_numpy(array) for name, array in sample.items()}
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with fusable_attention(model):
        dynamo_export(model, out, opset, list(kwargs), [OUTPUT], {name: {0: batch, 1: sequence} for name in kwargs},
                      kwargs=kwargs)


def build_graphs(model: PreTrainedModel, sample: dict[str, np.ndarray], package: Path, p: ExportParams) -> dict:
    """model.onnx (exported, then fused in place) and, with export.int8, model.int8.onnx.
    Returns the fused nodes by op type and the quantization settings (None without INT8)."""
    export_graph(model, sample, package / MODEL_FILE, p.opset)
    fused = fuse_graph(package / MODEL_FILE, model.config)
    quantization = None
    if p.int8:
        quantization = quantize_graph(package / MODEL_FILE, package / INT8_MODEL_FILE, **QUANTIZATION)
    return {"fused_nodes": fused, "quantization": quantization}


def describe_graph(path: Path, package: Path, opset: int) -> tuple[list[dict], list[dict]]:
    """Inputs and outputs as the ONNX file declares them; fails if the export is not what
    deployers are promised: one self-contained file, the requested opset, symbolic batch and
    sequence axes."""
    extra = sorted(p.name for p in package.iterdir() if p.name not in (MODEL_FILE, INT8_MODEL_FILE))
    model = checked_graph(path, opset, extra)
    inputs = [describe_value(value) for value in model.graph.input]
    outputs = [describe_value(value) for value in model.graph.output]
    for value in inputs:
        if value["shape"][:2] != [AXES[0], AXES[1]]:
            raise ExportError(f"{path}: input {value['name']} has shape {value['shape']}, expected [batch, sequence]")
    for value in outputs:
        if value["shape"][:1] != [AXES[0]]:
            raise ExportError(f"{path}: output {value['name']} has shape {value['shape']}, expected [batch, ...]")
    return inputs, outputs


# ---------------------------------------------------------------- parity


def mixed_batches(texts: Sequence[str]) -> list[list[str]]:
    batches, start, turn = [], 0, 0
    while start < len(texts):
        size = PARITY_BATCH_SIZES[turn % len(PARITY_BATCH_SIZES)]
        batches.append(list(texts[start : start + size]))
        start, turn = start + size, turn + 1
    return batches


def compare(reference: np.ndarray, candidate: np.ndarray) -> dict:
    return {
        "max_abs_logit_diff": float(np.abs(reference - candidate).max()),
        "label_agreement": float((reference.argmax(-1) == candidate.argmax(-1)).mean()),
    }


@torch.no_grad()
def check_parity(model: PreTrainedModel, tokenizer, package: Path, texts: Sequence[str], p: ExportParams) -> dict:
    """Two comparisons with PyTorch (HF tokenizer, float32 CPU):
    graph   - the ONNX graph fed the very same token ids, in batches of 1, 7 and 32;
    runtime - OnnxClassifier end to end, with the tokenizer.json deployers load.
    Fails (ExportError) over the tolerance or on any label disagreement."""
    classifier = OnnxClassifier(package, precision="fp32")  # also proves the manifest hashes verify
    names, length = classifier.input_names, classifier.max_length
    feeds = [encode(tokenizer, batch, names, length) for batch in mixed_batches(texts)]
    reference = np.concatenate([model(**{k: torch.from_numpy(v) for k, v in f.items()}).logits.numpy() for f in feeds])
    graph = compare(reference, np.concatenate([classifier.run(f) for f in feeds]))
    runtime = compare(reference, classifier.logits(texts))
    parity = {
        "samples": len(texts),
        "max_abs_logit_diff": max(graph["max_abs_logit_diff"], runtime["max_abs_logit_diff"]),
        "label_agreement": min(graph["label_agreement"], runtime["label_agreement"]),
        "tolerance": p.parity_tolerance,
        "graph": graph,
        "runtime": runtime,
        "providers": classifier.session.get_providers(),
    }
    if parity["max_abs_logit_diff"] > p.parity_tolerance or parity["label_agreement"] < 1.0:
        raise ExportError(
            f"ONNX parity with PyTorch failed on {len(texts)} validation texts: max abs logit diff "
            f"{parity['max_abs_logit_diff']:.3g} (graph {graph['max_abs_logit_diff']:.3g}, runtime "
            f"{runtime['max_abs_logit_diff']:.3g}) vs tolerance {p.parity_tolerance:g}; label agreement "
            f"{parity['label_agreement']:.4f} (graph {graph['label_agreement']:.4f}, "
            f"runtime {runtime['label_agreement']:.4f})"
        )
    return parity


# ---------------------------------------------------------------- package


# ---------------------------------------------------------------- INT8 gate


def test_split(paths: Paths, labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """The frozen target test split (what evaluate scores): texts and label ids."""
    file = paths.split_file("target", "test")
    rows = prepared_split(paths, "target", "test")
    if not rows:
        raise HandoffError(f"{file} has no rows: the INT8 gate scores the target test split")
    index = {name: i for i, name in enumerate(labels)}
    unknown = sorted({str(row.get("label")) for row in rows} - set(index))
    if unknown:
        raise HandoffError(f"{file}: labels {unknown} are not among task.labels {list(labels)}: re-run ingest")
    return [row["text"] for row in rows], np.array([index[row["label"]] for row in rows])


def macro_f1_points(truth: np.ndarray, predicted: np.ndarray, labels: Sequence[str]) -> float:
    return 100.0 * classification_metrics(truth, predicted, labels)["f1_macro"]


def score_precisions(package: Path, texts: list[str], truth: np.ndarray, labels: Sequence[str]) -> dict:
    """Both graphs on the test texts through OnnxClassifier (the deployers' path): macro-F1 in
    points, INT8's label agreement with fp32 and the seconds each took (same machine, same batches)."""
    predicted, seconds = {}, {}
    for precision in ("fp32", "int8"):
        classifier = OnnxClassifier(package, precision=precision)
        classifier.logits(texts[:1])  # warm-up: session set-up is not inference time
        started = time.perf_counter()
        predicted[precision] = classifier.logits(texts).argmax(axis=-1)
        seconds[precision] = round(time.perf_counter() - started, 4)
    return {
        "metric": "f1_macro",
        "split": "target/test",
        "texts": len(texts),
        "fp32": round(macro_f1_points(truth, predicted["fp32"], labels), 4),
        "int8": round(macro_f1_points(truth, predicted["int8"], labels), 4),
        "label_agreement": round(float((predicted["fp32"] == predicted["int8"]).mean()), 4),
        "fp32_seconds": seconds["fp32"],
        "int8_seconds": seconds["int8"],
    }


# ---------------------------------------------------------------- package


def build_manifest(p: Params, package: Path, model: PreTrainedModel, tokenizer, model_dir: Path) -> dict:
    inputs, outputs = describe_graph(package / MODEL_FILE, package, p.export.opset)
    if p.export.int8:
        describe_graph(package / INT8_MODEL_FILE, package, p.export.opset)
    tokenizer.save_pretrained(str(package))
    if not (package / TOKENIZER_FILE).is_file():
        raise HandoffError(f"{model_dir}: the tokenizer is not a fast one (save_pretrained wrote no {TOKENIZER_FILE})")
    return {
        "format_version": FORMAT_VERSION,
        "task": TASK,
        "opset": p.export.opset,
        "inputs": inputs,
        "outputs": outputs,
        "labels": list(p.task.labels),
        "max_length": max_length(model, tokenizer),
        "tokenizer": {
            "file": TOKENIZER_FILE,
            "pad_token": tokenizer.pad_token,
            "pad_token_id": tokenizer.pad_token_id,
            "padding_side": tokenizer.padding_side,
            "truncation_side": tokenizer.truncation_side,
        },
        "files": file_hashes(package),
        SERVE_PRECISION: "int8" if p.export.serve_int8 else "fp32",
        "versions": library_versions(),
        "source": source_info(model_dir),
    }


def run(p: Params, paths: Paths) -> dict:
    check_target(paths.target_model, p.task.labels)
    texts = parity_texts(paths, p.export.parity_samples)
    test_texts, truth = test_split(paths, p.task.labels) if p.export.int8 else ([], None)
    model, tokenizer = load_target(paths.target_model)
    names = input_names(model, tokenizer)
    remove_stale(paths)
    started = time.perf_counter()
    with atomic_dir(paths.onnx) as package:
        sample = encode(tokenizer, TRACE_TEXTS, names, max_length(model, tokenizer))
        graphs = build_graphs(model, sample, package, p.export)
        manifest = build_manifest(p, package, model, tokenizer, paths.target_model)
        manifest["fused_nodes"] = graphs["fused_nodes"]
        write_json_atomic(package / MANIFEST, sealed(manifest))
        manifest["parity"] = check_parity(model, tokenizer, package, texts, p.export)  # on the fused graph
        if p.export.int8:
            scores = score_precisions(package, test_texts, truth, p.task.labels)
            agreement = f"label agreement {scores['label_agreement']:.1%}"
            manifest["int8"] = int8_gate(scores, p.export, "macro-F1", agreement, graphs["quantization"])
            manifest["int8"]["bytes"] = (package / INT8_MODEL_FILE).stat().st_size
        write_json_atomic(package / MANIFEST, sealed(manifest))  # manifest.json is not among the hashed files
    metrics = {
        "parity": manifest["parity"],
        "onnx_bytes": (paths.onnx / MODEL_FILE).stat().st_size,
        "opset": p.export.opset,
        "fused_nodes": manifest["fused_nodes"],
        "int8": manifest.get("int8"),
        SERVE_PRECISION: manifest[SERVE_PRECISION],
    }
    write_json_atomic(paths.metrics / "export.json", metrics)
    parity, int8 = manifest["parity"], manifest.get("int8")
    gate = "" if int8 is None else (
        f"; INT8 macro-F1 {int8['int8']:.2f} vs fp32 {int8['fp32']:.2f} on {int8['texts']} test texts "
        f"(drop {int8['drop']:+.2f} <= {int8['max_drop']:g}), agreement {int8['label_agreement']:.3f}"
    )
    print(
        f"export: {paths.onnx / MODEL_FILE} ({metrics['onnx_bytes'] / 1e6:.1f} MB, opset {p.export.opset}, fused "
        f"{metrics['fused_nodes'] or 'nothing'}) in {time.perf_counter() - started:.1f}s; parity on {parity['samples']} "
        f"texts: max abs logit diff {parity['max_abs_logit_diff']:.2e}, label agreement "
        f"{parity['label_agreement']:.3f}{gate}; serving {manifest[SERVE_PRECISION]}"
    )
    return metrics
