"""The budget curve and its verdicts: every model retrained per budget and seed on tiny models,
and the paired bootstrap that decides "helps" / "no difference" / "hurts"."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.classification import evaluate, finetune
from tasks.classification.model import load_tokenized
from tasks.classification.train import budget_subset
from tasks.common.io import read_json
from tasks.common.significance import (
    HELPS,
    HURTS,
    NO_DIFFERENCE,
    budget_report,
    curve_sentence,
    macro_f1_scorer,
    paired_gain,
)


@pytest.fixture
def workspace(pretrained_copy):
    return pretrained_copy


def noisy_copy(truth: np.ndarray, accuracy: float, seed: int) -> np.ndarray:
    """Predictions that agree with `truth` on about `accuracy` of the rows."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random(len(truth)) < accuracy, truth, 1 - truth)


TRUTH = np.random.default_rng(0).integers(0, 2, 400)


def test_a_model_against_itself_is_no_difference():
    scorer = macro_f1_scorer(TRUTH, noisy_copy(TRUTH, 0.8, 1), 2)
    gain = paired_gain([scorer, scorer], [scorer, scorer], len(TRUTH), count=300)
    assert gain["gain"] == 0.0 and gain["low"] <= 0.0 <= gain["high"]
    assert gain["verdict"] == NO_DIFFERENCE


def test_a_crippled_baseline_makes_transfer_help_and_the_reverse_hurt():
    good = [macro_f1_scorer(TRUTH, noisy_copy(TRUTH, 0.85, seed), 2) for seed in (1, 2)]
    crippled = [macro_f1_scorer(TRUTH, noisy_copy(TRUTH, 0.55, seed), 2) for seed in (3, 4)]
    helps = paired_gain(good, crippled, len(TRUTH), count=300)
    assert helps["verdict"] == HELPS and 0 < helps["low"] < helps["gain"] < helps["high"]
    assert paired_gain(crippled, good, len(TRUTH), count=300)["verdict"] == HURTS


def test_two_close_models_are_no_difference_when_the_interval_holds_zero():
    # two predictors that differ on a handful of the 400 rows
    base = noisy_copy(TRUTH, 0.8, 1)
    other = base.copy()
    other[:4] = 1 - other[:4]
    gain = paired_gain([macro_f1_scorer(TRUTH, other, 2)], [macro_f1_scorer(TRUTH, base, 2)], len(TRUTH), count=500)
    assert gain["low"] < 0 < gain["high"] and gain["verdict"] == NO_DIFFERENCE


def test_the_curve_sentence_groups_budgets_with_one_verdict():
    runs = {}
    for key, accuracy in (("32", 0.55), ("64", 0.6), ("all", 0.85)):
        runs[key] = {"transfer": [macro_f1_scorer(TRUTH, noisy_copy(TRUTH, 0.85, 1), 2)],
                     "target_only": [macro_f1_scorer(TRUTH, noisy_copy(TRUTH, accuracy, 2), 2)]}
    report = budget_report(runs, {"32": 32, "64": 64, "all": 500}, len(TRUTH), "transfer", 300, 0.95)
    assert [report[k]["gain_over"]["target_only"]["verdict"] for k in ("32", "64")] == [HELPS, HELPS]
    sentence = curve_sentence(report, "target_only", "labels")
    assert sentence.startswith("transfer vs target_only: helps at 32-64 labels; ")


def test_each_seed_draws_its_own_stratified_subset(tokenized_workspace):
    from tasks.common.paths import Paths

    splits, _ = load_tokenized(Paths(tokenized_workspace), "target")
    first, second = (budget_subset(splits["train"], 20, seed) for seed in (7, 8))
    assert len(first) == len(second) == 20
    assert first["input_ids"] != second["input_ids"]
    assert sorted(first["labels"]) == sorted(second["labels"])  # the same class counts: stratified


def test_a_curve_of_two_budgets_and_two_seeds_writes_every_figure(workspace, params, monkeypatch):
    p = params(**{"evaluate.curve_budgets": [20], "evaluate.seeds": 2,
                  "evaluate.baselines": ["target_only", "zero_shot"], "evaluate.bootstrap_resamples": 200})
    # SetFit itself needs a pretrained body (tests/classification/test_setfit_baseline.py runs it);
    # here a stand-in records the rows it is given, so the curve's wiring is what is checked
    p = p.model_copy(update={"evaluate": p.evaluate.model_copy(update={"baselines": ["target_only", "zero_shot", "setfit"]})})
    given = []

    def fake_setfit(seeded, rows, texts):
        given.append((seeded.seed, tuple(sorted(row["text"] for row in rows))))
        return np.zeros(len(texts), dtype=np.int64), {"train_rows": len(rows)}

    monkeypatch.setattr(evaluate, "setfit_predictions", fake_setfit)
    finetune.run(p, workspace)
    summary = evaluate.run(p, workspace)
    assert set(summary["by_budget"]) == {"20", "all"} and summary["budget"] == "all"
    # SetFit trained once per budget and seed (own budget, seed 7 first), on that seed's subset
    assert [seed for seed, _ in given] == [7, 7, 8, 8]
    at_20 = {seed: rows for seed, rows in given if len(rows) == 20}
    assert set(at_20) == {7, 8} and at_20[7] != at_20[8]
    for entry in summary["by_budget"].values():
        assert entry["seeds"] == 2
        assert set(entry["scores"]) == {"transfer", "target_only", "zero_shot", "setfit"}
        assert len(entry["scores"]["transfer"]["per_seed"]) == 2
        for gain in entry["gain_over"].values():
            assert gain["low"] <= gain["gain"] <= gain["high"]
            assert gain["verdict"] in (HELPS, NO_DIFFERENCE, HURTS)
    # the run's own models are seed 7 at its own budget: their figures head the report
    own = summary["by_budget"]["all"]["scores"]
    assert own["transfer"]["per_seed"][0] == pytest.approx(summary["transfer"])
    assert own["target_only"]["per_seed"][0] == pytest.approx(summary["baselines"]["target_only"])
    # zero-shot is a flat line: the same figure at every budget and seed
    flat = {v for e in summary["by_budget"].values() for v in e["scores"]["zero_shot"]["per_seed"]}
    assert len(flat) == 1
    assert summary["verdict"]["target_only"] == summary["by_budget"]["all"]["gain_over"]["target_only"]["verdict"]
    curve = read_json(workspace.kind_plots("classification") / "budget_curve.json")
    assert [row["budget"] for row in curve] == [20, summary["by_budget"]["all"]["train_rows"]]
    assert all({"transfer", "target_only", "zero_shot", "setfit", "transfer_low", "transfer_high"} <= set(row) for row in curve)
    assert "budget_curve.json" in workspace.plot_definitions.read_text()
    assert read_json(workspace.metrics / "transfer.json") == summary
