"""The real thing for task.kind translation, small: a workspace made by `flows.workspace` from
demos/translation.yaml shrunk to 300 Multi30k pairs and a 2-layer model, `dvc repro` over the six
stages, then the real Prefect flow (nothing re-runs, dvc.lock unchanged)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from tests.dvc.conftest import STAGES, make_workspace, run_ok, tiny_translation
from tests.dvc.test_experiments import check_plots, check_training_curves



@pytest.fixture(scope="module")
def project(tmp_path_factory, multi30k_dir) -> tuple[Path, dict]:
    """demos/translation.yaml shrunk (tests/dvc/conftest.py: 300 pairs, a 2-layer model)."""
    return make_workspace(tmp_path_factory.mktemp("translation"), tiny_translation(multi30k_dir))


def test_translation_through_dvc_repro_then_the_flow(project):
    root, env = project
    run_ok([sys.executable, "-m", "dvc", "repro"], root, env)
    lock = (root / "dvc.lock").read_text()
    assert set(yaml.safe_load(lock)["stages"]) == set(STAGES)

    data = json.loads((root / "reports/data.json").read_text())
    assert data["target"]["splits"]["test"]["rows"] == 1000, "the frozen test split stays whole"
    scores = json.loads((root / "metrics/scores.json").read_text())
    assert set(scores) >= {"transfer", "target_only", "zero_shot"}
    for name, by_decoding in scores.items():
        for decoding in ("greedy", "beam"):
            assert 0.0 <= by_decoding[decoding]["bleu"] <= 100.0, (name, decoding)
            assert 0.0 <= by_decoding[decoding]["chrf"] <= 100.0, (name, decoding)
    transfer = json.loads((root / "metrics/transfer.json").read_text())
    assert transfer["gain_over"]["target_only"]["bleu"] == pytest.approx(
        transfer["transfer"] - transfer["baselines"]["target_only"])
    predictions = (root / "reports/evaluate/predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 24
    # `dvc plots show` with the same dvc.yaml as classification: no error, each plot drawn once,
    # the evaluate plot is the budget curve with one series per model
    rows = check_plots(root, env)
    check_training_curves(rows)
    assert {source for source in rows if source.startswith("plots/")} == {"plots/translation/budget_curve.json"}
    budget_rows = rows["plots/translation/budget_curve.json"]
    assert {row["field"] for row in budget_rows} == {"transfer", "target_only"}
    assert len({row["budget"] for row in budget_rows}) == 2  # the run's own budget and curve_budgets [100]
    manifest = json.loads((root / "models/onnx/manifest.json").read_text())
    assert manifest["task"] == "translation" and manifest["opset"] >= 17
    assert {"encoder.onnx", "decoder.onnx", "decoder_with_past.onnx"} <= set(os.listdir(root / "models/onnx"))

    flow = run_ok([sys.executable, "-m", "flows.pipeline"], root, env)
    assert (root / "dvc.lock").read_text() == lock, "the flow after dvc repro must change nothing"
    assert "Running stage" not in flow.stdout + flow.stderr
