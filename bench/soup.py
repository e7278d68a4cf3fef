"""Model soups (Wortsman et al. 2022) of the transfer model: K fine-tunes of models/source on the
same labelled target rows, each with its own training seed (order, dropout), averaged in weight
space (a uniform soup: one model, the same inference cost) and, for reference, in logit space (an
ensemble: K models at serving time). Scored by macro-F1 on the target's val and test splits (pick
on val, report test). A lever of the quality aims of issue #11.

Usage (on a workspace whose pretrain stage has run, e.g. the repository root after `make run`):
  .venv/bin/python -m bench.soup WORKSPACE [--budget 200] [--seeds 3] [--members 3]
Seed s draws the labelled subset (as the finetune stage does with seed s); member k trains with
seed s + 1000 k (member 0 is the finetune stage's own model). Run names soup-<budget>-s<s>-m<k>,
checkpoints under WORKSPACE's checkpoint folder, nothing else written there. Prints a JSON line
per seed and a markdown table; writes bench/results/soup-<budget>.json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from bench.wise_ft import budget_of, mean_sd, workspace_parser
from tasks.classification.metrics import classification_metrics
from tasks.classification.model import load_tokenized, predict
from tasks.classification.train import budget_split, fine_tune_on, run_identity
from tasks.common.paths import Paths
from tasks.common.prepared import prepared_split
from tasks.common.training import fingerprint_of, pick_device
from tasks.params import load_params

RESULTS = Path(__file__).resolve().parent / "results"


def scored_split(paths: Paths, split: str, labels: list[str]) -> tuple[list[str], np.ndarray]:
    """A target split's texts and label ids (the ensemble needs the members' logits, not only F1)."""
    rows = prepared_split(paths, "target", split)
    return [row["text"] for row in rows], np.array([labels.index(row["label"]) for row in rows])


def uniform_soup(states: list[dict]) -> dict:
    """The mean of each float tensor over the members (integer buffers such as position ids stay)."""
    return {key: torch.stack([state[key] for state in states]).mean(0) if value.is_floating_point() else value
            for key, value in states[0].items()}


def soup_row(workspace: Path, budget: int | None, seed: int, members: int) -> dict:
    base = load_params(workspace / "params.yaml")
    paths = Paths(workspace)
    labels = list(base.task.labels)
    splits, tokenizer = load_tokenized(paths, "target")
    scored = {split: scored_split(paths, split, labels) for split in ("val", "test")}
    rows, _ = budget_split(splits["train"], budget, seed)

    def logits_of(model, p) -> dict:
        return {split: predict(model, tokenizer, texts, p.evaluate.batch_size, p.tokenize.max_length, pick_device(p.device))
                for split, (texts, _) in scored.items()}

    def f1(logits: dict) -> dict:
        return {split: classification_metrics(truth, logits[split].argmax(-1), labels)["f1_macro"]
                for split, (_, truth) in scored.items()}

    states, member_logits = [], []
    for k in range(members):
        p = base.model_copy(update={"seed": seed + 1000 * k})
        name = f"soup-{budget or 'all'}-s{seed}-m{k}"
        model, _ = fine_tune_on(p, paths, splits, tokenizer, rows, name, fingerprint_of(*run_identity(name, p.finetune, p, budget, splits["train"])))
        states.append({key: value.detach().clone() for key, value in model.state_dict().items()})
        member_logits.append(logits_of(model, p))
    model.load_state_dict(uniform_soup(states))
    ensemble = {split: np.mean([logits[split] for logits in member_logits], axis=0) for split in scored}
    return {"budget": budget or "all", "seed": seed, "members": [f1(logits) for logits in member_logits],
            "soup": f1(logits_of(model, base)), "ensemble": f1(ensemble)}


def table(results: list[dict]) -> str:
    lines = ["| model | val | test |", "|---|---|---|"]
    for kind, pick in (("member 0 (the stage's model)", lambda r: r["members"][0]),
                       ("mean of members", lambda r: {s: np.mean([m[s] for m in r["members"]]) for s in ("val", "test")}),
                       ("uniform soup", lambda r: r["soup"]), ("logit ensemble", lambda r: r["ensemble"])):
        lines.append(f"| {kind} | {mean_sd([pick(r)['val'] for r in results])} | {mean_sd([pick(r)['test'] for r in results])} |")
    return "\n".join(lines)


def main() -> None:
    parser = workspace_parser("bench.soup", __doc__)
    parser.add_argument("--members", type=int, default=3, help="fine-tunes per soup")
    args = parser.parse_args()
    budget = budget_of(args.budget)
    first = load_params(args.workspace / "params.yaml").seed
    results = []
    for seed in range(first, first + args.seeds):
        results.append(soup_row(args.workspace, budget, seed, args.members))
        print(json.dumps(results[-1]), flush=True)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"soup-{args.budget}.json").write_text(json.dumps(results, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
