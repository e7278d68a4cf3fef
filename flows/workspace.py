"""A second, self-contained pipeline workspace: `python -m flows.workspace DIR --params FILE`.

One repository, one `dvc.yaml`, one `dvc.lock` per workspace: the classification demo lives in
the repository root, and a run with other params (the translation demo, a smoke run) gets a
workspace of its own, so neither overwrites the other's data, models or lock. The workspace is
a git + DVC repository (so `dvc repro`, the flow and `dvc exp run` all work in it) holding a
copy of the code (`tasks/`, `flows/`, `dvc.yaml`), a link to the repository's `data/external`,
and its own `params.yaml`, taken from FILE when the workspace is new (or with --reset-params),
so the edits and `dvc exp run -S` of a user are kept between runs.

Re-running it refreshes the code copy; DVC hashes contents, so an unchanged copy re-runs nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tasks.common.errors import PipelineError, user_errors

REPO = Path(__file__).resolve().parents[1]
CODE = ["tasks", "serving", "flows"]
FILES = ["dvc.yaml", ".dvcignore", ".gitignore"]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


def copy_code(root: Path) -> None:
    """The workspace runs its own copy of the code: stage commands are `python -m tasks <stage>` in it."""
    for name in CODE:
        shutil.rmtree(root / name, ignore_errors=True)
        shutil.copytree(REPO / name, root / name, ignore=IGNORE)
    for name in FILES:
        shutil.copy2(REPO / name, root / name)


def link_external_data(root: Path) -> None:
    """The demo inputs (`make data`) are shared, not copied: DVC hashes them through the link."""
    link = root / "data" / "external"
    target = (REPO / "data" / "external").resolve()
    if link.is_symlink() or link.exists() or not target.is_dir():  # no demo data here: params name their own
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link, target_is_directory=True)


def git(root: Path, *args: str) -> None:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if done.returncode:
        raise PipelineError(f"{root}: git {' '.join(args)} failed: {done.stderr.strip().splitlines()[-1:]}")


def init_repositories(root: Path) -> None:
    """git + DVC, with a first commit: `dvc exp run` needs a commit to branch experiments from."""
    if not (root / ".git").exists():
        git(root, "init", "-q")
    if not (root / ".dvc").exists():
        done = subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, capture_output=True, text=True)
        if done.returncode:
            raise PipelineError(f"{root}: dvc init failed: {done.stderr.strip()}")
        git(root, "add", "-A")
        git(root, "-c", "user.name=pipeline", "-c", "user.email=pipeline@localhost", "commit", "-qm", "workspace")


def create(root: Path, params_file: Path, reset_params: bool = False) -> Path:
    if not params_file.is_file():
        raise PipelineError(f"--params: {params_file} not found")
    root.mkdir(parents=True, exist_ok=True)
    copy_code(root)
    link_external_data(root)
    if reset_params or not (root / "params.yaml").exists():
        shutil.copy2(params_file, root / "params.yaml")
    init_repositories(root)
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.workspace", description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="the workspace directory (created when missing)")
    parser.add_argument("--params", type=Path, required=True, help="params file copied in as params.yaml")
    parser.add_argument("--reset-params", action="store_true", help="overwrite the workspace's params.yaml")
    args = parser.parse_args(argv)
    with user_errors("workspace"):
        root = create(args.root.resolve(), args.params, args.reset_params)
        print(f"workspace ready: {root} (params {root / 'params.yaml'})")


if __name__ == "__main__":
    main()
