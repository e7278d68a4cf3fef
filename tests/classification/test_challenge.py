"""python -m tasks challenge for classification: the run's package against a champion package on
the decision set (the tiny exported workspace of tests/serving/test_classifier.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from serving.classifier import OnnxClassifier
from tasks.classification import challenge
from tasks.common.errors import HandoffError
from tasks.common.paths import Paths
from tasks.common.prepared import prepared_split
from tests.serving.test_classifier import LABELS, export_params

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.fixture
def champion(exported, tmp_path):
    """The very package of the run, copied elsewhere as if fetched from the registry."""
    return shutil.copytree(exported[0].onnx, tmp_path / "champion")


def test_a_package_against_itself_scores_alike_and_keeps_the_champion(exported_copy: Paths, champion):
    report = challenge.run(export_params(), exported_copy, champion)
    rows = prepared_split(exported_copy, "target", "test")
    assert report["scores"]["challenger"] == report["scores"]["champion"]
    assert report["decision"]["promote"] is False and report["decision"]["interval"] == [0.0, 0.0]
    assert report["decision_set"]["rows"] == len(rows) > 0 and len(report["decision_set"]["sha256"]) == 64
    assert json.loads(exported_copy.challenge_report.read_text()) == report
    predicted = OnnxClassifier(champion).predict([row["text"] for row in rows])
    assert predicted and set(predicted) <= set(LABELS)


def test_a_better_challenger_is_promoted_and_min_gain_can_keep_the_champion(exported_copy, champion, monkeypatch):
    """The challenger labels every row right, the champion says one label for all."""
    rows = prepared_split(exported_copy, "target", "test")
    truth = {row["text"]: row["label"] for row in rows}
    monkeypatch.setattr(OnnxClassifier, "predict", lambda self, texts: [
        truth[text] if self.package == exported_copy.onnx else LABELS[0] for text in texts
    ])
    report = challenge.run(export_params(), exported_copy, champion)
    assert report["scores"]["challenger"] > 99 > 70 > report["scores"]["champion"]  # (a repeated text may carry two labels)
    assert report["decision"]["promote"] is True and report["decision"]["interval"][0] > 0
    strict = export_params().model_copy(update={"promote": export_params().promote.model_copy(update={"min_gain": 100.0})})
    assert challenge.run(strict, exported_copy, champion)["decision"]["promote"] is False


def test_a_champion_with_other_labels_is_refused_in_one_line(exported_copy, champion, monkeypatch):
    load = OnnxClassifier.__init__

    def other_labels(self, package, *args, **kwargs):
        load(self, package, *args, **kwargs)
        if self.package == champion:
            self.labels = ["bug", "feature"]

    monkeypatch.setattr(OnnxClassifier, "__init__", other_labels)
    with pytest.raises(HandoffError, match=r"^champion package .* predicts \['bug', 'feature'\], not task.labels"):
        challenge.run(export_params(), exported_copy, champion)


@pytest.mark.parametrize("argv, expected", [
    (["challenge"], "error: challenge: expected --champion DIR [--name NAME], got no options; usage: python -m tasks"),
    (["challenge", "--champ", "x"], "error: challenge: expected --champion DIR [--name NAME], got '--champ x'; usage:"),
    (["decision-set", "--rest"], "error: decision-set: expected no option or --reset, got '--rest'; usage:"),
])
def test_bad_options_say_what_was_expected_and_what_came(capsys, argv, expected):
    from tasks.__main__ import main

    with pytest.raises(SystemExit) as stopped:
        main(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 1 and err.startswith(expected) and err.count("\n") == 1


def test_the_command_prints_the_decision_and_names_a_missing_champion(exported_copy, champion):
    (exported_copy.root / "params.yaml").write_text(yaml.safe_dump(export_params().model_dump(mode="json")))
    run = lambda *args: subprocess.run([sys.executable, "-m", "tasks", "challenge", *args], cwd=exported_copy.root,  # noqa: E731
                                       env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
                                       capture_output=True, text=True, timeout=120)
    kept = run("--champion", str(champion), "--name", "v1")
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.startswith("kept v1: gain +0.00 macro-F1, 95% CI [+0.00, +0.00]")
    missing = run("--champion", str(exported_copy.root / "nowhere"))
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert missing.stderr.startswith("error: challenge: champion package") and "nowhere" in missing.stderr
    usage = run("--champ", "x")
    assert usage.returncode == 1 and "usage: python -m tasks" in usage.stderr
    assert np.isfinite(json.loads(exported_copy.challenge_report.read_text())["scores"]["challenger"])
