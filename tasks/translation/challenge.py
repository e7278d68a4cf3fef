"""Champion / challenger for translation: this run's package (models/onnx) and the champion's
package translate the decision set (the target test split), each with its own manifest's
decoding and serve precision, as it is served (serving.translator); the paired-bootstrap gain of
corpus BLEU (sacrebleu's sentence statistics, as sacrebleu's paired bootstrap) decides
(tasks.common.promotion). Writes reports/challenge.json. `python -m tasks challenge --champion DIR`.
"""

from __future__ import annotations

from pathlib import Path

from serving.package import PackageError
from serving.translator import OnnxTranslator
from tasks.common.errors import HandoffError
from tasks.common.paths import Paths
from tasks.common.prepared import prepared_split
from tasks.common.promotion import write_report
from tasks.params import Params
from tasks.translation.metrics import BleuStatistics

METRIC = "BLEU"


def load_package(path: Path, role: str, pair: dict) -> OnnxTranslator:
    """A package that verifies and translates the run's language pair."""
    try:
        package = OnnxTranslator(path)
    except PackageError as error:
        raise HandoffError(f"{role} package {path}: {error}") from None
    if package.manifest["languages"] != pair:
        raise HandoffError(f"{role} package {path} translates {package.manifest['languages']}, not {pair}: they cannot be compared")
    return package


def run(p: Params, paths: Paths, champion: Path) -> dict:
    rows = prepared_split(paths, "target", "test")
    pair = {"src": p.data.target.languages.src, "tgt": p.data.target.languages.tgt}
    packages = {"challenger": load_package(paths.onnx, "challenger", pair),
                "champion": load_package(champion, "champion", pair)}
    statistics = BleuStatistics([row["tgt"] for row in rows], pair["tgt"])
    sources = [row["src"] for row in rows]
    scorers = {role: statistics.scorer(package.translate(sources)) for role, package in packages.items()}
    decoding = {role: package.decoding() for role, package in packages.items()}
    return write_report(p, paths, champion, scorers, len(rows), METRIC, decoding=decoding)
