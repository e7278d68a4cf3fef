"""Greedy decode time of an exported translation package (onnxruntime + numpy, KV cache) against
PyTorch `model.generate` on the model it was exported from, on the same sentences in the same
batches, at several batch sizes and ORT thread counts: the README's decode-speed figures.

Usage (after `make translation`, in the repository root):
  .venv/bin/python -m bench.decode_speed runs/translation [--sentences 200] [--batch-sizes 1 16 64] [--threads 1 2]

Every timing comes after a warm-up, both runtimes in this one process, one after the other
(never two at once: on few cores they would slow each other). Token ids must be identical for a
row to count; the ratio is generate seconds / ORT seconds. Prints a markdown table and writes
bench/results/decode_speed.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from tasks.common.paths import Paths
from serving.translator import OnnxTranslator
from tasks.params import load_params
from tasks.translation.gate import gate_sentences, load_target, reference_batches, special_ids, torch_greedy

RESULTS = Path(__file__).resolve().parent / "results" / "decode_speed.json"


def ort_greedy(translator: OnnxTranslator, texts: list[str], batch_size: int, max_new_tokens: int) -> tuple[list, float]:
    translator.generate_ids(texts[:2], max_new_tokens=2, batch_size=batch_size)  # warm-up
    started = time.perf_counter()
    ids = translator.generate_ids(texts, num_beams=1, max_new_tokens=max_new_tokens, batch_size=batch_size)
    return ids, time.perf_counter() - started


def measure(workspace: Path, sentences: int, batch_sizes: list[int], thread_counts: list[int]) -> list[dict]:
    paths = Paths(workspace)
    params = load_params(workspace / "params.yaml")
    model, tokenizer = load_target(paths.target_model)
    ids = special_ids(model, tokenizer)
    texts = gate_sentences(paths, sentences)
    max_new = params.evaluate.generation.max_new_tokens
    rows = []
    for batch_size in batch_sizes:
        reference_seconds, reference = None, None
        for threads in thread_counts:
            translator = OnnxTranslator(paths.onnx, threads=threads)
            runtime, ort_seconds = ort_greedy(translator, texts, batch_size, max_new)
            if reference is None:  # generate once per batch size, with torch's own thread default
                feeds = reference_batches(tokenizer, texts, translator.plan_batches(texts, batch_size), params.data.target.languages.tgt,
                                          translator.max_length, ids["pad_id"])
                reference, reference_seconds = torch_greedy(model, feeds, len(texts), max_new, ids)
            rows.append({
                "batch_size": batch_size,
                "ort_threads": threads,
                "torch_threads": torch.get_num_threads(),
                "ort_seconds": round(ort_seconds, 3),
                "generate_seconds": round(reference_seconds, 3),
                "speedup": round(reference_seconds / ort_seconds, 2),
                "identical": sum(a == b for a, b in zip(runtime, reference)),
                "sentences": len(texts),
                "decoder_graphs": translator.manifest.get("decoder_graphs", "traced"),
            })
            print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| batch | ORT threads | ORT greedy s | generate s | speed-up | identical ids |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['batch_size']} | {r['ort_threads']} | {r['ort_seconds']} | {r['generate_seconds']} | "
                     f"{r['speedup']}x | {r['identical']}/{r['sentences']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.decode_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("workspace", type=Path, help="a run with models/target and models/onnx, e.g. runs/translation")
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    rows = measure(args.workspace, args.sentences, args.batch_sizes, args.threads)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": torch.get_num_threads(),
                                   "workspace": str(args.workspace), "rows": rows}, indent=2) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
