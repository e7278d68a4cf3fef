"""Levers of the transfer model on the real demo data: the default pipeline (movie source ->
amazon target, params.yaml) with one change at a time, at a few label budgets, scored by
macro-F1 on the target's val and test splits: pick on val, report test.

Variants (each a params.yaml override; the source model is trained once per distinct source
setting and shared by the variants that only change fine-tuning):
  default         params.yaml as it is
  lora            finetune.strategy lora (rank 8), its own learning rate (--lora-lr, default 3e-4:
                  adapters train at ~10x a full fine-tune's rate)
  llrd            finetune.strategy llrd (layer-wise learning-rate decay 0.8)
  steps-150       finetune.min_steps 150 (the target-only baseline's floor: 200 labels x 5 epochs
                  are 63 steps)
  lr-2e-5         finetune.learning_rate 2e-5 (gentler on what the source taught)
  mean            model.pooling mean (the source classifier and the fine-tuned one)
  mlm+supervised  pretrain.mode mlm+supervised (200 MLM steps on source text, then supervised)
  source-4ep      pretrain.epochs 4 (twice the default source training)
  target-text     pretrain.mlm_text source+target (the MLM phase also reads the target's train
                  texts, unlabelled: all of them at every budget)
  multi-source    data.source: a directory of the three other sentiment domains (movie reviews,
                  tweets, NYT editorials: 16,372 rows kept, 11,460 to train, against the movies'
                  10,069 and 7,048), same label rule; its own ingest (the target's splits are
                  checked to be the same)
  multi-source+target-text  both: the three-domain source, its MLM phase also reading the target's
                  train texts
  self-training   finetune.self_training, one round: the fine-tuned model labels the target train
                  rows the budget left out; those it predicts with p >= 0.9 join the labelled ones
                  and the source model is fine-tuned again (a budget below all labels only)
  self-training-2 the same, two rounds (the second round's model labels again)

Usage:  .venv/bin/python -m bench.transfer_levers [--budgets 200 all] [--seeds 1] [--all-seeds 1]
                                                  [--variants default lora ...] [--alphas 1 0.8]
Below all labels each model is also scored on the "rest": the target train rows its budget left
out (1,883 at 200 labels, against val's 297), a selection set six times val's size that neither
training nor checkpoint selection saw (their text is read by target-text's MLM phase and by
self-training, unlabelled). --alphas also scores WiSE-FT interpolations of each fine-tuned model
with its source classifier (alpha x fine-tuned + (1 - alpha) x source; 1 = the model as trained).
Ingests and tokenizes the full source and target into a temporary workspace, never the
repository's own outputs. Writes bench/results/transfer-levers.json (--out) after every model (a long
run that stops keeps what it measured) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from bench.levers import SENTIMENT, demo_params_raw, rows_f1
from tasks.classification import ingest, pretrain, tokenize
from tasks.classification.model import load_tokenized
from tasks.classification.train import budget_indices, fine_tune, interpolated, source_classifier_weights
from tasks.common.prepared import prepared_split
from tasks.common.paths import Paths
from tasks.params import Params, parse_params

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench/results/transfer-levers.json"

VARIANTS: dict[str, dict[str, object]] = {
    "default": {},
    "lora": {"finetune.strategy": "lora"},  # + finetune.learning_rate: --lora-lr
    "llrd": {"finetune.strategy": "llrd"},
    "steps-150": {"finetune.min_steps": 150},
    "lr-2e-5": {"finetune.learning_rate": 2.0e-5},
    "mean": {"model.pooling": "mean"},
    "mlm+supervised": {"pretrain.mode": "mlm+supervised"},
    "source-4ep": {"pretrain.epochs": 4.0},
    "target-text": {"pretrain.mlm_text": "source+target"},
    "multi-source": {"data.source.path": "@multi-source"},
    "multi-source+target-text": {"data.source.path": "@multi-source", "pretrain.mlm_text": "source+target"},
    "self-training": {"finetune.self_training": {"rounds": 1, "min_confidence": 0.9}},
    "self-training-2": {"finetune.self_training": {"rounds": 2, "min_confidence": 0.9}},
}
SOURCE_KEYS = ("model.", "pretrain.", "data.")  # overrides that change the source model
# Source directories a variant names by "@name": the bench links these shared files into one.
SOURCE_DIRS = {
    "multi-source": ["movieReviewSnippets_GroundTruth.txt", "tweets_GroundTruth.txt", "nytEditorialSnippets_GroundTruth.txt"],
}


def linked_source_dir(base: Path, name: str) -> Path:
    """A directory of symlinks to the shared files SOURCE_DIRS[name] lists (made once)."""
    directory = base / "source-dirs" / name
    if not directory.exists():
        directory.mkdir(parents=True)
        for file_name in SOURCE_DIRS[name]:
            (directory / file_name).symlink_to(SENTIMENT / file_name)
    return directory


def resolved(overrides: dict[str, object], base: Path) -> dict[str, object]:
    """The overrides with each "@name" source directory made and replaced by its path."""
    return {key: str(linked_source_dir(base, value[1:])) if isinstance(value, str) and value.startswith("@") else value
            for key, value in overrides.items()}


def overridden(raw: dict, overrides: dict[str, object]) -> dict:
    raw = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = raw
        for key in parents:
            node = node[key]
        node[leaf] = value
    return raw


def variant_params(overrides: dict[str, object], seed_offset: int) -> Params:
    raw = overridden(demo_params_raw(), overrides)
    raw["seed"] += seed_offset
    return parse_params(raw, "bench.transfer_levers")


def source_setting(overrides: dict[str, object]) -> str:
    """The part of a variant that changes the source model: variants sharing it share one."""
    return json.dumps({k: v for k, v in overrides.items() if k.startswith(SOURCE_KEYS)}, sort_keys=True)


def workspace_for(base: Path, overrides: dict[str, object], workspaces: dict[str, Paths]) -> tuple[Paths, bool]:
    """One workspace per source setting, sharing the ingested and tokenized data unless the
    variant reads other source data (then it ingests its own: same target splits, checked)."""
    setting = source_setting(overrides)
    if setting in workspaces:
        return workspaces[setting], False
    root = base / f"source-{len(workspaces)}"
    (root / "data").mkdir(parents=True)
    paths = Paths(root)
    if any(key.startswith("data.") for key in overrides):
        p = variant_params(overrides, 0)
        ingest.run(p, paths)
        tokenize.run(p, paths)
        require_same_target(paths, Paths(base / "shared"))
    else:
        for name in ("prepared", "tokenized"):
            (root / "data" / name).symlink_to(base / "shared" / "data" / name)
    workspaces[setting] = paths
    return paths, True


def require_same_target(paths: Paths, shared: Paths) -> None:
    """Variants are compared on one target: another source must not move its splits."""
    for split in ("train", "val", "test"):
        mine, theirs = (p.split_file("target", split) for p in (paths, shared))
        if mine.read_bytes() != theirs.read_bytes():
            raise SystemExit(f"bench.transfer_levers: target {split} split differs from the default ingest's ({mine})")


def scored_sets(paths: Paths, splits, budget: int | None, seed: int) -> dict[str, list[dict]]:
    """The prepared rows a model is scored on: val, test and (below all labels) the rest."""
    sets = {split: prepared_split(paths, "target", split) for split in ("val", "test")}
    left_out = budget_indices(splits["train"], budget, seed)[1]  # the tokenized split keeps the prepared one's order
    if left_out:
        train = prepared_split(paths, "target", "train")
        sets["rest"] = [train[index] for index in left_out]
    return sets


def wise_scores(model, tokenizer, p: Params, paths: Paths, sets: dict, alphas: list[float]):
    """(alpha, {set: macro-F1}) for each alpha: the model interpolated with its source classifier."""
    tuned = {key: value.detach().clone() for key, value in model.state_dict().items()}
    source = None if alphas == [1.0] else source_classifier_weights(p, paths)
    for alpha in alphas:
        model.load_state_dict(tuned if alpha == 1.0 else interpolated(tuned, source, alpha))
        yield alpha, {name: rows_f1(model, tokenizer, p, rows) for name, rows in sets.items()}


def save(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", nargs="+", default=["200", "all"], help="target labels per model (or all)")
    parser.add_argument("--seeds", type=int, default=1, help="fine-tunes per variant and budget: seed, seed+1, ...")
    parser.add_argument("--all-seeds", type=int, default=1, help="--seeds for the all-labels budget (5 min each)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=OUT, help=f"results file (default {OUT.relative_to(ROOT)})")
    parser.add_argument("--lora-lr", type=float, default=3e-4, help="finetune.learning_rate of the lora variant")
    parser.add_argument("--alphas", type=float, nargs="+", default=[1.0], help="WiSE-FT alphas scored per model (1: as trained)")
    args = parser.parse_args()
    budgets = [None if b == "all" else int(b) for b in args.budgets]
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "sources": {}, "rows": []}
    with tempfile.TemporaryDirectory(prefix="transfer-levers-") as tmp:
        base = Path(tmp)
        shared = Paths(base / "shared")
        default = variant_params({}, 0)
        ingest.run(default, shared)
        tokenize.run(default, shared)
        splits, tokenizer = load_tokenized(shared, "target")
        result["target_splits"] = {name: len(splits[name]) for name in splits}
        workspaces: dict[str, Paths] = {}
        for variant in args.variants:
            overrides = {**VARIANTS[variant], **({"finetune.learning_rate": args.lora_lr} if variant == "lora" else {})}
            overrides = resolved(overrides, base)
            paths, fresh = workspace_for(base, overrides, workspaces)
            if fresh:
                started = time.perf_counter()
                log = pretrain.run(variant_params(overrides, 0), paths)
                result["sources"][variant] = {"val": log.get("val"), "seconds": time.perf_counter() - started}
                print(f"source model for {variant}: {result['sources'][variant]}", flush=True)
            for budget in budgets:
                for index in range(args.seeds if budget else args.all_seeds):
                    p = variant_params(overrides, index)
                    started = time.perf_counter()
                    model, log = fine_tune(p, paths, splits, tokenizer, budget, f"levers-{variant}-{budget}-{p.seed}")
                    seconds = time.perf_counter() - started
                    sets = scored_sets(paths, splits, budget, p.seed)
                    for alpha, f1 in wise_scores(model, tokenizer, p, paths, sets, args.alphas):
                        result["rows"].append({
                            "variant": variant, "budget": budget or "all", "seed": p.seed, "alpha": alpha,
                            "train_rows": log["train_rows"], **{f"{name}_f1_macro": value for name, value in f1.items()},
                            "seconds": seconds, **({"self_training": log["self_training"]} if "self_training" in log else {}),
                        })
                        print(json.dumps(result["rows"][-1]), flush=True)
                    save(result, args.out)
    print_table(result["rows"])
    print_means(result["rows"])


def print_table(rows: list[dict]) -> None:
    print("| variant | labels | seed | alpha | val macro-F1 | rest macro-F1 | test macro-F1 | time |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        rest = f"{row['rest_f1_macro']:.3f}" if "rest_f1_macro" in row else "-"
        print(f"| {row['variant']} | {row['budget']} | {row['seed']} | {row.get('alpha', 1.0):g} | {row['val_f1_macro']:.3f} | "
              f"{rest} | {row['test_f1_macro']:.3f} | {row['seconds']:.0f} s |")


def print_means(rows: list[dict]) -> None:
    """Per variant, budget and alpha: the mean over seeds of each score (test: ± sample sd)."""
    print("| variant | labels | alpha | seeds | val | rest | test |")
    print("|---|---|---|---|---|---|---|")
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["variant"], str(row["budget"]), row.get("alpha", 1.0)), []).append(row)
    for (variant, budget, alpha), group in groups.items():
        test = [row["test_f1_macro"] for row in group]
        spread = f" ± {statistics.stdev(test):.3f}" if len(test) > 1 else ""
        print(f"| {variant} | {budget} | {alpha:g} | {len(group)} | {mean_of(group, 'val_f1_macro')} | "
              f"{mean_of(group, 'rest_f1_macro')} | {mean_of(group, 'test_f1_macro')}{spread} |")


def mean_of(rows: list[dict], key: str) -> str:
    values = [row[key] for row in rows if key in row]
    return f"{statistics.mean(values):.3f}" if values else "-"


if __name__ == "__main__":
    main()
