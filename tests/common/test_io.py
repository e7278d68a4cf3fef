"""A killed stage's temp leftovers (`.<name>.*.tmp`, `.<name>.old` beside an output) are removed
by the next writer of that output and by the stage that owns it when it starts; nothing else is."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tasks.__main__ import STAGES, remove_leftovers, stage_outputs
from tasks.common.io import atomic_dir, remove_stale_temps, write_json_atomic
from tasks.common.paths import Paths
from tests.conftest import REPO, with_overrides


def leftover(path: Path, directory: bool = False) -> Path:
    """What a kill -9 leaves: a temp dir with a half-written file in it, or a temp file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        (path / "source").mkdir(parents=True)
        (path / "source" / "train.jsonl").write_text('{"text": "half a ro')
    else:
        path.write_text('{"half": ')
    return path


def names(directory: Path) -> set[str]:
    return {entry.name for entry in directory.iterdir()}


def test_only_the_outputs_own_leftovers_go(tmp_path: Path):
    data = tmp_path / "data"
    own = [leftover(data / ".prepared.abc123.tmp", directory=True), leftover(data / ".prepared.old", directory=True),
           leftover(data / ".prepared.k2_x9zq1.tmp")]
    others = [leftover(data / ".tokenized.abc123.tmp", directory=True),  # another output's
              leftover(data / ".prepared.jsonl.abc123.tmp"),  # the temp of `prepared.jsonl`
              leftover(data / ".prepared.keep"), leftover(data / ".gitignore"), leftover(data / "prepared" / "a.jsonl")]
    assert sorted(remove_stale_temps(data / "prepared")) == sorted(own)
    assert names(data) == {path.name for path in others if path.parent == data} | {"prepared"}
    assert remove_stale_temps(tmp_path / "nowhere" / "prepared") == []


def test_a_writer_clears_the_leftovers_of_its_own_output(tmp_path: Path):
    reports, data = tmp_path / "reports", tmp_path / "data"
    leftover(reports / ".data.json.xyz.tmp")
    leftover(reports / ".data.jsonl.xyz.tmp")  # not data.json's
    write_json_atomic(reports / "data.json", {"rows": 1})
    assert names(reports) == {"data.json", ".data.jsonl.xyz.tmp"}

    leftover(data / ".prepared.abc123.tmp", directory=True)
    with atomic_dir(data / "prepared") as tmp:
        (tmp / "x.jsonl").write_text("{}\n")
    assert names(data) == {"prepared"}


def test_each_stage_clears_its_own_outputs_leftovers_only(tmp_path: Path):
    paths = Paths(tmp_path)
    evaluate = [leftover(tmp_path / "metrics" / ".scores.json.a1.tmp"), leftover(tmp_path / "plots" / ".dvc.yaml.a1.tmp"),
                leftover(tmp_path / "models" / ".baselines.a1.tmp", directory=True)]
    export = leftover(tmp_path / "metrics" / ".export.json.a1.tmp")
    remove_leftovers("evaluate", "classification", paths)
    assert not any(path.exists() for path in evaluate) and export.exists()
    remove_leftovers("export", "classification", paths)
    assert not export.exists()


@pytest.mark.parametrize("kind", ["classification", "translation"])
def test_stage_outputs_cover_dvc_yaml_outs(kind: str):
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage in STAGES:
        outs = [next(iter(out)) if isinstance(out, dict) else out
                for key in ("outs", "metrics", "plots") for out in stages[stage].get(key, [])]
        declared = {Path(out.replace("${task.kind}", kind)) for out in outs}
        assert declared <= set(stage_outputs(stage, kind, Paths(Path(".")))), stage


# ---------------------------------------------------------------- `python -m tasks ingest`


@pytest.fixture
def ingest_workspace(tmp_path: Path, movie_file: Path, amazon_file: Path) -> Path:
    """A workspace with params.yaml reading the real movie and amazon files."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw = with_overrides(raw, {"data.source.path": str(movie_file), "data.target.path": str(amazon_file)})
    root = tmp_path / "ws"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    return root


def ingest(root: Path, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "tasks", "ingest"], cwd=root, env=env, text=True, **popen)


def temps(root: Path) -> list[Path]:
    return sorted(path for top in ("data", "reports") for path in (root / top).rglob(".*") if path.name.endswith((".tmp", ".old")))


def test_ingest_removes_a_killed_runs_leftovers_at_start(ingest_workspace: Path):
    root = ingest_workspace
    leftover(root / "data" / ".prepared.abc123.tmp", directory=True)
    leftover(root / "reports" / ".data.json.xyz.tmp")
    unrelated = [leftover(root / "data" / ".keep"), leftover(root / "reports" / ".notes.tmp"),
                 leftover(root / "data" / ".tokenized.abc123.tmp", directory=True)]  # tokenize's, not ingest's
    done = ingest(root, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    assert "ingest: removed what an interrupted run left: data/.prepared.abc123.tmp, reports/.data.json.xyz.tmp" in err
    assert temps(root) == [root / "data" / ".tokenized.abc123.tmp", root / "reports" / ".notes.tmp"]
    assert all(path.exists() for path in unrelated)


def kill_while_writing(root: Path, attempts: int = 3) -> list[Path]:
    """SIGKILL `python -m tasks ingest` once its temp data/.prepared.*.tmp holds a file; the
    leftovers it made. A run that finishes first (the window is ~0.2 s) is tried again."""
    for _ in range(attempts):
        process = ingest(root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while process.poll() is None:
            if any(path.is_file() for tmp in (root / "data").glob(".prepared.*.tmp") for path in tmp.rglob("*")):
                os.kill(process.pid, signal.SIGKILL)
                break
            time.sleep(0.001)
        if process.wait(120) == -signal.SIGKILL:
            return temps(root)
    pytest.fail(f"ingest finished before it could be killed, {attempts} times")


def test_a_rerun_after_kill_9_leaves_no_temp(ingest_workspace: Path):
    left = kill_while_writing(ingest_workspace)
    top = [path.name for path in left if path.parent == ingest_workspace / "data"]
    assert len(top) == 1 and top[0].startswith(".prepared.") and top[0].endswith(".tmp"), left
    assert ingest(ingest_workspace, stdout=subprocess.DEVNULL).wait(120) == 0
    assert temps(ingest_workspace) == []
    assert (ingest_workspace / "data" / "prepared" / "target" / "test.jsonl").is_file()
