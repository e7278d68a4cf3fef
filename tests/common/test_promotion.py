"""The champion/challenger decision (tasks.common.promotion) on scorers with known answers."""

from __future__ import annotations

import numpy as np

from tasks.common.promotion import decide, decision_line
from tasks.params import PromoteParams

ROWS = 400


def per_row(correct: np.ndarray):
    """A scorer: accuracy in points of a model right on the rows where `correct` is True."""
    return lambda rows: 100.0 * float(correct[rows].mean())


def test_a_model_against_itself_keeps_the_champion():
    same = per_row(np.random.default_rng(0).random(ROWS) < 0.8)
    decision = decide(same, same, ROWS, PromoteParams(), "accuracy", seed=1)
    assert decision["promote"] is False and decision["gain"] == 0.0 and decision["interval"] == [0.0, 0.0]
    assert "does not exclude 0" in decision["reason"]
    assert decision_line(decision, "v3").startswith("kept v3: gain +0.00 accuracy, 95% CI [+0.00, +0.00]")


def test_a_clearly_better_challenger_is_promoted_and_min_gain_can_stop_it():
    rng = np.random.default_rng(0)
    better, worse = per_row(rng.random(ROWS) < 0.9), per_row(rng.random(ROWS) < 0.6)
    decision = decide(better, worse, ROWS, PromoteParams(), "accuracy", seed=1)
    assert decision["promote"] is True and decision["interval"][0] > 0 and decision["gain"] > 20
    assert decision_line(decision, "v3").startswith("promoted the challenger over v3: gain +")
    strict = decide(better, worse, ROWS, PromoteParams(min_gain=99.0), "accuracy", seed=1)
    assert strict["promote"] is False and "under promote.min_gain 99" in strict["reason"]


def test_without_the_bootstrap_a_small_noisy_gain_promotes():
    rng = np.random.default_rng(3)
    base = rng.random(ROWS) < 0.8
    flipped = base.copy()
    flipped[np.flatnonzero(~base)[:2]] = True  # two more rows right: +0.5 points, within the noise
    with_bootstrap = decide(per_row(flipped), per_row(base), ROWS, PromoteParams(), "accuracy", seed=1)
    without = decide(per_row(flipped), per_row(base), ROWS, PromoteParams(bootstrap=False), "accuracy", seed=1)
    assert with_bootstrap["gain"] == without["gain"] == 0.5
    assert with_bootstrap["promote"] is False and without["promote"] is True
