"""Champion / challenger for classification: this run's package (models/onnx) and the champion's
package, each run as it is served (serving.classifier, its serve precision), label the decision
set (the target test split); the paired-bootstrap gain of macro-F1 (points) decides
(tasks.common.promotion). Writes reports/challenge.json. `python -m tasks challenge --champion DIR`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from serving.classifier import OnnxClassifier
from serving.package import PackageError
from tasks.common.errors import HandoffError
from tasks.common.paths import Paths
from tasks.common.prepared import prepared_split
from tasks.common.promotion import write_report
from tasks.common.significance import macro_f1_scorer
from tasks.params import Params

METRIC = "macro-F1"


def load_package(path: Path, role: str, labels: list[str]) -> OnnxClassifier:
    """A package that verifies and labels with the run's task.labels (in any order)."""
    try:
        package = OnnxClassifier(path)
    except PackageError as error:
        raise HandoffError(f"{role} package {path}: {error}") from None
    if sorted(package.labels) != sorted(labels):
        raise HandoffError(f"{role} package {path} predicts {package.labels}, not task.labels {labels}: they cannot be compared")
    return package


def predicted_ids(package: OnnxClassifier, texts: list[str], label_ids: dict[str, int]) -> np.ndarray:
    return np.array([label_ids[label] for label in package.predict(texts)])


def run(p: Params, paths: Paths, champion: Path) -> dict:
    rows = prepared_split(paths, "target", "test")
    texts = [row["text"] for row in rows]
    label_ids = {name: i for i, name in enumerate(p.task.labels)}
    truth = np.array([label_ids[row["label"]] for row in rows])
    packages = {"challenger": load_package(paths.onnx, "challenger", p.task.labels),
                "champion": load_package(champion, "champion", p.task.labels)}
    scorers = {}
    for role, package in packages.items():
        fraction = macro_f1_scorer(truth, predicted_ids(package, texts, label_ids), len(label_ids))
        scorers[role] = lambda rows, score=fraction: 100.0 * score(rows)  # points, as promote.min_gain
    return write_report(p, paths, champion, scorers, len(rows), METRIC)
