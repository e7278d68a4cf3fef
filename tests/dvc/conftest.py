"""DVC-level fixtures: tiny params of both task kinds (real data subsets, 2-layer scratch
models, a few training steps), taken from the repository's own params.yaml and
demos/translation.yaml so that every section a user has is there; and git + DVC workspaces
made by `flows.workspace`, with the environment their `dvc` subprocesses run in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows import workspace

REPO = Path(__file__).resolve().parents[2]
STAGES = ("ingest", "tokenize", "pretrain", "finetune", "evaluate", "export")


def shrink_training(params: dict, **train: float) -> None:
    for section in (params["pretrain"], params["finetune"], params["evaluate"]["target_only"]):
        section.update(train)


def tiny_classification(movie_file: Path, amazon_file: Path) -> dict:
    """params.yaml on 200-row subsets of the movie -> amazon snippets, a 2-layer scratch model."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["device"] = "cpu"
    for domain, file in (("source", movie_file), ("target", amazon_file)):
        params["data"][domain].update(path=str(file), max_rows=200)
    params["model"] = {"init": "scratch", "scratch": {"layers": 2, "hidden_size": 32, "heads": 2,
                                                      "intermediate_size": 64, "vocab_size": 1000}}
    params["tokenize"]["max_length"] = 64
    shrink_training(params, max_steps=6, eval_steps=3, learning_rate=1e-3)
    params["pretrain"]["mlm_max_steps"] = 6  # the MLM phase of mlm+supervised, as short as the rest
    params["export"]["parity_samples"] = 16
    params["export"]["max_int8_drop"] = 100.0  # INT8 built and scored; the gate's own tests gate
    return params


def tiny_translation(multi30k: Path) -> dict:
    """demos/translation.yaml on 300 Multi30k pairs per language pair, a 2-layer d_model-32
    scratch Marian, 24 test rows, and one extra budget so that the budget curve is a line."""
    params = yaml.safe_load((REPO / "demos/translation.yaml").read_text())
    params["device"] = "cpu"
    for domain in ("source", "target"):
        params["data"][domain].update(path=str(multi30k), max_rows=300)
    params["model"]["scratch"] = {"layers": 2, "decoder_layers": 2, "hidden_size": 32, "heads": 2,
                                  "intermediate_size": 64, "vocab_size": 1000, "dropout": 0.1,
                                  "max_positions": 61}
    params["tokenize"]["max_length"] = 48
    shrink_training(params, max_steps=6, eval_steps=6, learning_rate=3e-3, batch_size=16)
    params["evaluate"].update(test_rows=24, samples=5, curve_budgets=[100])
    params["evaluate"]["generation"].update(num_beams=2, max_new_tokens=12)
    params["export"]["parity_samples"] = 12
    params["export"]["max_int8_drop"] = 100.0  # INT8 built and scored; the gate's own tests gate
    return params


@pytest.fixture(scope="session")
def classification_params(movie_file, amazon_file) -> dict:
    return tiny_classification(movie_file, amazon_file)


@pytest.fixture(scope="session")
def translation_params(multi30k_dir) -> dict:
    return tiny_translation(multi30k_dir)


# ---------------------------------------------------------------- workspaces


def make_workspace(base: Path, params: dict) -> tuple[Path, dict]:
    """A git + DVC workspace (`python -m flows.workspace`) under `base` with `params` as its
    params.yaml and a git identity of its own; and the environment to run `dvc` in it."""
    base.mkdir(parents=True, exist_ok=True)
    params_file = base / "params.source.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    root = workspace.create(base / "ws", params_file)
    for key, value in (("user.name", "pipeline tests"), ("user.email", "tests@localhost")):
        subprocess.run(["git", "config", key, value], cwd=root, check=True)
    env = dict(os.environ, PYTHONPATH=str(root), PREFECT_HOME=str(root / ".prefect"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("PREFECT_API_URL", None)
    return root, env


def run_ok(command: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def dvc(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return run_ok([sys.executable, "-m", "dvc", *args], root, env)


def git(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return run_ok(["git", *args], root, env)
