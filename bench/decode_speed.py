"""Decode time of an exported translation package (onnxruntime + numpy, KV cache) against
PyTorch `model.generate` on the model it was exported from: greedy and beam search, on the same
sentences in the same batches, at several batch sizes and ORT thread counts: the README's
decode-speed figures.

Usage (after `make translation`, in the repository root):
  .venv/bin/python -m bench.decode_speed runs/translation [--sentences 200] [--batch-sizes 1 32] [--threads 1]
                                          [--torch-threads N] [--device cpu] [--kv-cache auto]

Greedy decodes as the evaluate stage does (one beam, no repetition guards); beam with the
package's own settings (manifest "generation": beams, length penalty, no-repeat n-grams, what
`translate()` does by default). Every timing comes after a warm-up, both runtimes in this one
process, one after the other (never two at once: on few cores they would slow each other).
Token ids must be identical for a row to count. Prints a markdown table with, per batch size,
ORT's beam/greedy time ratio and generate's/ORT's time ratio, and writes
bench/results/decode_speed.json. "graphs s" is the part of ORT's time spent inside the three
graphs' `run` calls; generate s / graphs s is the ceiling on the speed-up: what any search loop
around these graphs could reach if its own work cost nothing. A package with search.onnx (the
beam step's candidate scoring as a graph, not counted as "inside the graphs": it is search work)
gets a second beam row, "numpy step", with the same translator scoring candidates in numpy: the
A/B of that graph in one run (at batch sizes where the translator uses the graph: under
search "auto", from 8 sentences a step; smaller batches are numpy's already and get one row).

--device cuda (a CUDA torch and onnxruntime-gpu, requirements-gpu.txt): generate on cuda:0 (TF32
off), the graphs on CUDAExecutionProvider (use_tf32 0, serving's default), the KV cache kept on the
GPU through IO binding (--kv-cache auto; host: copied through numpy every step, the A/B).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import onnxruntime as ort
import torch

from bench.devices import PROVIDERS, require_device
from serving.translator import KV_CACHE_CHOICES, OnnxTranslator
from tasks.common.paths import Paths
from tasks.params import load_params
from tasks.translation.gate import (
    beam_options, gate_sentences, greedy_options, load_target, reference_batches, special_ids, torch_generate,
)

RESULTS = Path(__file__).resolve().parent / "results" / "decode_speed.json"


class TimedSession:
    """An onnxruntime session whose `run` (and `run_with_iobinding`: a device KV cache) calls add
    up their wall time in `seconds`; everything else is the session's."""

    def __init__(self, session, clock: dict):
        self.session, self.clock = session, clock

    def __getattr__(self, name: str):
        return getattr(self.session, name)

    def timed(self, call, *args, **kwargs):
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            self.clock["seconds"] += time.perf_counter() - started

    def run(self, *args, **kwargs):
        return self.timed(self.session.run, *args, **kwargs)

    def run_with_iobinding(self, *args, **kwargs):
        return self.timed(self.session.run_with_iobinding, *args, **kwargs)


def ort_decode(translator: OnnxTranslator, texts: list[str], batch_size: int, options: dict) -> tuple[list, float, float]:
    """Ids, ORT's wall time, and the part of it spent inside the graphs."""
    translator.generate_ids(texts[:2], max_new_tokens=2, batch_size=batch_size)  # warm-up
    clock = {"seconds": 0.0}
    graphs = ("encoder", "decoder", "decoder_with_past", "reorder")  # reorder: only with a device KV cache
    untimed = {name: getattr(translator, name) for name in graphs if getattr(translator, name) is not None}
    for name, session in untimed.items():
        setattr(translator, name, TimedSession(session, clock))
    try:
        started = time.perf_counter()
        ids = translator.generate_ids(texts, batch_size=batch_size, **options)
        return ids, time.perf_counter() - started, clock["seconds"]
    finally:
        for name, session in untimed.items():
            setattr(translator, name, session)


def decodings(translator: OnnxTranslator, max_new_tokens: int) -> dict[str, dict]:
    beam = beam_options(translator)
    return {"greedy": greedy_options(max_new_tokens), f"beam {beam['num_beams']}": beam}


def search_variants(translator: OnnxTranslator, name: str, batch_size: int) -> dict[str, object]:
    """The candidate scorers to time for one decoding: the translator's own, and for beam search
    on a package with search.onnx the numpy step too, where the translator's own steps use the
    graph (batches below its search_min_sentences search in numpy already: one row says it)."""
    variants = {name: translator.search}
    if name != "greedy" and translator.search is not None and batch_size >= translator.search_min_sentences:
        variants[f"{name}, numpy step"] = None
    return variants


def translator_on(package: Path, device: str, threads: int, kv_cache: str) -> OnnxTranslator:
    """The fp32 translator on `device`; on cuda, one whose decoder really runs there."""
    translator = OnnxTranslator(package, threads=threads, precision="fp32", providers=PROVIDERS[device], kv_cache=kv_cache)
    require_device(translator.decoder_with_past, device)
    return translator


def measure(workspace: Path, sentences: int, batch_sizes: list[int], thread_counts: list[int], device: str = "cpu",
            kv_cache: str = "auto") -> list[dict]:
    paths = Paths(workspace)
    params = load_params(workspace / "params.yaml")
    model, tokenizer = load_target(paths.target_model)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        model.to(device)
    ids = special_ids(model, tokenizer)
    texts = gate_sentences(paths, sentences)
    rows = []
    for batch_size in batch_sizes:
        references: dict[str, tuple[list, float]] = {}  # generate once per batch size and decoding
        for threads in thread_counts:
            translator = translator_on(paths.onnx, device, threads, kv_cache)
            feeds = reference_batches(tokenizer, texts, translator.plan_batches(texts, batch_size), params.data.target.languages.tgt,
                                      translator.max_length, ids["pad_id"])
            for name, options in decodings(translator, params.evaluate.generation.max_new_tokens).items():
                if name not in references:
                    references[name] = torch_generate(model, feeds, len(texts), ids, **options)
                reference, generate_seconds = references[name]
                own = translator.search
                for variant, search in search_variants(translator, name, batch_size).items():
                    translator.search = search
                    rows.append(timed_row(translator, texts, batch_size, options, variant, threads, reference, generate_seconds))
                    print(json.dumps(rows[-1]), flush=True)
                translator.search = own
    return rows


def timed_row(translator: OnnxTranslator, texts: list[str], batch_size: int, options: dict, variant: str, threads: int,
              reference: list, generate_seconds: float) -> dict:
    runtime, ort_seconds, graph_seconds = ort_decode(translator, texts, batch_size, options)
    return {
        "batch_size": batch_size,
        "decoding": variant,
        "ort_threads": threads,
        "torch_threads": torch.get_num_threads(),
        "ort_seconds": round(ort_seconds, 3),
        "generate_seconds": round(generate_seconds, 3),
        "speedup": round(generate_seconds / ort_seconds, 2),
        "graph_seconds": round(graph_seconds, 3),
        "ceiling": round(generate_seconds / graph_seconds, 2),
        "identical": sum(a == b for a, b in zip(runtime, reference)),
        "sentences": len(texts),
        "decoder_graphs": translator.manifest.get("decoder_graphs", "traced"),
        "provider": translator.decoder_with_past.get_providers()[0],
        "kv_cache": "host" if translator.device is None else translator.device[0],
    }


def beam_cost(rows: list[dict], row: dict) -> str:
    """ORT beam time / ORT greedy time at the same batch size and threads ("" for greedy rows)."""
    greedy = [r for r in rows if r["decoding"] == "greedy" and r["batch_size"] == row["batch_size"]
              and r["ort_threads"] == row["ort_threads"]]
    if row["decoding"] == "greedy" or not greedy:
        return ""
    return f"{row['ort_seconds'] / greedy[0]['ort_seconds']:.1f}x greedy"


def table(rows: list[dict]) -> str:
    lines = [
        "| batch | decoding | ORT threads | ORT s | ORT cost | generate s | speed-up | graphs s | ceiling | identical ids |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['batch_size']} | {r['decoding']} | {r['ort_threads']} | {r['ort_seconds']} | {beam_cost(rows, r)} | "
                     f"{r['generate_seconds']} | {r['speedup']}x | {r['graph_seconds']} | {r['ceiling']}x | "
                     f"{r['identical']}/{r['sentences']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.decode_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("workspace", type=Path, help="a run with models/target and models/onnx, e.g. runs/translation")
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="ORT intra-op threads per graph")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch threads for generate (default: torch's)")
    parser.add_argument("--device", choices=sorted(PROVIDERS), default="cpu", help="cuda: generate and the graphs on the GPU")
    parser.add_argument("--kv-cache", choices=KV_CACHE_CHOICES, default="auto",
                        help="the translator's KV cache: auto (on the GPU under cuda), host (numpy) or device")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    rows = measure(args.workspace, args.sentences, args.batch_sizes, args.threads, args.device, args.kv_cache)
    RESULTS.parent.mkdir(exist_ok=True)
    results = RESULTS if args.device == "cpu" else RESULTS.with_name(f"decode_speed-{args.device}-{args.kv_cache}.json")
    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else None
    results.write_text(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": torch.get_num_threads(),
                                   "gpu": gpu, "onnxruntime": ort.__version__, "torch": torch.__version__,
                                   "workspace": str(args.workspace), "rows": rows}, indent=2) + "\n")
    print(f"{rows[0]['provider']}, KV cache on the {rows[0]['kv_cache']}" + (f", {gpu}" if gpu else ""))
    print(table(rows))


if __name__ == "__main__":
    main()
