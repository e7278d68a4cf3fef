"""The Prefect flow over a fake, tiny DVC project (git + dvc init in tmp_path, stages that are
`python step.py <name>`): stage order from DVC's graph, up-to-date runs, the retry rule, bad
params, the metrics artifact and DVC lock collisions."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import flows.pipeline as fp

REPO = Path(__file__).resolve().parents[2]

# The fake stage. Behaviour is switched by files in $FAKE_CONTROL (outside the project, so
# DVC never sees them): <name>.user_error, <name>.fail_once, <name>.sleep (seconds).
# Each attempt appends a line to <name>.attempts; a sleeping one "start" and "end" lines to
# <name>.spans (two runs of it at once would write two starts in a row).
STEP = '''\
import json, os, sys, time
from pathlib import Path

name, inputs = sys.argv[1], sys.argv[2:]
control = Path(os.environ["FAKE_CONTROL"])
with open(control / f"{name}.attempts", "a") as handle:
    handle.write("attempt\\n")
if (control / f"{name}.sleep").exists():
    (control / f"{name}.started").touch()
    with open(control / f"{name}.spans", "a") as handle:
        handle.write("start\\n")
    time.sleep(float((control / f"{name}.sleep").read_text()))
    with open(control / f"{name}.spans", "a") as handle:
        handle.write("end\\n")
if (control / f"{name}.user_error").exists():
    print(f"error: {name}: data.source.path: file not found (got 'missing.tsv')", file=sys.stderr)
    sys.exit(1)
if (control / f"{name}.fail_once").exists():
    (control / f"{name}.fail_once").unlink()
    print("ConnectionResetError: [Errno 104] Connection reset by peer", file=sys.stderr)
    sys.exit(3)
Path("out").mkdir(exist_ok=True)
text = "".join(Path(path).read_text() for path in inputs) + name + "\\n"
Path(f"out/{name}.txt").write_text(text)
if name == "evaluate":
    for path, data in {
        "metrics/scores.json": {"transfer": {"f1_macro": 0.8123, "support": 40},
                                        "target_only": {"f1_macro": 0.6543, "support": 40}},
        "metrics/transfer.json": {"metric": "f1_macro", "transfer": 0.8123, "baselines": {"target_only": 0.6543},
                                  "gain_over": {"target_only": 0.158}, "verdict": {"target_only": "helps"},
                                  "interval": {"target_only": {"low": 0.12, "high": 0.195, "confidence": 0.95}},
                                  "headline": ["transfer vs target_only at all labels: helps (gain +15.8 F1 points)"],
                                  "curve": {"target_only": "transfer vs target_only: helps at 32-all labels"}},
        "reports/data.json": {"source": {"rows_read": 200, "kept": 187}, "target": {"rows_read": 200}},
        "metrics/export.json": {"parity": {"max_abs_logit_diff": 0.00042, "tolerance": 0.001}},
    }.items():
        Path(path).parent.mkdir(exist_ok=True)
        Path(path).write_text(json.dumps(data))
'''

METRICS = [{"metrics/scores.json": {"cache": False}}, {"metrics/transfer.json": {"cache": False}},
           {"reports/data.json": {"cache": False}}, {"metrics/export.json": {"cache": False}}]


def stage(name: str, *inputs: str, **extra) -> dict:
    return {name: {"cmd": " ".join(["python", "step.py", name, *inputs]),
                   "deps": ["step.py", *inputs], "outs": [f"out/{name}.txt"], **extra}}


LINEAR = [stage("prepare"), stage("train", "out/prepare.txt"),
          stage("evaluate", "out/train.txt", metrics=METRICS)]


def write_dvc_yaml(root: Path, stages: list[dict]) -> None:
    merged = {name: spec for item in stages for name, spec in item.items()}
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": merged}, sort_keys=False))


def attempts(control: Path, name: str) -> int:
    path = control / f"{name}.attempts"
    return len(path.read_text().splitlines()) if path.exists() else 0


def env() -> dict[str, str]:
    return fp.child_env()


@pytest.fixture
def control(tmp_path: Path, monkeypatch) -> Path:
    path = tmp_path / "control"
    path.mkdir()
    monkeypatch.setenv("FAKE_CONTROL", str(path))
    monkeypatch.delenv("PIPELINE_PARAMS", raising=False)
    return path


@pytest.fixture
def project(tmp_path: Path, control: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "step.py").write_text(STEP)
    (root / "params.yaml").write_text("data: {source: {path: a.tsv}, target: {path: b.tsv}}\n")
    write_dvc_yaml(root, LINEAR)
    for command in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(command, cwd=root, env=env(), check=True, capture_output=True)
    return root


def statuses(results: list[dict]) -> dict[str, str]:
    return {r["stage"]: r["status"] for r in results}


# ---------------------------------------------------------------- no Prefect needed


def test_stage_order_is_a_topological_order_of_dvc_graph(project: Path):
    # declared out of order: evaluate first, train last; an independent stage in between;
    # a `dvc add`-ed file is data, not a stage
    (project / "raw.txt").write_text("raw\n")
    subprocess.run([sys.executable, "-m", "dvc", "add", "-q", "raw.txt"], cwd=project, env=env(), check=True)
    write_dvc_yaml(project, [stage("evaluate", "out/train.txt"), stage("prepare", "raw.txt"),
                             stage("lint"), stage("train", "out/prepare.txt")])
    assert fp.stage_order(project) == ["prepare", "lint", "train", "evaluate"]

    write_dvc_yaml(project, LINEAR)  # linear: the file order
    assert fp.stage_order(project) == ["prepare", "train", "evaluate"]


def test_unreadable_dvc_yaml_is_one_line(project: Path):
    (project / "dvc.yaml").write_text("stages:\n  a:\n    cmd: python -c \"x: 1\"\n  b: [\n")
    with pytest.raises(fp.PipelineFailure) as failure:
        fp.stage_order(project)
    message = str(failure.value)
    assert "\n" not in message and "dvc cannot read the pipeline" in message and str(project) in message


def test_bad_params_exit_1_with_one_line_before_any_stage(project: Path, control: Path):
    (project / "params.yaml").write_text("data: {source: {path: a.tsv}, target: {path: b.tsv}}\nsed: 1\n")
    done = subprocess.run([sys.executable, "-m", "flows.pipeline", "--root", str(project)],
                          env={**env(), "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"error: {project / 'params.yaml'}: sed: unknown key (got 1)"]
    assert "Traceback" not in done.stdout + done.stderr
    assert not (project / "dvc.lock").exists() and not list(control.iterdir()), "no stage may start"


def test_a_run_outside_make_logs_no_error(project: Path, tmp_path: Path):
    """Without the Makefile's environment (no PREFECT_SERVER_ANALYTICS_ENABLED, no DO_NOT_TRACK)
    the flow's own defaults apply: Prefect's offline telemetry call used to log an ERROR."""
    bare = {k: v for k, v in env().items() if k not in ("PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK")}
    bare.update(PYTHONPATH=str(REPO), PREFECT_HOME=str(tmp_path / "prefect-home"))
    done = subprocess.run([sys.executable, "-m", "flows.pipeline", "--root", str(project)],
                          env=bare, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "ERROR" not in done.stdout + done.stderr and "Traceback" not in done.stdout + done.stderr


def test_classify_failure_texts(tmp_path: Path):
    from dvc.lock import FAILED_TO_LOCK_MESSAGE  # DVC's own words for a held repository lock

    lock = fp.classify_failure("train", tmp_path, [f"ERROR: {FAILED_TO_LOCK_MESSAGE}"])
    assert lock.kind == "lock" and lock.transient
    assert str(lock).startswith(f"train: another pipeline run holds the DVC lock of {tmp_path};")

    user = fp.classify_failure("train", tmp_path, [
        "Running stage 'train':", "> python -m tasks.train", "error: bad value (got 3)",
        "ERROR: failed to reproduce 'train': failed to run: python -m tasks.train, exited with 1"])
    assert (user.kind, str(user), user.transient) == ("user", "train: bad value (got 3)", False)

    crash = fp.classify_failure("train", tmp_path, [
        "Running stage 'train':", "> python -m tasks.train", "Killed",
        "ERROR: failed to reproduce 'train': failed to run: python -m tasks.train, exited with -9"])
    assert crash.kind == "crash" and crash.transient and "exited with -9" in str(crash) and "Killed" in str(crash)

    refused = fp.classify_failure("train", tmp_path, [
        "ERROR: failed to reproduce 'train': missing dependencies: data/x"])
    assert refused.kind == "dvc" and not refused.transient and "missing dependencies" in str(refused)


def test_output_lines_thins_progress_redraws():
    import io

    stream = io.BufferedReader(io.BytesIO(b"start\r\n" + b"".join(b"\r%d%%" % i for i in range(101)) + b"\ndone"))
    assert list(fp.output_lines(stream, progress_every=3600)) == ["start", "100%", "done"]


# ---------------------------------------------------------------- the flow (Prefect harness)


def test_first_run_runs_all_then_up_to_date_then_a_new_stage(project: Path, control: Path, prefect_harness):
    first = fp.pipeline(root=str(project))
    assert [r["stage"] for r in first] == ["prepare", "train", "evaluate"]
    assert set(statuses(first).values()) == {"ran"}
    lock = (project / "dvc.lock").read_bytes()

    second = fp.pipeline(root=str(project))
    assert set(statuses(second).values()) == {"up to date"}
    assert (project / "dvc.lock").read_bytes() == lock
    assert [attempts(control, name) for name in ("prepare", "train", "evaluate")] == [1, 1, 1]

    # a stage added to dvc.yaml is in the next run, after its dependency; nothing else re-runs
    write_dvc_yaml(project, LINEAR[:2] + [stage("export", "out/train.txt")] + LINEAR[2:])
    third = fp.pipeline(root=str(project))
    assert statuses(third) == {"prepare": "up to date", "train": "up to date",
                               "export": "ran", "evaluate": "up to date"}

    forced = fp.pipeline(root=str(project), force=True)
    assert set(statuses(forced).values()) == {"ran"}
    assert attempts(control, "prepare") == 2


def test_artifact_and_summary_carry_the_metrics(project: Path, prefect_harness):
    from prefect.artifacts import Artifact

    code, text = fp.cli(["--root", str(project)])
    assert code == 0
    # the transfer table leads (each model's score, the gain with its interval and verdict),
    # then the verdict sentences, then the stages; no dump of every metric row
    lines = text.splitlines()
    assert lines[0].split() == ["model", "score", "transfer's", "gain", "[95", "%", "CI]", "verdict"]
    assert lines[1].split() == ["transfer", "f1_macro", "0.8123"]
    assert lines[2].split() == ["target_only", "f1_macro", "0.6543", "+15.8", "[+12.0,", "+19.5]", "helps"]
    assert text.index("at all labels: helps (gain +15.8 F1 points)") < text.index("evaluate")
    assert "support" not in text and text.count("0.6543") == 1

    markdown = Artifact.get(fp.ARTIFACT_KEY).data
    assert markdown.index("| target_only | f1_macro 0.6543 | +15.8 [+12.0, +19.5] | helps |") < markdown.index("## Stages")
    for expected in ("| transfer | f1_macro | 0.8123 |", "| target_only | f1_macro | 0.6543 |",
                     "| gain_over | target_only | 0.158 |", "| source | rows_read | 200 |",
                     "| source | kept | 187 |", "| parity | max_abs_logit_diff | 0.00042 |",
                     "| evaluate | ran |", "## Does transfer help?",
                     "- transfer vs target_only: helps at 32-all labels"):
        assert expected in markdown, markdown


def test_user_error_fails_at_once_with_its_line(project: Path, control: Path, prefect_harness):
    (control / "train.user_error").touch()
    code, text = fp.cli(["--root", str(project)])
    assert (code, text) == (1, "error: train: data.source.path: file not found (got 'missing.tsv')")
    assert attempts(control, "train") == 1, "a user error is never retried"
    assert attempts(control, "evaluate") == 0


def test_transient_failure_is_retried(project: Path, control: Path, prefect_harness):
    (control / "train.fail_once").touch()
    results = fp.pipeline(root=str(project))
    assert statuses(results) == {"prepare": "ran", "train": "ran", "evaluate": "ran"}
    assert attempts(control, "train") == 2
    assert [r["attempts"] for r in results] == [1, 2, 1]


def test_held_repository_lock_is_reported(project: Path, control: Path, prefect_harness, monkeypatch):
    import zc.lockfile

    monkeypatch.setattr(fp, "run_stage", fp.run_stage.with_options(retries=0))
    held = zc.lockfile.LockFile(str(project / ".dvc" / "tmp" / "lock"))  # as a running `dvc` holds it
    try:
        with pytest.raises(fp.StageFailed) as failure:
            fp.pipeline(root=str(project))
    finally:
        held.close()
    assert failure.value.kind == "lock"
    assert str(failure.value).startswith(f"prepare: another pipeline run holds the DVC lock of {project};")
    assert attempts(control, "prepare") == 0


def test_concurrent_dvc_repro_is_reported(project: Path, control: Path, prefect_harness, monkeypatch):
    """Another run is inside `prepare` (DVC holds its paths' locks): the flow says so."""
    monkeypatch.setattr(fp, "run_stage", fp.run_stage.with_options(retries=0))
    (control / "prepare.sleep").write_text("6")
    other = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--single-item", "prepare"],
                             cwd=project, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (control / "prepare.started").exists():
            assert time.monotonic() < deadline and other.poll() is None, "the other dvc repro did not start"
            time.sleep(0.1)
        with pytest.raises(fp.StageFailed) as failure:
            fp.pipeline(root=str(project))
    finally:
        assert other.wait(60) == 0
    assert failure.value.kind == "lock"
    message = str(failure.value)
    assert f"another pipeline run holds the DVC lock of {project}" in message
    assert f"PID {other.pid}" in message and "\n" not in message


def test_the_summary_says_what_changed_in_the_data(tmp_path):
    before = {"source": {"splits": {"train": {"rows": 100, "labels": {"negative": 50, "positive": 50}}}},
              "target": {"splits": {"train": {"rows": 40, "labels": {"negative": 20, "positive": 20}},
                                    "test": {"rows": 10, "labels": {"negative": 5, "positive": 5}}}}}
    after = json.loads(json.dumps(before))
    after["target"]["splits"]["train"] = {"rows": 52, "labels": {"negative": 20, "positive": 30, "neutral": 2}}
    assert fp.data_changes(before, before) == []
    assert fp.data_changes(None, after) is None
    changes = fp.data_changes(before, after)
    assert changes == [("target", "train", "40 -> 52 (+12)", "positive 20 -> 30, neutral 0 -> 2")]
    results = [{"stage": "ingest", "status": "ran", "seconds": 1.0, "attempts": 1, "data_changes": changes}]
    text = fp.summary_text(tmp_path, results)
    assert "data: target train 40 -> 52 (+12) [positive 20 -> 30, neutral 0 -> 2]" in text
    assert "| target | train | 40 -> 52 (+12) | positive 20 -> 30, neutral 0 -> 2 |" in fp.report_markdown(tmp_path, results)
    results[0]["data_changes"] = []
    assert "data: unchanged" in fp.summary_text(tmp_path, results)


def test_rows_that_came_and_went_are_counted_by_content(tmp_path):
    def write(rows: dict[str, list[dict]]) -> None:
        for domain in ("source", "target"):
            for split in ("train", "val", "test"):
                path = tmp_path / "data/prepared" / domain / f"{split}.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("".join(json.dumps(r) + "\n" for r in rows.get(f"{domain}/{split}", [])))

    report = {"target": {"splits": {"train": {"rows": 3}}}}
    write({"target/train": [{"id": "1", "text": "a", "label": "x"}, {"id": "2", "text": "b", "label": "x"},
                            {"id": "3", "text": "c", "label": "y"}]})
    before = fp.prepared_rows(tmp_path)
    # row ids shift (a row inserted above), "b" is gone, "d" and "e" are new: 2 added, 1 removed
    write({"target/train": [{"id": "1", "text": "d", "label": "x"}, {"id": "2", "text": "a", "label": "x"},
                            {"id": "3", "text": "c", "label": "y"}, {"id": "4", "text": "e", "label": "y"}]})
    after_report = {"target": {"splits": {"train": {"rows": 4}}}}
    changes = fp.data_changes(report, after_report, before, fp.prepared_rows(tmp_path))
    assert changes == [("target", "train", "3 -> 4 (+2 added, -1 removed)", "")]
    assert fp.prepared_rows(tmp_path / "elsewhere") is None
