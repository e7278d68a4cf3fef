"""The real thing, small: `dvc repro` over the six stages on 200-row real subsets with a
2-layer scratch model, then the real Prefect flow (nothing re-runs, dvc.lock unchanged), then
`dvc exp run -S finetune.learning_rate=3e-5`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import make_project, run_ok

REPO = Path(__file__).resolve().parents[2]
STAGES = ["ingest", "tokenize", "pretrain", "finetune", "evaluate", "export"]


def tiny_params(movie_file: Path, amazon_file: Path) -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for domain, file in (("source", movie_file), ("target", amazon_file)):
        params["data"][domain].update(path=str(file), max_rows=200)
    params["model"] = {"init": "scratch", "scratch": {"layers": 2, "hidden_size": 32, "heads": 2,
                                                      "intermediate_size": 64, "vocab_size": 1000}}
    params["tokenize"]["max_length"] = 64
    for section in (params["pretrain"], params["finetune"], params["evaluate"]["target_only"]):
        section.update(max_steps=6, eval_steps=3, learning_rate=1e-3)
    params["export"]["parity_samples"] = 16
    return params


@pytest.fixture(scope="module")
def project(tmp_path_factory, movie_file, amazon_file) -> tuple[Path, dict]:
    return make_project(tmp_path_factory.mktemp("classification"), tiny_params(movie_file, amazon_file))


def test_dvc_repro_then_flow_reruns_nothing_then_exp_run(project):
    root, env = project
    run_ok([sys.executable, "-m", "dvc", "repro"], root, env)
    lock = (root / "dvc.lock").read_text()
    assert set(yaml.safe_load(lock)["stages"]) == set(STAGES)

    data = json.loads((root / "reports/data.json").read_text())
    assert data["target"]["splits"]["test"]["rows"] > 0 and data["source"]["rows_read"] == 200
    scores = json.loads((root / "metrics/scores.json").read_text())
    assert set(scores) >= {"transfer", "target_only", "zero_shot", "vader"}
    for name, figures in scores.items():
        assert 0.0 <= figures["f1_macro"] <= 1.0 and figures["support"] > 0, name
    assert scores["vader"]["f1_macro"] > 0.55, "VADER on real amazon snippets is far better than chance"
    transfer = json.loads((root / "metrics/transfer.json").read_text())
    assert transfer["gain_over"]["vader"] == pytest.approx(transfer["transfer"] - scores["vader"]["f1_macro"])
    manifest = json.loads((root / "models/onnx/manifest.json").read_text())
    assert manifest["opset"] >= 17 and manifest["parity"]["max_abs_logit_diff"] <= manifest["parity"]["tolerance"]

    flow = run_ok([sys.executable, "-m", "flows.pipeline"], root, env)
    assert (root / "dvc.lock").read_text() == lock, "the flow after dvc repro must change nothing"
    output = flow.stdout + flow.stderr
    assert "Running stage" not in output, output[-2000:]

    run_ok([sys.executable, "-m", "dvc", "exp", "run", "-S", "finetune.learning_rate=3e-5"], root, env)
    after = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    # DVC writes `3e-5` back as YAML 1.1 reads it (a string); the schema reads it as the float.
    assert float(after["finetune"]["params"]["params.yaml"]["finetune"]["learning_rate"]) == 3e-5
    assert json.loads((root / "models/target/finetune.json").read_text())["learning_rate"] == 3e-5
    assert after["pretrain"] == yaml.safe_load(lock)["stages"]["pretrain"], "pretrain must not re-run"
