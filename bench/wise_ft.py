"""Weight-space ensembling (WiSE-FT, Wortsman et al. 2022) of the transfer model: the target
fine-tune interpolated with the source classifier it started from,
alpha * fine-tuned + (1 - alpha) * models/source, for several alphas, scored by macro-F1 on the
target's val and test splits (pick on val, report test). A lever of the 200-label aim; it needs
no extra training, only models/source trained on the target's own labels (the demo's sentiment
source), so the source head is a real classifier of task.labels.

Usage (on a workspace whose pretrain stage has run, e.g. the repository root after `make run`):
  .venv/bin/python -m bench.wise_ft WORKSPACE [--budget 200] [--seeds 3] [--alphas 0 0.5 0.7 0.8 0.9 1]
Each seed fine-tunes as the finetune stage does (finetune.* of WORKSPACE/params.yaml, its own
subset, head and order; run names wise-<budget>-s<seed>, checkpoints under WORKSPACE's
checkpoint folder, nothing else written there). Prints one JSON line per seed and alpha, a
markdown table of means, and writes bench/results/wise_ft-<budget>.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.transfer_levers import wise_scores
from tasks.classification.model import has_classifier_head, load_tokenized, model_labels
from tasks.classification.train import fine_tune
from tasks.common.paths import Paths
from tasks.common.prepared import prepared_split
from tasks.params import load_params

RESULTS = Path(__file__).resolve().parent / "results"


def wise_ft(workspace: Path, budget: int | None, seeds: int, alphas: list[float]) -> list[dict]:
    base = load_params(workspace / "params.yaml")
    paths = Paths(workspace)
    labels = list(base.task.labels)
    if not has_classifier_head(paths.source_model) or model_labels(paths.source_model) != labels:
        raise SystemExit(f"{paths.source_model}: no classifier of task.labels to interpolate with (pretrain.mode mlm?)")
    splits, tokenizer = load_tokenized(paths, "target")
    scored = {split: prepared_split(paths, "target", split) for split in ("val", "test")}
    rows = []
    for seed in range(base.seed, base.seed + seeds):
        p = base.model_copy(update={"seed": seed})
        model, _ = fine_tune(p, paths, splits, tokenizer, budget, f"wise-{budget or 'all'}-s{seed}")
        for alpha, f1 in wise_scores(model, tokenizer, p, paths, scored, alphas):
            rows.append({"budget": budget or "all", "seed": seed, "alpha": alpha, **f1})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def mean_sd(values: list[float]) -> str:
    """'mean ± sample sd' (sd 0 for one value)."""
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1) if len(values) > 1 else 0:.3f}"


def table(rows: list[dict], alphas: list[float]) -> str:
    lines = ["| alpha | val (mean) | test (mean ± sd) |", "|---|---|---|"]
    for alpha in alphas:
        val = [row["val"] for row in rows if row["alpha"] == alpha]
        test = [row["test"] for row in rows if row["alpha"] == alpha]
        lines.append(f"| {alpha:g} | {np.mean(val):.3f} | {mean_sd(test)} |")
    return "\n".join(lines)


def workspace_parser(module: str, doc: str) -> argparse.ArgumentParser:
    """The arguments the workspace benches share: WORKSPACE, --budget and --seeds."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.split("\n\n")[0])
    parser.add_argument("workspace", type=Path, help="a classification run whose pretrain stage has run")
    parser.add_argument("--budget", default="200", help="target labels per seed, or 'all'")
    parser.add_argument("--seeds", type=int, default=3, help="params.yaml's seed and the next ones (each its own subset)")
    return parser


def budget_of(text: str) -> int | None:
    return None if text == "all" else int(text)


def main() -> None:
    parser = workspace_parser("bench.wise_ft", __doc__)
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.5, 0.7, 0.8, 0.9, 1.0])
    args = parser.parse_args()
    rows = wise_ft(args.workspace, budget_of(args.budget), args.seeds, args.alphas)
    print(table(rows, args.alphas))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"wise_ft-{args.budget}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
