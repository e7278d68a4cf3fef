"""A second, self-contained pipeline workspace: `python -m flows.workspace DIR --params FILE`.

One repository, one `dvc.yaml`, one `dvc.lock` per workspace: the classification demo lives in
the repository root, and a run with other params (the translation demo, a smoke run) gets a
workspace of its own, so neither overwrites the other's data, models or lock. The workspace is
a git + DVC repository (so `dvc repro`, the flow and `dvc exp run` all work in it) holding a
copy of the code (`tasks/`, `flows/`, `dvc.yaml`), a link to the repository's `data/external`,
and its own `params.yaml`, taken from FILE when the workspace is new (or with --reset-params),
so the edits and `dvc exp run -S` of a user are kept between runs.

Relative input paths (`data.<domain>.path`) mean what they mean in the repository root, where
params.yaml lives: each one that is not in the workspace but is in the repository is linked in
(`data/external` as a whole), so a params file copied from the root runs unchanged. Absolute
paths and URLs are used as they are. Nothing is linked over a stage output (data/prepared,
models, ...), so a run here never writes into the repository's own results.

Re-running it refreshes the code copy and the links (a workspace made before `make data` gets
its `data/external` then); DVC hashes contents, so an unchanged copy re-runs nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tasks.common.errors import ParamsError, PipelineError, user_errors
from tasks.params import SourceSpec, load_params

REPO = Path(__file__).resolve().parents[1]
CODE = ["tasks", "serving", "flows"]
FILES = ["dvc.yaml", ".dvcignore", ".gitignore"]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")
EXTERNAL = Path("data") / "external"
# Where the stages write (dvc.yaml's outs and their parents): a link there would send the
# workspace's outputs into the repository's own.
OUTPUTS = [Path(name) for name in ("data/prepared", "data/tokenized", "models", "reports", "metrics",
                                   "plots", "dvclive", "checkpoints")]


def copy_code(root: Path) -> None:
    """The workspace runs its own copy of the code: stage commands are `python -m tasks <stage>` in it."""
    for name in CODE:
        shutil.rmtree(root / name, ignore_errors=True)
        shutil.copytree(REPO / name, root / name, ignore=IGNORE)
    for name in FILES:
        shutil.copy2(REPO / name, root / name)


def ensure_link(link: Path, target: Path) -> None:
    """`link` -> `target`, replacing a stale or dangling link; a real file or folder stays (the user's)."""
    if link.is_symlink():
        if link.resolve() == target.resolve():
            return
        link.unlink()
    elif link.exists():
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target.resolve(), link, target_is_directory=target.is_dir())


def link_external_data(root: Path) -> None:
    """The demo inputs (`make data`) are shared, not copied: DVC hashes them through the link.
    Made on every refresh, so a workspace created before `make data` gets it later."""
    if (REPO / EXTERNAL).is_dir():
        ensure_link(root / EXTERNAL, REPO / EXTERNAL)


def input_files(spec: SourceSpec) -> list[Path]:
    """The repository-relative paths a data section reads: the path, or format text's
    `<path>.<lang>[.gz]` files (as tasks/translation/ingest.py finds them)."""
    if spec.path.startswith(("http://", "https://")) or Path(spec.path).is_absolute():
        return []
    path = Path(spec.path)
    if spec.format == "text" and spec.splits is None and spec.languages is not None:
        langs = (spec.languages.src, spec.languages.tgt)
        return [Path(f"{path}.{lang}{gz}") for lang in langs for gz in ("", ".gz")]
    return [path]


def linkable(relative: Path) -> bool:
    """Inside the workspace and clear of every stage output (neither above nor below one)."""
    if ".." in relative.parts or relative == Path("."):
        return False
    return not any(out == relative or out in relative.parents or relative in out.parents for out in OUTPUTS)


def link_inputs(root: Path) -> None:
    """Link each relative input of the workspace's params.yaml that only the repository has."""
    try:
        params = load_params(root / "params.yaml")
    except ParamsError as err:  # the workspace is made either way (its params.yaml is there to edit)
        print(f"warning: {err}: no stage will run until it is fixed", file=sys.stderr)
        return
    for spec in (params.data.source, params.data.target):
        for relative in input_files(spec):
            found = REPO / relative
            if linkable(relative) and not (root / relative).exists() and (found.exists() or found.is_symlink()):
                ensure_link(root / relative, found)


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


def check_root(root: Path) -> None:
    """The workspace is a directory of its own: the repository itself would have its code
    deleted by copy_code (rmtree then copy from itself), and a folder inside the code would be
    copied into itself without end."""
    if root == REPO:
        raise PipelineError(f"{root}: is the repository itself; a workspace is a directory of its own "
                            "(e.g. runs/my); to run in the repository, edit params.yaml and run `make run` without PARAMS")
    for name in CODE:
        if root.is_relative_to(REPO / name):
            raise PipelineError(f"{root}: is inside the code folder {REPO / name}, which is copied into the workspace; "
                                "pick a directory outside it (e.g. runs/my)")
    if root.exists() and not root.is_dir():
        raise PipelineError(f"{root}: exists and is not a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PipelineError(f"{root}: cannot create the workspace: {err.strerror or err}") from None


def create(root: Path, params_file: Path, reset_params: bool = False) -> Path:
    if not params_file.is_file():
        raise PipelineError(f"--params: {params_file} not found")
    check_root(root)
    copy_code(root)
    link_external_data(root)
    copy_params(params_file, root / "params.yaml", reset_params)
    link_inputs(root)
    init_repositories(root)
    return root


def copy_params(params_file: Path, dest: Path, reset: bool) -> None:
    """FILE becomes params.yaml when the workspace is new or on --reset-params (saying so when
    that replaces a params.yaml that differed: edits there, or a `dvc exp run -S` left over)."""
    if dest.exists() and (not reset or dest.samefile(params_file)):
        return
    if dest.exists() and dest.read_bytes() != params_file.read_bytes():
        print(f"{dest}: replaced by {params_file}", file=sys.stderr)
    shutil.copy2(params_file, dest)


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
