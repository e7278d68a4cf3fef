"""Is a gain real? Paired bootstrap over test rows, averaged over seeds, and the verdict it
supports. Kind-neutral: a kind passes a function that scores a model on a resample of test rows
(macro-F1 from labels, BLEU from sacrebleu's sufficient statistics), this module does the rest.

The interval is the percentile interval of score(A) - score(B) over resamples of the test rows,
both models scored on the same resample (paired, as sacrebleu's paired bootstrap does); with
several seeds each resample's gain is the mean over seeds of the per-seed gains, so the
interval covers test-set sampling, and seeds are averaged rather than treated as rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

HELPS, NO_DIFFERENCE, HURTS = "helps", "no difference", "hurts"

# scores one model's predictions (one seed) on a resample: row indices -> a figure
Scorer = Callable[[np.ndarray], float]


def resamples(n_rows: int, count: int, seed: int) -> np.ndarray:
    """`count` bootstrap resamples of `n_rows` row indices, as a (count, n_rows) array; seeded,
    so a report can be reproduced."""
    if n_rows < 1:
        raise ValueError("a bootstrap needs at least one test row")
    return np.random.default_rng(seed).integers(0, n_rows, size=(count, n_rows))


def verdict(low: float, high: float) -> str:
    """An interval above 0 helps, below 0 hurts; one that holds 0 is no difference."""
    if low > 0:
        return HELPS
    if high < 0:
        return HURTS
    return NO_DIFFERENCE


def paired_gain(
    model: Sequence[Scorer], baseline: Sequence[Scorer], n_rows: int,
    count: int = 1000, confidence: float = 0.95, seed: int = 12345,
) -> dict:
    """The gain of `model` over `baseline` (one scorer per seed each, paired by position: seed
    i of one against seed i of the other) on all rows, its bootstrap interval and verdict."""
    if len(model) != len(baseline) or not model:
        raise ValueError(f"paired_gain needs the same number of seeds on both sides, got {len(model)} and {len(baseline)}")
    everything = np.arange(n_rows)
    gain = float(np.mean([a(everything) - b(everything) for a, b in zip(model, baseline)]))
    draws = resamples(n_rows, count, seed)
    gains = np.array([np.mean([a(rows) - b(rows) for a, b in zip(model, baseline)]) for rows in draws])
    tail = (1.0 - confidence) / 2 * 100
    low, high = (float(x) for x in np.percentile(gains, [tail, 100 - tail]))
    return {"gain": gain, "low": low, "high": high, "confidence": confidence, "resamples": count,
            "seeds": len(model), "verdict": verdict(low, high)}


def spread(values: Sequence[float]) -> dict:
    """Mean and spread of one figure over seeds (std is the sample std; 0 for one seed)."""
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "min": float(array.min()), "max": float(array.max()),
            "per_seed": [float(x) for x in array]}


def macro_f1_scorer(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> Scorer:
    """Macro-F1 of `predicted` against `truth` on a resample of rows (classes with no true and no
    predicted row on the resample count 0, as sklearn's zero_division=0 does), vectorized."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)

    def score(rows: np.ndarray) -> float:
        t, p = truth[rows], predicted[rows]
        true_positive = np.bincount(t[t == p], minlength=n_classes)
        predicted_count = np.bincount(p, minlength=n_classes)
        true_count = np.bincount(t, minlength=n_classes)
        denominator = predicted_count + true_count
        f1 = np.divide(2 * true_positive, denominator, out=np.zeros(n_classes), where=denominator > 0)
        return float(f1.mean())

    return score


# ---------------------------------------------------------------- budget curves

# runs[budget][model]: one scorer per seed (a flat baseline, which no budget changes: the same
# scorer repeated), every model of a budget with the same number of seeds.
Runs = dict[str, dict[str, list[Scorer]]]


def budget_report(runs: Runs, train_rows: dict[str, int], n_rows: int, primary: str,
                  count: int, confidence: float, seed: int = 12345) -> dict:
    """Per budget: the rows trained on, each model's figure over seeds (mean, spread) and the
    primary model's paired gain over every other model, with its interval and verdict."""
    everything = np.arange(n_rows)
    report = {}
    for budget, models in runs.items():
        report[budget] = {
            "train_rows": train_rows[budget],
            "seeds": len(models[primary]),
            "scores": {name: spread([score(everything) for score in scorers]) for name, scorers in models.items()},
            "gain_over": {name: paired_gain(models[primary], scorers, n_rows, count, confidence, seed)
                          for name, scorers in models.items() if name != primary},
        }
    return report


def curve_rows(report: dict) -> list[dict]:
    """The plot's rows, one per budget by rows trained on: each model's mean over seeds, and
    its mean -/+ one std as `<model>_low` / `<model>_high`."""
    rows = []
    for entry in sorted(report.values(), key=lambda e: e["train_rows"]):
        row: dict = {"budget": entry["train_rows"]}
        for name, figure in entry["scores"].items():
            row[name] = figure["mean"]
            row[f"{name}_low"], row[f"{name}_high"] = figure["mean"] - figure["std"], figure["mean"] + figure["std"]
        rows.append(row)
    return rows


def curve_sentence(report: dict, baseline: str, unit: str, primary: str = "transfer") -> str:
    """What the curve supports, e.g. "transfer vs target_only: helps at 32-256 labels; no
    difference at 512-all": consecutive budgets with one verdict grouped, smallest first."""
    entries = sorted(((key, e) for key, e in report.items() if baseline in e["gain_over"]), key=lambda ke: ke[1]["train_rows"])
    if not entries:
        return ""
    groups: list[tuple[str, list[str]]] = []
    for key, entry in entries:
        said = entry["gain_over"][baseline]["verdict"]
        if groups and groups[-1][0] == said:
            groups[-1][1].append(key)
        else:
            groups.append((said, [key]))
    parts = [f"{said} at {keys[0] if len(keys) == 1 else keys[0] + '-' + keys[-1]} {unit}" for said, keys in groups]
    return f"{primary} vs {baseline}: " + "; ".join(parts)


def headline(gain: dict, baseline: str, where: str, scale: float = 1.0, unit: str = "points",
             primary: str = "transfer") -> str:
    """One line a person reads first, e.g. "transfer vs target_only at all labels: no difference
    (gain -0.2 points, 95 % CI [-1.4, +1.1], 1 seed)"; `scale` turns a 0-1 figure into points."""
    seeds = f"{gain['seeds']} seed" + ("s" if gain["seeds"] != 1 else "")
    return (f"{primary} vs {baseline} at {where}: {gain['verdict']} (gain {gain['gain'] * scale:+.1f} {unit}, "
            f"{gain['confidence'] * 100:g} % CI [{gain['low'] * scale:+.1f}, {gain['high'] * scale:+.1f}], {seeds})")
