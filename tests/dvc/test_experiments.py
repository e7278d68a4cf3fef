"""The real thing for classification, small, in a real workspace (`python -m flows.workspace`)
with tiny params: `dvc repro` over the six stages, then the real Prefect flow (nothing re-runs,
dvc.lock unchanged), then DVC experiments and plots.

`dvc repro`, the results committed (`git add -A`, as DVC's example-get-started
does: .gitignore lets the small `cache: false` results in and keeps data and models out), a
`dvc exp run -S finetune.learning_rate=...` experiment; `dvc exp show` then holds the transfer
F1 of the baseline and of the experiment (each commit holds its own metrics), and
`dvc plots show` draws every plot file once, without errors. Translation, with the same
dvc.yaml: `dvc repro` up to evaluate, then the same `dvc plots show` checks on its plots.
"""

from __future__ import annotations

import json
import posixpath
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from tests.dvc.conftest import STAGES, dvc, git, make_workspace, run_ok

# Small results committed with dvc.lock (.gitignore lets them in)
COMMITTED = {
    "dvc.lock", "reports/data.json", "reports/tokenize.json", "dvclive/pretrain/metrics.json",
    "dvclive/finetune/metrics.json", "metrics/scores.json", "metrics/transfer.json", "metrics/export.json",
    "plots/dvc.yaml", "plots/classification/confusion.json", "plots/classification/budget_curve.json",
}
# ... and what stays out of git: DVC-cached (data, models, reports/evaluate), resumable state,
# the DVCLive logs of the runs evaluate trains, `dvc plots show`'s HTML
NOT_COMMITTED = ("data/", "models/", "checkpoints/", "reports/evaluate/", "dvclive/target_only/", "dvc_plots/")
METRIC_FILES = COMMITTED - {"dvc.lock", "plots/dvc.yaml", "plots/classification/confusion.json",
                           "plots/classification/budget_curve.json"}
EXPERIMENT, RATE = "lr-large", "3e-3"  # the baseline's rate is 1e-3 (tests/dvc/conftest.py)


# ---------------------------------------------------------------- plots


def plot_source(plot_id: str) -> str:
    """The data file a plot id draws: `<dvc.yaml path>::<file relative to it>` for a top-level
    definition (every definition here names its file), the file itself for a stage's `plots`."""
    if "::" not in plot_id:
        return plot_id
    config, path = plot_id.split("::", 1)
    return posixpath.normpath(posixpath.join(posixpath.dirname(config), path))


def check_plots(root: Path, env: dict) -> dict[str, list[dict]]:
    """`dvc plots show --json`: no errors, one non-empty chart per plot id, no data file drawn
    by two ids. Returns data file -> its chart's data rows."""
    shown = json.loads(dvc(root, env, "plots", "show", "--json").stdout)
    assert not shown.get("errors"), shown["errors"]
    drawn_by = defaultdict(list)
    rows = {}
    for plot_id, charts in shown["data"].items():
        assert len(charts) == 1, f"{plot_id}: {len(charts)} charts"
        assert charts[0]["type"] == "vega", plot_id
        values = charts[0]["content"]["data"]["values"]
        assert values, f"{plot_id}: no data"
        drawn_by[plot_source(plot_id)].append(plot_id)
        rows[plot_source(plot_id)] = values
    twice = {source: ids for source, ids in drawn_by.items() if len(ids) > 1}
    assert not twice, f"data files drawn more than once: {twice}"
    return rows


def check_training_curves(rows: dict[str, list[dict]]) -> None:
    """DVCLive's per-metric files: the loss and validation loss of both training stages, one
    series each (no `field` column: DVC adds one when a chart has several y fields)."""
    for stage in ("pretrain", "finetune"):
        for metric in ("loss.tsv", "val/loss.tsv"):
            assert f"dvclive/{stage}/plots/metrics/{metric}" in rows, sorted(rows)
    curves = {source: values for source, values in rows.items() if source.startswith("dvclive/")}
    assert all("field" not in row for values in curves.values() for row in values)


# ---------------------------------------------------------------- experiments


def transfer_f1(data: dict, where: str) -> float:
    """The transfer F1 of one `dvc exp show` row, checked against metrics/scores.json."""
    metrics = data["metrics"]
    broken = {name: found for name, found in metrics.items() if "error" in found}
    assert not broken, f"{where}: metrics DVC could not read: {broken}"
    assert METRIC_FILES <= set(metrics), f"{where}: {sorted(metrics)}"
    transfer = metrics["metrics/transfer.json"]["data"]["transfer"]
    assert transfer == metrics["metrics/scores.json"]["data"]["transfer"]["f1_macro"], where
    assert 0.0 <= transfer <= 1.0, where
    return transfer


def learning_rate(data: dict) -> float:
    # DVC writes `-S 3e-4` back as YAML 1.1 reads it (a string); the schema reads it as the float
    return float(data["params"]["params.yaml"]["data"]["finetune"]["learning_rate"])


def check_repro_outputs(root: Path) -> None:
    """What `dvc repro` left: every stage locked, data counted, every model scored, ONNX parity."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert set(lock["stages"]) == set(STAGES)
    data = json.loads((root / "reports/data.json").read_text())
    assert data["target"]["splits"]["test"]["rows"] > 0 and data["source"]["rows_read"] == 200
    scores = json.loads((root / "metrics/scores.json").read_text())
    assert set(scores) >= {"transfer", "target_only", "zero_shot", "vader"}
    for name, figures in scores.items():
        assert 0.0 <= figures["f1_macro"] <= 1.0 and figures["support"] > 0, name
    assert scores["vader"]["f1_macro"] > 0.55, "VADER on real amazon snippets is far better than chance"
    transfer = json.loads((root / "metrics/transfer.json").read_text())
    assert transfer["gain_over"]["vader"] == pytest.approx(transfer["transfer"] - scores["vader"]["f1_macro"])
    assert transfer["verdict"]["target_only"] in ("helps", "no difference", "hurts")
    manifest = json.loads((root / "models/onnx/manifest.json").read_text())
    assert manifest["opset"] >= 17 and manifest["parity"]["max_abs_logit_diff"] <= manifest["parity"]["tolerance"]


def test_repro_then_flow_reruns_nothing_then_experiments_hold_their_scores(tmp_path, classification_params):
    root, env = make_workspace(tmp_path, classification_params)
    dvc(root, env, "repro")
    check_repro_outputs(root)
    lock = (root / "dvc.lock").read_text()
    flow = run_ok([sys.executable, "-m", "flows.pipeline"], root, env)
    assert (root / "dvc.lock").read_text() == lock, "the flow after dvc repro must change nothing"
    assert "Running stage" not in flow.stdout + flow.stderr, (flow.stdout + flow.stderr)[-2000:]

    git(root, env, "add", "-A")
    git(root, env, "commit", "-qm", "tiny run: results")
    baseline = git(root, env, "rev-parse", "HEAD").stdout.strip()
    tracked = set(git(root, env, "ls-files").stdout.split())
    assert COMMITTED <= tracked, sorted(COMMITTED - tracked)
    assert not [path for path in tracked if path.startswith(NOT_COMMITTED)]
    assert not git(root, env, "status", "--porcelain").stdout.strip()

    dvc(root, env, "exp", "run", "-n", EXPERIMENT, "-S", f"finetune.learning_rate={RATE}")

    shown = json.loads(dvc(root, env, "exp", "show", "--json").stdout)
    commit = next(row for row in shown if row["rev"] == baseline)
    assert learning_rate(commit["data"]) == classification_params["finetune"]["learning_rate"]
    transfer_f1(commit["data"], "baseline")
    experiments = {rev["name"]: rev["data"] for exp in commit["experiments"] or [] for rev in exp["revs"]}
    assert EXPERIMENT in experiments, sorted(experiments)
    assert learning_rate(experiments[EXPERIMENT]) == float(RATE)
    transfer_f1(experiments[EXPERIMENT], EXPERIMENT)
    losses = {data["metrics"]["dvclive/finetune/metrics.json"]["data"]["loss"]
              for data in (commit["data"], experiments[EXPERIMENT])}
    assert len(losses) == 2, "the experiment's commit holds its own fine-tuning figures, not the baseline's"
    after = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert after["pretrain"] == yaml.safe_load(lock)["stages"]["pretrain"], "an experiment on finetune re-runs no pretrain"

    rows = check_plots(root, env)
    check_training_curves(rows)
    evaluate_plots = {source for source in rows if source.startswith("plots/")}
    assert evaluate_plots == {"plots/classification/confusion.json", "plots/classification/budget_curve.json"}
    assert {(row["actual"], row["predicted"]) for row in rows["plots/classification/confusion.json"]} <= {
        (a, b) for a in ("negative", "positive") for b in ("negative", "positive")}
