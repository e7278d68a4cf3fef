"""SetFit on the budget curve of a finished classification run: the `setfit` baseline
(evaluate.setfit's params, the same body) trained on the very subsets the run's transfer and
target-only models got at each budget and seed, scored by macro-F1 on the run's test split, next
to the run's own curve (metrics/transfer.json). What `evaluate.baselines: [..., setfit]` with
`evaluate.curve_budgets` would add to the run, without re-training the run's other models.

Usage (after `make curve`, or any run with a budget curve; needs requirements-setfit.txt):
  .venv/bin/python -m bench.setfit_curve WORKSPACE [--budgets 32 64 128 256] [--seeds 3]
Reads WORKSPACE's params.yaml, tokenized target and test split; writes nothing there. Writes
bench/results/setfit-curve.json after every model and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path

from bench.levers import f1_of
from tasks.classification.evaluate import setfit_at
from tasks.common.paths import Paths
from tasks.common.prepared import prepared_split
from tasks.params import Params, load_params

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench/results/setfit-curve.json"


def setfit_f1(p: Params, paths: Paths, test_rows: list[dict], budget: int) -> tuple[float, dict]:
    predicted, notes = setfit_at(p, paths, budget, [row["text"] for row in test_rows])
    return f1_of(test_rows, predicted.tolist(), p.task.labels), notes


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {std:.3f}"


def table(result: dict, curve: dict) -> str:
    lines = ["| labels | SetFit | transfer (the run) | target-only (the run) | transfer - SetFit, per seed |",
             "|---|---|---|---|---|"]
    for key, setfit in result["budgets"].items():
        scores = curve.get(key, {}).get("scores", {})
        transfer = scores.get("transfer", {}).get("per_seed", [])
        target_only = scores.get("target_only", {}).get("per_seed", [])
        gaps = " / ".join(f"{100 * (t - s):+.1f}" for t, s in zip(transfer, setfit))
        lines.append(f"| {key} | {spread(setfit)} | {spread(transfer)} | {spread(target_only)} | {gaps or '-'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.setfit_curve", description=__doc__.split("\n\n")[0])
    parser.add_argument("workspace", type=Path, help="a classification run with a budget curve (metrics/transfer.json)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--seeds", type=int, default=3, help="params.yaml's seed, seed+1, ... (the run's curve seeds)")
    args = parser.parse_args()
    params, paths = load_params(args.workspace / "params.yaml"), Paths(args.workspace)
    test_rows = prepared_split(paths, "target", "test")
    curve = json.loads((args.workspace / "metrics/transfer.json").read_text()).get("by_budget", {})
    result: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "workspace": str(args.workspace),
                    "budgets": {}, "runs": []}
    for budget in args.budgets:
        result["budgets"][str(budget)] = []
        for seed in range(params.seed, params.seed + args.seeds):
            f1, notes = setfit_f1(params.model_copy(update={"seed": seed}), paths, test_rows, budget)
            result["budgets"][str(budget)].append(f1)
            result["runs"].append({"budget": budget, "seed": seed, "f1_macro": f1, **notes})
            print(json.dumps(result["runs"][-1]), flush=True)
            OUT.parent.mkdir(parents=True, exist_ok=True)
            OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result, curve))


if __name__ == "__main__":
    main()
