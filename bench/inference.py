"""CPU inference speed and quality of a workspace's model in each form the pipeline produces, on
the same test texts in the same batches: the README's serving figures.

Usage (in the repository root, after `make` / the export stage):
  .venv/bin/python -m bench.inference WORKSPACE [--texts N] [--batch-sizes 1 8 32] [--threads 1] [--device cpu]

--device cuda (classification; needs a CUDA torch and onnxruntime-gpu, requirements-gpu.txt) runs
torch eager and both fp32 graphs on the GPU instead: torch on cuda:0 with TF32 off, ORT with
CUDAExecutionProvider (use_tf32 0, as serving's default_providers), inputs copied from the host per
batch and logits back, as a server pays; INT8 (dynamic quantization: a CPU format) is not timed there.

WORKSPACE holds params.yaml, models/target, models/onnx and data/prepared/target/test.jsonl.

Classification (task.kind classification), four variants:
  torch eager    models/target loaded as the export stage loads it (tasks.classification.export
                 .load_target: float32, CPU, eval), under torch.no_grad, torch.set_num_threads(threads)
  ort unfused    the graph the export stage exports before fusing it: re-exported into a temp dir
                 with the stage's own export_graph (dynamo, its trace sample and the manifest's
                 opset), i.e. model.onnx as build_graphs writes it before fuse_graph. NOT model.onnx
                 with session optimizations disabled, which would also drop ORT's ordinary graph
                 optimizations (constant folding, Gelu/LayerNorm fusions) that every session gets
  ort fused      the package's model.onnx (ONNX Runtime's transformer optimizer: Attention,
                 BiasGelu ...), through OnnxClassifier(package, precision="fp32")
  ort int8       the package's model.int8.onnx, OnnxClassifier(package, precision="int8")
OnnxClassifier builds its session without SessionOptions, so each ORT variant's session is
created here (CPUExecutionProvider, intra_op_num_threads=threads, inter_op 1, otherwise ORT's
defaults, graph optimizations included, as OnnxClassifier gets them) and put in the classifier
in place of its own; the unfused graph gets the same options. Texts are tokenized once with the
package's tokenizer.json as OnnxClassifier.encode does (same fields, same truncation and
padding), in OnnxClassifier.logits' batches (sorted by length), and every variant is fed those
very int64 arrays: the timings are the model alone, tokenization is reported apart. For each
variant and batch size: ms per text and texts per second (after a warm-up on the shortest and
longest batch), label agreement with torch eager, max abs logit difference from it and macro-F1
(sklearn, in points) against the test labels; speed-up = torch eager seconds / variant seconds.

Translation (task.kind translation): OnnxTranslator fp32 against int8 (precision=), threads as
above, greedy and beam (the manifest's num_beams), with the manifest's decoding options (as the
export's INT8 gate and deployers decode), on the first N target test sentences: generated tokens
per second and sacrebleu BLEU against the references; speed-up = fp32 seconds / int8 seconds.

Every variant runs in this one process, one after the other (never two at once: on few cores
they would slow each other). Prints markdown tables and writes bench/results/inference.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import transformers

from bench.devices import PROVIDERS, require_device
from serving.classifier import ENCODING_FIELDS, OUTPUT, OnnxClassifier
from serving.package import inference_session
from tasks.common.paths import Paths
from tasks.params import load_params

RESULTS = Path(__file__).resolve().parent / "results" / "inference.json"
BASELINE = "torch eager"


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return options


def machine(device: str) -> dict:
    return {
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "onnxruntime": ort.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


# ---------------------------------------------------------------- classification


def batches_of(texts: Sequence[str], batch_size: int) -> list[np.ndarray]:
    """OnnxClassifier.logits' batching: indices sorted by text length, then cut."""
    order = np.argsort([len(text) for text in texts], kind="stable")
    return [order[start : start + batch_size] for start in range(0, len(texts), batch_size)]


def encode_all(classifier: OnnxClassifier, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """OnnxClassifier.encode for every field a graph may take (its own input names may be fewer)."""
    encodings = classifier.tokenizer.encode_batch(list(texts))
    return {name: np.array([getattr(enc, field) for enc in encodings], dtype=np.int64)
            for name, field in ENCODING_FIELDS.items()}


def device_session(path: Path, device: str, options: ort.SessionOptions) -> ort.InferenceSession:
    """A session on `device`; on cuda, one that really runs there (onnxruntime without CUDA
    would quietly fall back to the CPU and the figures would be the CPU's)."""
    session = inference_session(path, PROVIDERS[device], options)
    require_device(session, device)
    return session


def ort_runner(session: ort.InferenceSession) -> Callable[[dict], np.ndarray]:
    names = [graph_input.name for graph_input in session.get_inputs()]
    return lambda feeds: session.run([OUTPUT], {name: feeds[name] for name in names})[0]


def torch_runner(model, names: Sequence[str], device: str) -> Callable[[dict], np.ndarray]:
    """Host arrays in, host logits out (.cpu() waits for the GPU: the timing is the whole call)."""
    def run(feeds: dict) -> np.ndarray:
        with torch.no_grad():
            inputs = {name: torch.from_numpy(feeds[name]).to(device) for name in names}
            return model(**inputs).logits.float().cpu().numpy()
    return run


def timed(run: Callable[[dict], np.ndarray], feeds: list[tuple[np.ndarray, dict]], count: int, labels: int) -> tuple[np.ndarray, float]:
    """Logits in text order and the seconds all batches took, after a warm-up on the first and last batch."""
    for _, batch in (feeds[0], feeds[-1]):
        run(batch)
    out = np.zeros((count, labels), dtype=np.float32)
    started = time.perf_counter()
    for index, batch in feeds:
        out[index] = run(batch)
    return out, time.perf_counter() - started


def unfused_graph(model, tokenizer, opset: int, out: Path) -> Path:
    """model.onnx as the export stage writes it before fuse_graph (build_graphs' first step)."""
    from tasks.classification.export import TRACE_TEXTS, encode, export_graph, input_names, max_length

    sample = encode(tokenizer, TRACE_TEXTS, input_names(model, tokenizer), max_length(model, tokenizer))
    path = out / "model.unfused.onnx"
    export_graph(model, sample, path, opset)
    return path


def macro_f1(truth: np.ndarray, predicted: np.ndarray, labels: int) -> float:
    from sklearn.metrics import f1_score

    return round(100.0 * float(f1_score(truth, predicted, labels=list(range(labels)), average="macro", zero_division=0)), 2)


def measure_classification(workspace: Path, count: int | None, batch_sizes: list[int], threads: int, device: str = "cpu") -> dict:
    from tasks.classification.export import input_names, load_target, test_split

    paths = Paths(workspace)
    torch.set_num_threads(threads)
    fp32 = OnnxClassifier(paths.onnx, precision="fp32")
    labels = fp32.labels
    texts, truth = test_split(paths, labels)
    texts, truth = texts[:count], truth[:count]
    n = len(texts)
    started = time.perf_counter()
    for size in batch_sizes:  # tokenization alone, once per batch size (not part of the rows)
        for index in batches_of(texts, size):
            fp32.encode([texts[i] for i in index])
    tokenize_ms = round(1000.0 * (time.perf_counter() - started) / (n * len(batch_sizes)), 4)
    feeds = {size: [(index, encode_all(fp32, [texts[i] for i in index])) for index in batches_of(texts, size)]
             for size in batch_sizes}

    model, tokenizer = load_target(paths.target_model)
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 as the CPU computes it (ORT: use_tf32 0)
        model.to(device)
    if list(model.config.id2label.values()) != labels:
        print(f"warning: model labels {list(model.config.id2label.values())} differ from the package's {labels}")
    names = input_names(model, tokenizer)
    options = session_options(threads)
    rows: list[dict] = []
    reference: dict[int, np.ndarray] = {}
    predictions: dict[str, dict[int, np.ndarray]] = {}

    def record(variant: str, run: Callable[[dict], np.ndarray]) -> None:
        for size in batch_sizes:
            logits, seconds = timed(run, feeds[size], n, len(labels))
            if variant == BASELINE:
                reference[size] = logits
            predicted = logits.argmax(-1)
            predictions.setdefault(variant, {})[size] = predicted  # the first batch size's: the per-variant figures
            base = next((r for r in rows if r["variant"] == BASELINE and r["batch_size"] == size), None)
            rows.append({
                "variant": variant,
                "batch_size": size,
                "texts": n,
                "seconds": round(seconds, 4),
                "ms_per_text": round(1000.0 * seconds / n, 3),
                "texts_per_second": round(n / seconds, 1),
                "speedup": round(base["seconds"] / seconds, 2) if base else 1.0,
                "label_agreement": round(float((predicted == reference[size].argmax(-1)).mean()), 4),
                "max_abs_logit_diff": float(np.abs(logits - reference[size]).max()),
                "f1_macro": macro_f1(truth, predicted, len(labels)),
            })
            print(json.dumps(rows[-1]), flush=True)

    record(BASELINE, torch_runner(model, names, device))
    with tempfile.TemporaryDirectory(prefix="bench-unfused-") as tmp:
        graph = unfused_graph(model.to("cpu"), tokenizer, int(fp32.manifest["opset"]), Path(tmp))
        unfused_bytes = graph.stat().st_size
        record("ort fp32 unfused", ort_runner(device_session(graph, device, options)))
    del model
    graph_bytes = {"ort fp32 unfused": unfused_bytes}
    precisions = (("ort fp32 fused", "fp32"), ("ort int8", "int8"))
    for variant, precision in precisions if device == "cpu" else precisions[:1]:
        classifier = fp32 if precision == "fp32" else OnnxClassifier(paths.onnx, precision="int8")
        classifier.session = device_session(classifier.package / classifier.graph_file, device, options)
        graph_bytes[variant] = (classifier.package / classifier.graph_file).stat().st_size
        record(variant, ort_runner(classifier.session))

    first = batch_sizes[0]
    variants = [{
        "variant": variant,
        "graph_bytes": graph_bytes.get(variant),
        "label_agreement": round(float((by_size[first] == reference[first].argmax(-1)).mean()), 4),
        "f1_macro": macro_f1(truth, by_size[first], len(labels)),
        "same_labels_at_every_batch_size": all(np.array_equal(by_size[first], p) for p in by_size.values()),
    } for variant, by_size in predictions.items()]
    return {"kind": "classification", "texts": n, "tokenize_ms_per_text": tokenize_ms,
            "fused_nodes": fp32.manifest.get("fused_nodes"), "rows": rows, "variants": variants}


def classification_tables(result: dict) -> str:
    lines = ["| variant | batch | ms/text | texts/s | speed-up vs torch eager |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['variant']} | {r['batch_size']} | {r['ms_per_text']:.2f} | {r['texts_per_second']:.0f} | "
                     f"{r['speedup']:.2f}x |")
    lines += ["", f"| variant | label agreement with torch eager | macro-F1 ({result['texts']} test texts) | graph MB |",
              "|---|---|---|---|"]
    for v in result["variants"]:
        size = "" if v["graph_bytes"] is None else f"{v['graph_bytes'] / 1e6:.1f}"
        lines.append(f"| {v['variant']} | {v['label_agreement']:.1%} | {v['f1_macro']:.2f} | {size} |")
    lines.append(f"\nTokenization (tokenizer.json, not in the timings): {result['tokenize_ms_per_text']:.3f} ms/text")
    return "\n".join(lines)


# ---------------------------------------------------------------- translation


def measure_translation(workspace: Path, count: int | None, batch_sizes: list[int], threads: int) -> dict:
    from serving.translator import OnnxTranslator
    from tasks.translation.gate import gate_references, gate_sentences
    from tasks.translation.metrics import translation_scores

    paths = Paths(workspace)
    params = load_params(workspace / "params.yaml")
    tgt_lang = params.data.target.languages.tgt
    limit = count if count is not None else 10**9
    texts, references = gate_sentences(paths, limit), gate_references(paths, limit)
    rows: list[dict] = []
    for precision in ("fp32", "int8"):
        translator = OnnxTranslator(paths.onnx, threads=threads, precision=precision, providers=PROVIDERS["cpu"])
        beams = int(translator.generation.get("num_beams", 1))
        searches = [("greedy", 1)] + ([("beam", beams)] if beams > 1 else [])
        for search, num_beams in searches:
            options = translator.decoding(num_beams=num_beams)
            for size in batch_sizes:
                translator.generate_ids(texts[:size], **{**options, "max_new_tokens": 2}, batch_size=size)  # warm-up
                started = time.perf_counter()
                ids = translator.generate_ids(texts, **options, batch_size=size)
                seconds = time.perf_counter() - started
                tokens = sum(len(row) for row in ids)
                base = next((r for r in rows if r["precision"] == "fp32" and r["search"] == search
                             and r["batch_size"] == size), None)
                bleu = translation_scores([translator.decode(row) for row in ids], references, tgt_lang)
                rows.append({
                    "precision": precision,
                    "search": search,
                    "num_beams": num_beams,
                    "batch_size": size,
                    "sentences": len(texts),
                    "generated_tokens": tokens,
                    "seconds": round(seconds, 4),
                    "tokens_per_second": round(tokens / seconds, 1),
                    "ms_per_sentence": round(1000.0 * seconds / len(texts), 2),
                    "speedup": round(base["seconds"] / seconds, 2) if base else 1.0,
                    "identical_to_fp32": sum(a == b for a, b in zip(ids, base["ids"])) if base else len(texts),
                    "bleu": round(bleu["bleu"], 2),
                    "bleu_signature": bleu["bleu_signature"],
                    "ids": ids,
                })
                print(json.dumps({k: v for k, v in rows[-1].items() if k != "ids"}), flush=True)
    for row in rows:
        del row["ids"]
    return {"kind": "translation", "sentences": len(texts), "tgt_lang": tgt_lang, "rows": rows}


def translation_table(result: dict) -> str:
    lines = ["| precision | search | batch | tokens/s | ms/sentence | speed-up vs fp32 | identical to fp32 | BLEU |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['precision']} | {r['search']} (beams {r['num_beams']}) | {r['batch_size']} | "
                     f"{r['tokens_per_second']:.0f} | {r['ms_per_sentence']:.1f} | {r['speedup']:.2f}x | "
                     f"{r['identical_to_fp32']}/{r['sentences']} | {r['bleu']:.2f} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.inference", description=__doc__.split("\n\n")[0])
    parser.add_argument("workspace", type=Path, help="a run with params.yaml, models/target, models/onnx and data/prepared")
    parser.add_argument("--texts", type=int, default=None, help="the first N target test rows (default: all)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--threads", type=int, default=1, help="torch and ORT intra-op threads")
    parser.add_argument("--device", choices=sorted(PROVIDERS), default="cpu",
                        help="cuda: torch and the fp32 graphs on the GPU (classification)")
    args = parser.parse_args()
    if args.threads < 1 or min(args.batch_sizes) < 1 or (args.texts is not None and args.texts < 1):
        parser.error("--texts, --batch-sizes and --threads must be at least 1")
    kind = load_params(args.workspace / "params.yaml").task.kind
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    if kind == "translation" and args.device != "cpu":
        parser.error("--device cuda is for classification; translation on the GPU: python -m bench.decode_speed --device cuda")
    if kind == "translation":
        result = measure_translation(args.workspace, args.texts, args.batch_sizes, args.threads)
        shown = translation_table(result)
    else:
        result = measure_classification(args.workspace, args.texts, args.batch_sizes, args.threads, args.device)
        shown = classification_tables(result)
    RESULTS.parent.mkdir(exist_ok=True)
    arguments = {"workspace": str(args.workspace), "texts": args.texts, "batch_sizes": args.batch_sizes,
                 "threads": args.threads, "device": args.device}
    results = RESULTS if args.device == "cpu" else RESULTS.with_name(f"inference-{args.device}.json")
    results.write_text(json.dumps({"machine": machine(args.device), "arguments": arguments, **result}, indent=2) + "\n")
    print(shown)


if __name__ == "__main__":
    main()
