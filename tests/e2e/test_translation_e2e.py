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

from tests.dvc.test_experiments import check_plots, check_training_curves
from tests.e2e.conftest import make_project, run_ok

REPO = Path(__file__).resolve().parents[2]
STAGES = ["ingest", "tokenize", "pretrain", "finetune", "evaluate", "export"]


def tiny_translation_params(multi30k: Path) -> dict:
    params = yaml.safe_load((REPO / "demos/translation.yaml").read_text())
    for domain in ("source", "target"):
        params["data"][domain].update(path=str(multi30k), max_rows=300)
    params["model"]["scratch"] = {"layers": 2, "decoder_layers": 2, "hidden_size": 32, "heads": 2,
                                  "intermediate_size": 64, "vocab_size": 1000, "dropout": 0.1,
                                  "max_positions": 61}
    params["tokenize"]["max_length"] = 48
    for section in (params["pretrain"], params["finetune"], params["evaluate"]["target_only"]):
        section.update(max_steps=6, eval_steps=3, learning_rate=3e-3, batch_size=16)
    params["evaluate"].update(test_rows=24, samples=5, curve_budgets=[100])
    params["evaluate"]["generation"].update(num_beams=2, max_new_tokens=12)
    params["export"]["parity_samples"] = 12
    params["export"]["max_int8_drop"] = 100.0  # INT8 built and scored; the gate's own tests gate
    return params


@pytest.fixture(scope="module")
def project(tmp_path_factory, multi30k_dir) -> tuple[Path, dict]:
    return make_project(tmp_path_factory.mktemp("translation"), tiny_translation_params(multi30k_dir))


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
