"""The model registry (flows/release.py) on a tiny git + DVC workspace: one stage whose command
writes a fake package (models/onnx with a manifest) and its metrics, no torch. One workspace
for the module: v1 and v2 are published once, the tests after them read, roll back, fetch, and
publish v3 through kills between the steps, then sync a folder to prod (and restore prod to v3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import flows.release as release
from tasks.common.errors import PipelineError
from tests.conftest import REPO

MAKE_PACKAGE = """\
import json, pathlib
name = pathlib.Path("input.txt").read_text().strip()
package = pathlib.Path("models/onnx")
package.mkdir(parents=True, exist_ok=True)
(package / "manifest.json").write_text(json.dumps({"name": name}))
(package / "model.onnx").write_text(name * 100)
pathlib.Path("metrics").mkdir(exist_ok=True)
score = len(name) / 10
transfer = {"metric": "f1_macro", "transfer": score, "gain_over": {"target_only": score - 0.5}}
pathlib.Path("metrics/transfer.json").write_text(json.dumps(transfer))
pathlib.Path("metrics/export.json").write_text(json.dumps({"onnx_bytes": len(name) * 100}))
"""

DVC_YAML = f"""\
stages:
  export:
    cmd: {sys.executable} make_package.py
    deps: [input.txt, make_package.py]
    outs: [models/onnx]
    metrics:
      - metrics/transfer.json: {{cache: false}}
      - metrics/export.json: {{cache: false}}
artifacts:
  {release.ARTIFACT}:
    type: model
    path: models/onnx
"""


class Killed(BaseException):
    """What a SIGKILL leaves: nothing after this point runs. publish has no except or finally
    that could act on it, so raising here stops it exactly as a kill would."""


def sh(root: Path, *command: str) -> str:
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def new_package(root: Path, name: str) -> None:
    (root / "input.txt").write_text(name + "\n")
    sh(root, sys.executable, "-m", "dvc", "repro", "-q")


def make_workspace(root: Path) -> Path:
    root.mkdir()
    (root / "make_package.py").write_text(MAKE_PACKAGE)
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "input.txt").write_text("first\n")
    sh(root, "git", "init", "-q")
    sh(root, "git", "config", "user.name", "release test")
    sh(root, "git", "config", "user.email", "release@localhost")
    sh(root, sys.executable, "-m", "dvc", "init", "-q")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "workspace")
    return root


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """v1 ("first") and v2 ("second") published, prod = v2."""
    root = make_workspace(tmp_path_factory.mktemp("release") / "ws")
    new_package(root, "first")
    assert release.publish(root, "first model") == "v1.0.0"
    new_package(root, "second")
    assert release.publish(root, "second model") == "v2.0.0"
    return root


# ---------------------------------------------------------------- the invariant, checked without DVC


def remote_holds(remote: Path, md5: str) -> bool:
    """A local DVC remote holds a directory when its .dir listing and every file it lists are there."""
    listing = remote / "files" / "md5" / md5[:2] / md5[2:]
    if not listing.is_file():
        return False
    return all((remote / "files" / "md5" / f["md5"][:2] / f["md5"][2:]).is_file() for f in json.loads(listing.read_text()))


def tagged_hashes(root: Path) -> dict[str, str]:
    """Every version tag -> the package md5 in dvc.lock at its commit (read with git, not with our code)."""
    import yaml

    tags = sh(root, "git", "tag", "-l", f"{release.ARTIFACT}@v*").split()
    locks = {tag: yaml.safe_load(sh(root, "git", "show", f"{tag}:dvc.lock")) for tag in tags}
    return {tag: next(o["md5"] for o in lock["stages"]["export"]["outs"] if o["path"] == "models/onnx") for tag, lock in locks.items()}


def assert_published_state(root: Path, champions: set[str]) -> None:
    remote = root / release.DEFAULT_REMOTE_DIR
    missing = {tag: md5 for tag, md5 in tagged_hashes(root).items() if not remote_holds(remote, md5)}
    assert not missing, f"version tags name packages the remote does not hold: {missing}"
    assert release.champion_version(root) in champions


# ---------------------------------------------------------------- publish, list, champion


def test_publish_tags_versions_and_makes_the_newest_the_champion(workspace: Path):
    tags = set(sh(workspace, "git", "tag").split())
    assert {"onnx-model@v1.0.0", "onnx-model@v2.0.0", "onnx-model#prod#1", "onnx-model#prod#2"} <= tags
    best = release.champion(workspace)
    assert (best.version, best.commit) == ("v2.0.0", sh(workspace, "git", "rev-parse", "onnx-model@v2.0.0^{commit}"))
    assert best.package_md5 == tagged_hashes(workspace)["onnx-model@v2.0.0"]
    assert_published_state(workspace, {"v2.0.0"})
    assert sh(workspace, "git", "log", "-1", "--format=%s", "onnx-model@v2.0.0") == "second model"
    assert ".dvc/release-remote" not in sh(workspace, "git", "status", "--porcelain", "--untracked-files=all")


def test_list_shows_each_version_with_its_own_metrics(workspace: Path, capsys):
    found = {v.version: v for v in release.versions(workspace)}
    assert list(found) == ["v2.0.0", "v1.0.0"]
    assert found["v1.0.0"].metrics["metrics/transfer.json"]["transfer"] == 0.5  # len("first") / 10
    assert found["v2.0.0"].metrics["metrics/transfer.json"]["transfer"] == 0.6
    assert [v.champion for v in found.values()] == [True, False]
    release.main(["list", "--root", str(workspace)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("v2.0.0") and "prod (champion)" in lines[0] and "f1_macro 0.6 (+0.1 over target_only)" in lines[0]
    assert lines[1].startswith("v1.0.0") and "prod (rollback target)" in lines[1] and "f1_macro 0.5" in lines[1]


# ---------------------------------------------------------------- fetch, rollback


def test_fetch_downloads_a_version_from_the_remote(workspace: Path, tmp_path: Path):
    version, out = release.fetch(workspace, "v1", tmp_path / "v1")
    assert version == "v1.0.0"
    assert json.loads((out / "manifest.json").read_text()) == {"name": "first"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1"]  # its work folder is gone
    with pytest.raises(release.ReleaseError, match="already exists"):
        release.fetch(workspace, "v1", out)
    with pytest.raises(release.ReleaseError, match=r"no version v9 of onnx-model \(registered: v2.0.0, v1.0.0\)"):
        release.fetch(workspace, "v9", tmp_path / "v9")


def test_rollback_moves_prod_back_then_refuses_with_one_line(workspace: Path):
    assert release.rollback(workspace) == ("v2.0.0", "v1.0.0")
    assert release.champion(workspace).version == "v1.0.0"
    assert release.resolve_version(workspace, "prod") == "v1.0.0"
    done = subprocess.run([sys.executable, "-m", "flows.release", "rollback", "--root", str(workspace)],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: release: v1.0.0 is the first prod version of onnx-model: there is none to roll back to"]
    assert release.champion_version(workspace) == "v1.0.0"


# ---------------------------------------------------------------- atomic publish


def test_publish_never_tags_a_package_the_remote_does_not_hold(workspace: Path, monkeypatch):
    """Stopped before each step in turn (after the one before it), then run to the end: every
    version tag's package is in the remote, and prod is the old champion or the new version."""
    old = release.champion_version(workspace)
    new_package(workspace, "third")
    tags_before = tagged_hashes(workspace)

    pushes_nothing = tuple((lambda r: None) if step is release.push_package else step for step in release.PUBLISH_STEPS)
    monkeypatch.setattr(release, "PUBLISH_STEPS", pushes_nothing)  # a push that stored nothing
    with pytest.raises(release.ReleaseError, match="does not hold models/onnx after dvc push"):
        release.publish(workspace, "third model")
    assert tagged_hashes(workspace) == tags_before
    monkeypatch.undo()

    steps = release.PUBLISH_STEPS
    for stop_at in steps[1:]:
        def stop_before(step, r, stop_at=stop_at):
            if step is stop_at:
                raise Killed(step.__name__)
            step(r)
        monkeypatch.setattr(release, "run_step", stop_before)
        with pytest.raises(Killed):
            release.publish(workspace, "third model")
        assert_published_state(workspace, {old})
    monkeypatch.undo()

    assert release.publish(workspace, "third model") == "v3.0.0"  # resumed: the same commit, one new version
    assert_published_state(workspace, {"v3.0.0"})
    assert set(tagged_hashes(workspace)) == set(tags_before) | {"onnx-model@v3.0.0"}
    assert sh(workspace, "git", "log", "--format=%s", "-2").splitlines() == ["third model", "second model"]


# ---------------------------------------------------------------- sync: a folder that follows prod


class Reader(threading.Thread):
    """What the server does, in a loop: resolve DIR/current once, then read the package there."""

    def __init__(self, link: Path, pause: float):
        super().__init__(daemon=True)
        self.link, self.pause, self.reads, self.failures = link, pause, 0, []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                json.loads((Path(os.path.realpath(self.link)) / "manifest.json").read_text())
                self.reads += 1
            except (OSError, ValueError) as err:
                self.failures.append(repr(err))
            time.sleep(self.pause)

    def stop(self) -> list[str]:
        self.stopping.set()
        self.join()
        return self.failures


def fake_version(into: Path, name: str, age: float = 0) -> None:
    """A version folder as sync leaves it, last current `age` seconds ago."""
    (into / name).mkdir(parents=True)
    (into / name / "manifest.json").write_text(json.dumps({"name": f"fake {name}"}))
    os.utime(into / name, (time.time() - age,) * 2)


def visible(into: Path) -> list[str]:
    return sorted(p.name for p in into.iterdir() if not p.name.startswith("."))


def test_sync_without_a_version_in_prod_is_one_line(workspace: Path, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setattr(release, "champion_version", lambda root: None)
    with pytest.raises(SystemExit) as exit_:
        release.main(["sync", "--into", str(tmp_path / "models"), "--root", str(workspace)])
    assert exit_.value.code == 1
    assert capsys.readouterr().err == "error: release: no version of onnx-model is in prod: nothing to sync\n"
    assert not (tmp_path / "models").exists()


def test_sync_points_current_at_prod_keeps_the_previous_and_follows_a_rollback(workspace: Path, tmp_path: Path, capsys):
    """prod = v3 here (published above), v1 its rollback target. The folder starts as an older sync
    left it: current -> v2.0.0, older v1.0.0 and v9.9.9 (newest by number, oldest but one by use),
    and a killed fetch's work folder. A reader resolves current all along and must never fail."""
    into = tmp_path / "models"
    fake_version(into, "v1.0.0", age=300)
    fake_version(into, "v9.9.9", age=200)
    fake_version(into, "v2.0.0", age=100)
    os.symlink("v2.0.0", into / "current")
    (into / ".v3.0.0.killed").mkdir()
    reader = Reader(into / "current", pause=0.001)
    reader.start()
    try:
        release.main(["sync", "--into", str(into), "--root", str(workspace)])
        assert capsys.readouterr().out == "current -> v3.0.0\n"
        assert os.readlink(into / "current") == "v3.0.0"  # relative, beside it
        assert json.loads((into / "current" / "manifest.json").read_text()) == {"name": "third"}  # fetched
        assert visible(into) == ["current", "v2.0.0", "v3.0.0"]  # current and the one before it
        assert sorted(p.name for p in into.iterdir() if p.name.startswith(".")) == [".sync.lock"]

        link = os.lstat(into / "current")
        release.main(["sync", "--into", str(into), "--root", str(workspace)])
        assert capsys.readouterr().out == "current is v3.0.0 (unchanged)\n"
        again = os.lstat(into / "current")
        assert (again.st_ino, again.st_mtime_ns) == (link.st_ino, link.st_mtime_ns)

        assert release.rollback(workspace) == ("v3.0.0", "v1.0.0")
        assert release.sync(workspace, into) == "v1.0.0"
        assert json.loads((into / "current" / "manifest.json").read_text()) == {"name": "first"}  # pruned, so fetched
        assert visible(into) == ["current", "v1.0.0", "v3.0.0"]
    finally:
        failures = reader.stop()
        release.promote(release.Release(root=workspace, message="back to v3", requested_remote=None, version="v3.0.0"))
    assert release.champion_version(workspace) == "v3.0.0"
    assert not failures and reader.reads > 0


# ---------------------------------------------------------------- small pieces


def test_remote_argument_is_a_name_a_url_or_a_path(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert release.remote_url("s3://bucket/models", tmp_path) == "s3://bucket/models"
    assert release.remote_url("./store", tmp_path) == str(tmp_path / "store")
    with pytest.raises(release.ReleaseError, match="--remote store: no DVC remote of that name"):
        release.remote_url("store", tmp_path)
    assert release.remote_url(None, tmp_path) == str(tmp_path / ".dvc" / "release-remote")
    assert (tmp_path / ".dvc" / "release-remote" / ".gitignore").read_text() == "*\n"


@pytest.mark.parametrize("command", [["publish", "-m", "x"], ["fetch", "prod", "--out", "pkg"], ["sync", "--into", "models"]])
@pytest.mark.parametrize("remote", ["", "  "])
def test_an_empty_remote_is_refused_before_anything_runs(capsys, tmp_path: Path, monkeypatch, command, remote):
    # --remote "" (an unset $REMOTE in a script) was the path "", i.e. the current directory:
    # it became the release remote, received the package, and published a new version
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        release.main([*command, "--remote", remote, "--root", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --remote: {remote!r}: empty; name a DVC remote, a URL or a path" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_dvc_yaml_without_the_artifact_or_a_lock_without_the_package_is_one_line_error():
    with pytest.raises(PipelineError, match=r"dvc.yaml: no artifact 'onnx-model' with a path under `artifacts:`"):
        release.artifact_path("stages: {}\n", "dvc.yaml")
    with pytest.raises(PipelineError, match=r"dvc.lock in ws records no output models/onnx \(run `dvc repro`"):
        release.lock_record(DVC_YAML, "schema: '2.0'\nstages: {}\n", "in ws")


def test_current_moves_by_an_atomic_replace_of_a_temp_link(tmp_path: Path, monkeypatch):
    """Flipped hundreds of times under a reader that never sleeps, with thread switches as
    frequent as Python allows: the reader always finds a link to a whole package."""
    fake_version(tmp_path, "v1.0.0")
    fake_version(tmp_path, "v2.0.0")
    replaced, real_replace = [], os.replace

    def spy(source, target):
        replaced.append((Path(source).parent, Path(source).name, os.path.islink(source), Path(target)))
        real_replace(source, target)

    monkeypatch.setattr(release.os, "replace", spy)
    assert release.point_current(tmp_path, "v1.0.0") is True
    reader = Reader(tmp_path / "current", pause=0)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    reader.start()
    try:
        for turn in range(400):
            assert release.point_current(tmp_path, ("v2.0.0", "v1.0.0")[turn % 2]) is True
    finally:
        failures = reader.stop()
        sys.setswitchinterval(switch)
    assert not failures and reader.reads > 0
    assert len(replaced) == 401
    assert all(parent == tmp_path and name.startswith(".current.") and is_link and target == tmp_path / "current"
               for parent, name, is_link, target in replaced)
    assert release.point_current(tmp_path, "v1.0.0") is False and len(replaced) == 401  # already there: untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["current", "v1.0.0", "v2.0.0"]  # no temp link left
    assert release.prune(tmp_path, keep=1) == ["v2.0.0"] and visible(tmp_path) == ["current", "v1.0.0"]


def test_a_version_folder_without_a_manifest_a_current_that_is_no_link_or_a_second_sync_is_one_line_error(tmp_path: Path):
    (tmp_path / "v1.0.0").mkdir()
    with pytest.raises(release.ReleaseError, match=r"v1.0.0: has no manifest.json, so sync did not fetch it; remove it"):
        release.check_complete(tmp_path / "v1.0.0")
    (tmp_path / "current").mkdir()
    with pytest.raises(release.ReleaseError, match=r"current: not a symlink; sync keeps it a link to a version folder"):
        release.current_target(tmp_path)
    with release.sync_lock(tmp_path), pytest.raises(release.ReleaseError, match=r"another sync is running \(it holds .sync.lock\)"):
        with release.sync_lock(tmp_path):
            pass


def test_sync_every_prints_changes_and_survives_a_failed_round(tmp_path: Path, monkeypatch, capsys):
    rounds = [("v2.0.0", False), ("v2.0.0", False), release.ReleaseError("dvc artifacts get failed: remote away"),
              ("v3.0.0", True), ("v3.0.0", False)]

    def sync_once(root, into, remote, keep):
        assert (root, into, remote, keep) == (tmp_path, tmp_path / "models", None, 3)
        outcome = rounds.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    slept = []

    def sleep(seconds):
        slept.append(seconds)
        if not rounds:
            raise KeyboardInterrupt  # Ctrl-C: ends the loop quietly

    monkeypatch.setattr(release, "check_workspace", lambda root: root)
    monkeypatch.setattr(release, "sync_once", sync_once)
    monkeypatch.setattr(release, "time", type("FakeTime", (), {"sleep": staticmethod(sleep)}))
    release.main(["sync", "--into", str(tmp_path / "models"), "--root", str(tmp_path), "--every", "7.5", "--keep", "3"])
    out, err = capsys.readouterr()
    assert out == "current is v2.0.0 (unchanged)\ncurrent -> v3.0.0\n"
    assert err == "error: release: dvc artifacts get failed: remote away\n"
    assert slept == [7.5] * 5
    for bad in (["--every", "0"], ["--every", "nan"], ["--keep", "0"], ["--keep", "1.5"]):
        with pytest.raises(SystemExit):
            release.parse_args(["sync", "--into", "models", *bad])
