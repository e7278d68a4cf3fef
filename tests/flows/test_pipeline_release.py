"""The flow's --release step (champion / challenger, then publish) on a tiny git + DVC project:
a fake export stage writes models/onnx, a fake `tasks challenge` decides as a control file says.
First run: no champion, v1 published. Unchanged: "up to date", nothing decided. A new package
that loses: kept, nothing published. One that wins: published, prod moves."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

import flows.pipeline as fp
import flows.release as release
from tests.flows.test_release import DVC_YAML, MAKE_PACKAGE, make_workspace, sh

# The fake challenge: checks it got the champion's package, then decides as $FAKE_DECISION says.
CHALLENGE = """\
import json, os, pathlib, sys
champion = pathlib.Path(sys.argv[sys.argv.index("--champion") + 1])
name = sys.argv[sys.argv.index("--name") + 1]
assert (champion / "manifest.json").is_file(), champion
promote = pathlib.Path(os.environ["FAKE_DECISION"]).read_text().strip() == "promote"
decision = {"promote": promote, "metric": "macro-F1", "gain": 2.5 if promote else 0.1, "interval": [1.0, 4.0] if promote else [-1.0, 1.2]}
pathlib.Path("reports").mkdir(exist_ok=True)
manifest = json.loads((champion / "manifest.json").read_text())
pathlib.Path("reports/challenge.json").write_text(json.dumps({"decision": decision, "champion_manifest": manifest}))
print(("promoted the challenger over " if promote else "kept ") + name + f": gain {decision['gain']:+.2f} macro-F1")
"""

@pytest.fixture
def project(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    root = make_workspace(tmp_path / "ws")
    assert (root / "make_package.py").read_text() == MAKE_PACKAGE and (root / "dvc.yaml").read_text() == DVC_YAML
    (root / "params.yaml").write_text("data: {source: {path: a.tsv}, target: {path: b.tsv}}\n")
    (root / "challenge.py").write_text(CHALLENGE)
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "project")
    decision = tmp_path / "decision"
    monkeypatch.setenv("FAKE_DECISION", str(decision))
    monkeypatch.delenv("PIPELINE_PARAMS", raising=False)
    monkeypatch.setattr(fp, "CHALLENGE_COMMAND", [sys.executable, "challenge.py"])
    return root, decision


def release_row(results: list[dict]) -> dict:
    return next(r for r in results if r["stage"] == "release")


def test_first_run_publishes_then_up_to_date_then_a_loser_is_kept_out_and_a_winner_promoted(project, prefect_harness):
    from prefect.artifacts import Artifact

    root, decision = project
    first = release_row(fp.pipeline(root=str(root), release=True))
    assert first["line"] == "no champion yet: published v1.0.0 as prod" and release.champion(root).version == "v1.0.0"

    again = release_row(fp.pipeline(root=str(root), release=True))
    assert again["line"] == "up to date: this run's package is champion v1.0.0's, kept" and again["published"] is None

    (root / "input.txt").write_text("second\n")
    decision.write_text("keep")
    kept = release_row(fp.pipeline(root=str(root), release=True))
    assert kept["line"] == "kept v1.0.0: gain +0.10 macro-F1" and kept["published"] is None
    assert release.champion(root).version == "v1.0.0" and [v.version for v in release.versions(root)] == ["v1.0.0"]
    report = json.loads((root / fp.CHALLENGE_REPORT).read_text())
    assert report["champion_manifest"] == {"name": "first"}, "the challenge must get the champion's package, fetched"

    decision.write_text("promote")
    code, text = fp.cli(["--root", str(root), "--release"])
    assert code == 0
    assert text.splitlines()[:2] == ["release: promoted the challenger over v1.0.0: gain +2.50 macro-F1; published v2.0.0 as prod",
                                     "champion: v2.0.0"]
    assert release.champion(root).version == "v2.0.0"
    assert "**Release:** promoted the challenger over v1.0.0" in Artifact.get(fp.ARTIFACT_KEY).data


def test_a_failing_challenge_stops_with_its_line_and_publishes_nothing(project, prefect_harness):
    root, decision = project
    fp.pipeline(root=str(root), release=True)  # v1
    (root / "input.txt").write_text("second\n")
    failing = "import sys\nprint('error: challenge: champion package x: manifest.json missing', file=sys.stderr)\nsys.exit(1)\n"
    (root / "challenge.py").write_text(failing)
    code, text = fp.cli(["--root", str(root), "--release"])
    assert (code, text) == (1, "error: challenge: champion package x: manifest.json missing")
    assert [v.version for v in release.versions(root)] == ["v1.0.0"]


def test_without_a_git_identity_the_release_step_says_so_before_anything(project, prefect_harness, monkeypatch):
    root, _ = project
    sh(root, "git", "config", "--unset", "user.name")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)  # no identity from the user's ~/.gitconfig either
    code, text = fp.cli(["--root", str(root), "--release"])
    assert code == 1 and text.startswith("error: release: git has no user.name/user.email in ")
    assert release.versions(root) == []


def test_a_transient_release_failure_is_retried_and_a_permanent_one_is_not(project, prefect_harness, monkeypatch):
    root, _ = project
    real_publish, calls = release.publish, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise release.ReleaseError("dvc push failed: Unable to acquire lock. Most likely another DVC process is running",
                                       transient=True)
        return real_publish(*args, **kwargs)

    monkeypatch.setattr(fp.registry, "publish", flaky)
    row = release_row(fp.pipeline(root=str(root), release=True))
    assert row["line"] == "no champion yet: published v1.0.0 as prod" and len(calls) == 2

    def broken(*args, **kwargs):
        calls.append(1)
        raise release.ReleaseError("dvc push failed: remote 'store' is not a directory")

    monkeypatch.setattr(fp.registry, "publish", broken)
    (root / "input.txt").write_text("third\n")
    calls.clear()
    (Path(os.environ["FAKE_DECISION"])).write_text("promote")
    code, text = fp.cli(["--root", str(root), "--release"])
    assert (code, text) == (1, "error: release: dvc push failed: remote 'store' is not a directory") and len(calls) == 1
    assert release.champion(root).version == "v1.0.0", "the champion keeps serving"


def test_what_a_tool_says_decides_whether_a_release_failure_is_transient():
    for said in ("Unable to acquire lock", "fatal: Unable to create '/r/.git/index.lock': File exists",
                 "Connection reset by peer", "Read timed out", "503 Service Unavailable"):
        assert release.TRANSIENT.search(said), said
    for said in ("remote 'store' is not a directory", "no DVC remote configured", "Permission denied"):
        assert not release.TRANSIENT.search(said), said
