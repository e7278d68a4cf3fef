"""Champion / challenger: does this run's package (the challenger) replace the one being served
(the champion)? Kind-neutral: a kind scores both packages on the decision set (the target test
split) and passes one Scorer each; this module takes the paired-bootstrap gain and decides.

Promoted only when the gain on the primary metric is at least promote.min_gain points and, with
promote.bootstrap, the interval of the gain lies above 0: a nightly job over unchanged or
slightly changed data then keeps the champion instead of shipping noise.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from tasks.common.io import write_json_atomic
from tasks.common.paths import Paths
from tasks.common.significance import Scorer, paired_gain
from tasks.params import Params, PromoteParams


def decide(challenger: Scorer, champion: Scorer, n_rows: int, pp: PromoteParams, metric: str, seed: int) -> dict:
    """The gain of challenger over champion in points of `metric`, its interval, and the decision."""
    gain = paired_gain([challenger], [champion], n_rows, pp.resamples, pp.confidence, seed=seed)
    enough = gain["gain"] >= pp.min_gain
    significant = not pp.bootstrap or gain["low"] > 0
    reasons = []
    if not enough:
        reasons.append(f"gain {gain['gain']:+.2f} is under promote.min_gain {pp.min_gain:g}")
    if not significant:
        reasons.append(f"its {gain['confidence']:.0%} interval does not exclude 0")
    return {
        "promote": enough and significant,
        "metric": metric,
        "gain": round(gain["gain"], 4),
        "interval": [round(gain["low"], 4), round(gain["high"], 4)],
        "confidence": gain["confidence"],
        "resamples": gain["resamples"],
        "min_gain": pp.min_gain,
        "bootstrap": pp.bootstrap,
        "reason": "; ".join(reasons) or "gain over promote.min_gain" + (", interval above 0" if pp.bootstrap else ""),
    }


def decision_line(decision: dict, champion: str = "champion") -> str:
    """One line for the run log: 'kept champion v3: gain +0.20 macro-F1, 95 % CI [-1.10, +1.50] (...)'."""
    low, high = decision["interval"]
    figures = (f"gain {decision['gain']:+.2f} {decision['metric']}, {decision['confidence']:.0%} CI "
               f"[{low:+.2f}, {high:+.2f}]")
    verb = f"promoted the challenger over {champion}" if decision["promote"] else f"kept {champion}"
    return f"{verb}: {figures} ({decision['reason']})"


def file_digest(path: Path) -> str:
    """sha256 of the decision set's file, so a report says which rows decided."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_report(p: Params, paths: Paths, champion: Path, scorers: dict[str, Scorer], rows: int, metric: str,
                 **extra) -> dict:
    """Decide on the challenger's and the champion's scorers over the `rows` decision-set rows,
    and write reports/challenge.json: the decision, both scores, the packages, `extra` (a kind's
    own figures) and which rows decided (file, count, sha256)."""
    decision_set = paths.split_file("target", "test")
    everything = np.arange(rows)
    report = {
        "decision": decide(scorers["challenger"], scorers["champion"], rows, p.promote, metric, p.seed),
        "scores": {role: round(score(everything), 4) for role, score in scorers.items()},
        **extra,
        "packages": {"challenger": str(paths.onnx), "champion": str(champion)},
        "decision_set": {"file": str(decision_set), "rows": rows, "sha256": file_digest(decision_set)},
    }
    write_json_atomic(paths.challenge_report, report)
    return report
