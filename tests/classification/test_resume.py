"""kill -9 during finetune, then run it again: training resumes from the newest complete
checkpoint (one half-written when the process died is removed) and ends with the model and the
metrics of an uninterrupted run with the same seed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from safetensors.torch import load_file

from tasks.common.paths import Paths
from tasks.common.training import latest_complete_checkpoint
from tests.classification.conftest import REPO

# ~140 train rows at batch 16: 9 steps an epoch; 40 epochs capped at 60 steps, no early stop
FINETUNE = {"finetune.max_steps": 60, "finetune.epochs": 40.0, "finetune.eval_steps": 4,
            "finetune.early_stopping_patience": 0, "finetune.learning_rate": 5e-4}


def stage(root: Path, params_file: Path, name: str) -> subprocess.Popen:
    env = {**os.environ, "PIPELINE_PARAMS": str(params_file), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "tasks", name], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def workspace_copy(source: Path, root: Path, params) -> Path:
    shutil.copytree(source, root)
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    return params_file


def scores(root: Path) -> dict:
    val = json.loads((root / "models/target/finetune.json").read_text())["val"]
    return {key: round(val[key], 6) for key in ("eval_loss", "eval_accuracy", "eval_f1_macro")}


def test_kill_9_during_finetune_then_rerun_equals_an_uninterrupted_run(pretrained_workspace, params, tmp_path):
    p = params(**FINETUNE)
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    killed_params, straight_params = workspace_copy(pretrained_workspace, killed, p), workspace_copy(pretrained_workspace, straight, p)

    first = stage(killed, killed_params, "finetune")
    checkpoints = Paths(killed).checkpoints("finetune")
    deadline = time.monotonic() + 120
    while not (checkpoints / "checkpoint-12").exists():
        assert first.poll() is None, f"finetune ended before it could be killed: {first.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, "no checkpoint-12 within 120 s"
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    assert not (killed / "models/target").exists()
    resumed_from = latest_complete_checkpoint(checkpoints)
    assert resumed_from is not None and int(resumed_from.rsplit("-", 1)[1]) >= 8

    said = {}
    for root, params_file in ((killed, killed_params), (straight, straight_params)):
        done = stage(root, params_file, "finetune")
        _, said[root] = done.communicate(timeout=300)
        assert done.returncode == 0, said[root][-3000:]
    assert f"finetune: resuming from {Path(resumed_from).name}" in said[killed]
    assert "resuming" not in said[straight]
    assert scores(killed) == scores(straight)
    a, b = load_file(killed / "models/target/model.safetensors"), load_file(straight / "models/target/model.safetensors")
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() <= 1e-6 for k in a)


def test_a_half_written_checkpoint_is_removed_and_the_one_before_resumed(tmp_path):
    for step in (4, 8):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text('{"global_step": 4}')
    assert latest_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert not (tmp_path / "checkpoint-8").exists()
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text('{"global_st')  # cut mid-write
    assert latest_complete_checkpoint(tmp_path) is None
