"""How fast can this CPU run a classifier package at batch 1, at best? The encoder's dense
layers alone (Q, K, V, output projection and the two feed-forward layers of every layer: all but
a few percent of its arithmetic), with the package's own shapes, as bare ONNX Runtime MatMul
nodes in float32 and in dynamic INT8 (quantized as the export stage quantizes), one text at a
time with each test text's real token count. No attention, normalization, activation or
embedding lookup is run: an estimate of what the model's arithmetic alone costs on ONNX Runtime's
kernels, and of the speed-up over torch eager an export could reach. Not a strict bound: the
fused Attention node computes Q, K and V with its own kernel, and on a noisy 2-core VM the whole
fused graph has measured faster than these MatMuls alone (README, Deploy).

Usage (after `python -m bench.inference WORKSPACE`, whose torch eager and ORT figures it reads
from bench/results/inference.json; the same --texts and --threads):
  .venv/bin/python -m bench.matmul_floor WORKSPACE [--texts 300] [--threads 1]

Prints, per precision, ms per text for the dense layers alone, the package graph's measured ms
(from inference.json) and torch eager ms / dense-layer ms: the speed-up the arithmetic alone allows.
Writes bench/results/matmul_floor.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer

from bench.inference import RESULTS as INFERENCE_RESULTS
from bench.inference import session_options
from serving.package import load_manifest
from tasks.classification.export import QUANTIZATION
from tasks.common.onnx_export import quantize_graph
from tasks.common.paths import Paths
from tasks.common.prepared import prepared_split

RESULTS = INFERENCE_RESULTS.parent
GRAPH_VARIANT = {"fp32": "ort fp32 fused", "int8": "ort int8"}  # bench.inference's names


def dense_layers_graph(layers: int, hidden: int, intermediate: int, path: Path) -> Path:
    """Per encoder layer: x@Wqkv (Q, K and V packed in one product, as the fused Attention node
    computes them: the fastest form), then x@Wo -> @W1 -> @W2 as the next x. The packed QKV
    products are graph outputs so that ONNX Runtime cannot drop them as unused."""
    rng = np.random.default_rng(0)
    nodes, weights, outputs, x = [], [], [], "x"
    shapes = {"qkv": (hidden, 3 * hidden), "o": (hidden, hidden), "up": (hidden, intermediate), "down": (intermediate, hidden)}
    for layer in range(layers):
        for name, shape in shapes.items():
            weights.append(numpy_helper.from_array((rng.standard_normal(shape) * 0.05).astype(np.float32), f"w{layer}{name}"))
        nodes.append(helper.make_node("MatMul", [x, f"w{layer}qkv"], [f"qkv{layer}"]))
        outputs.append(f"qkv{layer}")
        nodes.append(helper.make_node("MatMul", [x, f"w{layer}o"], [f"o{layer}"]))
        nodes.append(helper.make_node("MatMul", [f"o{layer}", f"w{layer}up"], [f"up{layer}"]))
        nodes.append(helper.make_node("MatMul", [f"up{layer}", f"w{layer}down"], [f"x{layer}"]))
        x = f"x{layer}"
    outputs.append(x)
    graph = helper.make_graph(
        nodes, "dense_layers", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["tokens", hidden])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def token_counts(workspace: Path, count: int) -> list[int]:
    """Each test text's ids as the package encodes them ([CLS] ... [SEP], truncated)."""
    package = workspace / "models/onnx"
    manifest = load_manifest(package)
    tokenizer = Tokenizer.from_file(str(package / manifest["tokenizer"]["file"]))
    limit = int(manifest["max_length"])
    rows = prepared_split(Paths(workspace), "target", "test")[:count]
    return [min(len(tokenizer.encode(row["text"]).ids), limit) for row in rows]


def ms_per_text(path: Path, counts: list[int], hidden: int, threads: int) -> float:
    session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    feeds = [{"x": np.random.default_rng(n).standard_normal((n, hidden)).astype(np.float32)} for n in counts]
    for feed in (feeds[0], max(feeds, key=lambda f: len(f["x"]))):  # warm-up
        session.run(None, feed)
    started = time.perf_counter()
    for feed in feeds:
        session.run(None, feed)
    return (time.perf_counter() - started) / len(feeds) * 1000


def measured(workspace: Path) -> dict[str, float]:
    """Batch-1 ms per text of bench.inference's variants on this workspace."""
    path = INFERENCE_RESULTS
    if not path.exists():
        raise SystemExit(f"error: {path} is missing: run `python -m bench.inference {workspace}` first")
    results = json.loads(path.read_text())
    if Path(results["arguments"]["workspace"]).resolve() != workspace.resolve():
        raise SystemExit(f"error: {path} measured {results['arguments']['workspace']}, not {workspace}: "
                         f"run `python -m bench.inference {workspace}` first")
    return {row["variant"]: row["ms_per_text"] for row in results["rows"] if row["batch_size"] == 1}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.matmul_floor", description=__doc__.split("\n\n")[0])
    parser.add_argument("workspace", type=Path, help="a classification run with models/target, models/onnx, data/prepared")
    parser.add_argument("--texts", type=int, default=300, help="the first N target test texts")
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads")
    args = parser.parse_args()
    config = json.loads((args.workspace / "models/target/config.json").read_text())
    layers, hidden, intermediate = config["num_hidden_layers"], config["hidden_size"], config["intermediate_size"]
    counts = token_counts(args.workspace, args.texts)
    reference = measured(args.workspace)
    flops = 2 * sum(counts) / len(counts) * layers * (4 * hidden * hidden + 2 * hidden * intermediate)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = dense_layers_graph(layers, hidden, intermediate, Path(tmp) / "dense.onnx")
        int8 = Path(tmp) / "dense.int8.onnx"
        quantize_graph(fp32, int8, **QUANTIZATION)
        for precision, path in (("fp32", fp32), ("int8", int8)):
            floor = ms_per_text(path, counts, hidden, args.threads)
            graph = reference.get(GRAPH_VARIANT[precision])
            rows.append({
                "precision": precision, "dense_ms_per_text": round(floor, 3),
                "dense_gflops": round(flops / floor / 1e6, 1),
                "package_graph_ms_per_text": graph, "torch_eager_ms_per_text": reference["torch eager"],
                "measured_speedup": round(reference["torch eager"] / graph, 2) if graph else None,
                "torch_over_dense": round(reference["torch eager"] / floor, 2),
            })
    summary = {"workspace": str(args.workspace), "texts": len(counts), "mean_tokens": round(sum(counts) / len(counts), 1),
               "dense_mflop_per_text": round(flops / 1e6, 1), "threads": args.threads, "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "matmul_floor.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{len(counts)} texts, {summary['mean_tokens']} tokens each on average, "
          f"{summary['dense_mflop_per_text']} MFLOP of dense layers per text, {args.threads} thread(s)")
    print("| precision | dense layers alone, ms/text | their GFLOP/s | package graph, ms/text | torch eager, ms/text "
          "| measured speed-up | torch eager / dense layers alone |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['precision']} | {r['dense_ms_per_text']} | {r['dense_gflops']} | {r['package_graph_ms_per_text']} | "
              f"{r['torch_eager_ms_per_text']} | {r['measured_speedup']}x | {r['torch_over_dense']}x |")


if __name__ == "__main__":
    main()
