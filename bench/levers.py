"""Levers of the target-only baseline on the real demo data: target-only classifiers (model.init
from params.yaml, the amazon target alone, a small label budget, evaluate.target_only's params)
over model.pooling (cls, mean), learning rates and step floors (evaluate.target_only.min_steps),
scored by macro-F1 on the target's val and test splits: pick on val, report test.

Usage:  .venv/bin/python -m bench.levers [--budget 200] [--seeds 1] [--poolings cls mean]
                                         [--learning-rates 5e-5 1e-4] [--min-steps 0 150]
It ingests and tokenizes into a temporary workspace (the source is capped at 200 rows: only
ingest reads it), never the repository's own outputs. Prints a markdown table and writes
bench/results/levers-<budget>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import yaml

from tasks.classification import ingest, tokenize
from tasks.classification.metrics import classification_metrics
from tasks.classification.model import load_tokenized, predict
from tasks.classification.train import train_target_only
from tasks.common.paths import Paths
from tasks.common.prepared import prepared_split
from tasks.common.training import pick_device
from tasks.params import Params, parse_params

ROOT = Path(__file__).resolve().parents[1]
SENTIMENT = Path(os.environ.get("SHARED_DATA", ROOT.parent / "shared" / "data")) / "sentiment-domains"


def demo_params_raw() -> dict:
    """params.yaml as a mapping, its movie -> amazon demo read from the shared data (the benches
    run anywhere, not only where `make data` linked data/external)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"]["source"]["path"] = str(SENTIMENT / "movieReviewSnippets_GroundTruth.txt")
    raw["data"]["target"]["path"] = str(SENTIMENT / "amazonReviewSnippets_GroundTruth.txt")
    return raw


def bench_params(pooling: str, seed_offset: int = 0, **target_only) -> Params:
    raw = demo_params_raw()
    raw["seed"] = raw.get("seed", 42) + seed_offset
    raw["model"]["pooling"] = pooling
    raw["evaluate"]["target_only"].update({k: v for k, v in target_only.items() if v is not None})
    raw["data"]["source"]["max_rows"] = 200
    return parse_params(raw, "bench.levers")


def f1_of(rows: list[dict], predicted: list[int], labels: list[str]) -> float:
    """Macro-F1 of label ids `predicted` against the `label` of prepared `rows`."""
    truth = [labels.index(r["label"]) for r in rows]
    return classification_metrics(truth, predicted, labels)["f1_macro"]


def macro_f1(model, tokenizer, p: Params, paths: Paths, split: str = "test") -> float:
    """The model's macro-F1 on one of the target's prepared splits."""
    return rows_f1(model, tokenizer, p, prepared_split(paths, "target", split))


def rows_f1(model, tokenizer, p: Params, rows: list[dict]) -> float:
    """The model's macro-F1 on prepared `rows` ({"text", "label"})."""
    logits = predict(model, tokenizer, [r["text"] for r in rows], p.evaluate.batch_size, p.tokenize.max_length,
                     pick_device(p.device))
    return f1_of(rows, logits.argmax(-1).tolist(), p.task.labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=200, help="target training labels (default 200)")
    parser.add_argument("--seeds", type=int, default=1, help="runs per pooling: params.yaml's seed, seed+1, ...")
    parser.add_argument("--poolings", nargs="+", default=["cls", "mean"], choices=["cls", "mean"])
    parser.add_argument("--learning-rates", nargs="+", type=float, default=[None],
                        help="evaluate.target_only.learning_rate values (default: params.yaml's)")
    parser.add_argument("--min-steps", nargs="+", type=int, default=[None],
                        help="evaluate.target_only.min_steps values (default: params.yaml's)")
    args = parser.parse_args()
    grid = [(pooling, lr, floor) for pooling in args.poolings for lr in args.learning_rates for floor in args.min_steps]
    base = bench_params("cls")
    rows = []
    with tempfile.TemporaryDirectory(prefix="levers-") as tmp:
        paths = Paths(Path(tmp))
        ingest.run(base, paths)
        tokenize.run(base, paths)
        splits, tokenizer = load_tokenized(paths, "target")
        for pooling, lr, floor in grid:
            for index in range(args.seeds):
                p = bench_params(pooling, index, learning_rate=lr, min_steps=floor)
                started = time.perf_counter()
                model, result = train_target_only(p, paths, splits, tokenizer, args.budget, f"levers-{pooling}-{p.seed}")
                rows.append({
                    "pooling": pooling, "learning_rate": p.evaluate.target_only.learning_rate,
                    "min_steps": p.evaluate.target_only.min_steps, "seed": p.seed, "train_rows": result["train_rows"],
                    "val_f1_macro": result["val"]["eval_f1_macro"], "test_f1_macro": macro_f1(model, tokenizer, p, paths),
                    "steps": result["history"][-1].get("step"), "seconds": time.perf_counter() - started,
                })
                print(json.dumps(rows[-1]), flush=True)
    split_sizes = {name: len(splits[name]) for name in splits}
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "init": base.model.init,
              "budget": args.budget, "target_splits": split_sizes, "rows": rows}
    out = ROOT / f"bench/results/levers-{args.budget}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\ninit {base.model.init}, amazon target, {args.budget} labels, target_only params; splits {split_sizes}\n")
    print("| pooling | lr | min_steps | seed | val macro-F1 | test macro-F1 | steps | time |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['pooling']} | {row['learning_rate']:g} | {row['min_steps']} | {row['seed']} | "
              f"{row['val_f1_macro']:.3f} | {row['test_f1_macro']:.3f} | {row['steps']} | {row['seconds']:.0f} s |")


if __name__ == "__main__":
    main()
