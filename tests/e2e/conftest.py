"""End-to-end helpers: a real workspace (flows.workspace) with the given params, and the
environment its `dvc` and `python -m flows.pipeline` subprocesses run in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from flows import workspace


def run_ok(command: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def make_project(base: Path, params: dict) -> tuple[Path, dict]:
    """A git + DVC workspace under `base` holding `params` as its params.yaml."""
    params_file = base / "params.source.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    root = workspace.create(base / "ws", params_file)
    env = dict(os.environ, PYTHONPATH=str(root), PREFECT_HOME=str(root / ".prefect"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("PREFECT_API_URL", None)
    return root, env
