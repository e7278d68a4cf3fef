"""The README's figures, measured in one run on this machine:

  1. the default demo, cold, through the Prefect flow (wall time; macro-F1 of transfer and
     every baseline with the full target train set);
  2. the same DAG at `finetune.target_budget=200` through `dvc exp run -S` (only the stages
     that depend on the budget re-run).

Usage:  make bench   (or: .venv/bin/python -m bench.transfer_figures [--budget 200] with the venv on PATH)
It clears the pipeline outputs first (not the DVC cache) and restores params.yaml at the end.
Prints a markdown table and writes bench/results/transfer_figures.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTPUTS = ["data/prepared", "data/tokenized", "models", "checkpoints", "dvclive", "reports", "metrics", "plots"]


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    return time.perf_counter() - start


def scores() -> dict:
    summary = json.loads((ROOT / "metrics/transfer.json").read_text())
    return {"transfer": summary["transfer"], **summary["baselines"]}


def verdict() -> str:
    """transfer vs target_only at the run's own budget: the verdict and its interval, in points."""
    summary = json.loads((ROOT / "metrics/transfer.json").read_text())
    gain = summary.get("interval", {}).get("target_only")
    if gain is None:
        return "-"
    return (f"{summary['verdict']['target_only']}: {summary['gain_over']['target_only'] * 100:+.1f} "
            f"[{gain['low'] * 100:+.1f}, {gain['high'] * 100:+.1f}]")


def clear_outputs() -> None:
    for name in OUTPUTS:
        shutil.rmtree(ROOT / name, ignore_errors=True)
    (ROOT / "dvc.lock").unlink(missing_ok=True)


def table(rows: list[dict]) -> str:
    names = ["transfer", "target_only", "zero_shot", "vader"]
    lines = ["| target labels | " + " | ".join(names) + " | vs target-only, F1 points [95 % CI] | wall time |",
             "|---" * (len(names) + 3) + "|"]
    for row in rows:
        figures = " | ".join(f"{row['scores'].get(n, float('nan')):.3f}" for n in names)
        lines.append(f"| {row['budget']} | {figures} | {row['verdict']} | {row['seconds'] / 60:.1f} min ({row['how']}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=200, help="small target budget to compare (default 200)")
    args = parser.parse_args()
    params_file = ROOT / "params.yaml"
    original = params_file.read_text()
    python = sys.executable
    rows = []
    try:
        clear_outputs()
        seconds = timed([python, "-m", "flows.pipeline"])
        train_rows = json.loads((ROOT / "models/target/finetune.json").read_text())["train_rows"]
        rows.append({"budget": f"all ({train_rows})", "scores": scores(), "verdict": verdict(),
                     "seconds": seconds, "how": "cold, Prefect flow"})
        seconds = timed([python, "-m", "dvc", "exp", "run", "-S", f"finetune.target_budget={args.budget}"])
        rows.append({"budget": args.budget, "scores": scores(), "verdict": verdict(), "seconds": seconds,
                     "how": "dvc exp run, warm"})
    finally:
        params_file.write_text(original)
    result = {"machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores", "rows": rows}
    out = ROOT / "bench/results/transfer_figures.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(table(rows))
    print("\nThe workspace holds the budget experiment; `dvc repro` brings back the default run.")


if __name__ == "__main__":
    main()
