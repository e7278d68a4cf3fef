"""One way to train with the HF Trainer: device choice, checkpoint/resume, early stopping,
dynamic padding with length grouping, DVCLive logs. Used by pretrain, finetune and evaluate
(the target-only baseline) of every kind."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from collections.abc import Callable

import torch
from datasets import Dataset
from transformers import (
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)
from transformers.trainer_utils import get_last_checkpoint

from tasks.common.errors import PipelineError
from tasks.common.paths import Paths
from tasks.params import Params, TrainParams

FINGERPRINT_FILE = "run_fingerprint.json"
TRAINER_STATE = "trainer_state.json"  # the last file of a checkpoint the Trainer writes


def pick_device(preference: str) -> torch.device:
    if preference == "cuda" and not torch.cuda.is_available():
        raise PipelineError("device: 'cuda' requested but no CUDA device is available (use auto or cpu)")
    if preference in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


@dataclass
class TrainJob:
    """Everything one training run needs besides the model."""

    params: TrainParams
    train: Dataset
    val: Optional[Dataset]
    tokenizer: PreTrainedTokenizerBase
    checkpoint_dir: Path  # survives a killed run; removed after success
    live_dir: Optional[Path]  # DVCLive metrics/plots
    seed: int
    device: str = "auto"
    metric: str = "loss"  # what early stopping and best-model selection watch (the kind's own score)
    greater_is_better: bool = False
    collator: Any = None
    compute_metrics: Optional[Callable] = None  # Trainer's compute_metrics (the kind's own scores)
    optimizer: Optional[torch.optim.Optimizer] = None
    fingerprint: Optional[dict] = None  # what makes a checkpoint resumable (params, data)


def capped_steps(p: TrainParams, train_rows: int, rows_per_step: int) -> int:
    """The run's length in optimizer steps: `epochs` over `train_rows`, at least `min_steps`
    (a small label budget trains more epochs instead of a handful of steps), at most `max_steps`
    (-1: epochs alone, no cap). -1 when epochs alone decide (the Trainer counts them itself).
    The HF Trainer's own max_steps replaces epochs outright, so a cap meant for a large training
    set would run a small one for hundreds of epochs: hence the explicit count."""
    if p.max_steps < 0 and p.min_steps == 0:
        return -1
    per_epoch = max(1, math.ceil(train_rows / rows_per_step))  # the last batch may be short
    steps = max(math.ceil(p.epochs * per_epoch), p.min_steps)
    return steps if p.max_steps < 0 else min(steps, p.max_steps)


def training_arguments(job: TrainJob) -> TrainingArguments:
    """The Trainer's arguments; the run's length is capped_steps (epochs, floored by min_steps, capped by max_steps)."""
    p = job.params
    on_cuda = pick_device(job.device).type == "cuda"
    evaluate = job.val is not None
    args = TrainingArguments(
        output_dir=str(job.checkpoint_dir),
        learning_rate=p.learning_rate,
        per_device_train_batch_size=p.batch_size,
        per_device_eval_batch_size=max(p.batch_size, 64),
        num_train_epochs=p.epochs,
        max_steps=p.max_steps,
        warmup_steps=p.warmup_ratio,  # a float < 1 is read as a ratio of the total steps
        weight_decay=p.weight_decay,
        lr_scheduler_type=p.lr_scheduler,
        label_smoothing_factor=p.label_smoothing,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=p.eval_steps,
        save_strategy="steps",
        save_steps=p.eval_steps,
        save_total_limit=2,
        load_best_model_at_end=evaluate,
        metric_for_best_model=job.metric if evaluate else None,
        greater_is_better=job.greater_is_better,
        logging_steps=max(1, min(p.eval_steps, 10)),
        seed=job.seed,
        data_seed=job.seed,
        use_cpu=not on_cuda,
        bf16=on_cuda and torch.cuda.is_bf16_supported(),
        train_sampling_strategy="group_by_length",
        report_to="none",
        dataloader_num_workers=0,
        save_only_model=False,
    )
    # rows a step takes over all processes (DataParallel: train_batch_size; DDP: world_size)
    args.max_steps = capped_steps(p, len(job.train), args.train_batch_size * args.world_size)
    return args


class LiveCallback(TrainerCallback):
    """Send the Trainer's logs to DVCLive (dvcyaml=False: dvc.yaml stays hand-written)."""

    def __init__(self, live_dir: Path):
        from dvclive import Live

        self.live = Live(dir=str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None)

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key, value in (logs or {}).items():
            if isinstance(value, (int, float)) and key not in ("epoch", "total_flos"):
                self.live.log_metric(key.replace("eval_", "val/").replace("train_", "train/"), value)
        self.live.step = state.global_step
        self.live.next_step()

    def on_train_end(self, args, state, control, **kwargs):
        self.live.end()


def resumable_checkpoint(job: TrainJob) -> Optional[str]:
    """The latest checkpoint of an interrupted run with the same fingerprint; anything else
    (a finished or a different run) is wiped so it cannot leak into this one."""
    directory = job.checkpoint_dir
    marker = directory / FINGERPRINT_FILE
    wanted = json.dumps(job.fingerprint or {}, sort_keys=True, default=str)
    if directory.exists() and (not marker.exists() or marker.read_text() != wanted):
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    marker.write_text(wanted)
    return latest_complete_checkpoint(directory)


def latest_complete_checkpoint(directory: Path) -> Optional[str]:
    """The newest checkpoint the Trainer finished writing. It writes a checkpoint in place
    (weights, optimizer, RNG state, then trainer_state.json last), so a kill -9 mid-save leaves a
    folder without a readable trainer_state.json: removed, and the one before it is resumed."""
    while (latest := get_last_checkpoint(str(directory))) is not None:
        try:
            json.loads((Path(latest) / TRAINER_STATE).read_text())
            return latest
        except (OSError, ValueError):
            shutil.rmtree(latest)
    return None


def train(model: PreTrainedModel, job: TrainJob) -> Trainer:
    callbacks: list[TrainerCallback] = []
    if job.val is not None and job.params.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=job.params.early_stopping_patience))
    if job.live_dir is not None:
        callbacks.append(LiveCallback(job.live_dir))
    trainer = Trainer(
        model=model,
        args=training_arguments(job),
        train_dataset=job.train,
        eval_dataset=job.val,
        processing_class=job.tokenizer,
        data_collator=job.collator or DataCollatorWithPadding(job.tokenizer),
        compute_metrics=job.compute_metrics if job.val is not None else None,
        callbacks=callbacks,
        optimizers=(job.optimizer, None),
    )
    checkpoint = resumable_checkpoint(job)
    if checkpoint:
        print(f"{job.checkpoint_dir.name}: resuming from {Path(checkpoint).name} "
              "(an interrupted run with the same params and data)", file=sys.stderr, flush=True)
    trainer.train(resume_from_checkpoint=checkpoint)
    return trainer


def finish(job: TrainJob) -> None:
    """A finished run's checkpoints are no longer needed (and must not be resumed)."""
    shutil.rmtree(job.checkpoint_dir, ignore_errors=True)


def fingerprint_of(*parts: Any) -> dict:
    text = json.dumps(parts, sort_keys=True, default=str)
    return {"sha256": hashlib.sha256(text.encode()).hexdigest()}


def history(trainer: Trainer) -> list[dict]:
    """The Trainer's log history (losses, eval figures by step), for learning-curve plots."""
    return [dict(entry) for entry in trainer.state.log_history]


def train_named_run(
    model: PreTrainedModel, p: Params, paths: Paths, name: str, tp: TrainParams, rows: Dataset, val: Optional[Dataset],
    tokenizer: PreTrainedTokenizerBase, fingerprint: dict, **options: Any,
) -> tuple[PreTrainedModel, dict]:
    """Train `model` on `rows` as the run `name` (checkpoints/<name>, dvclive/<name>, the run's
    seed and device; `options`: the other TrainJob fields) and report it. Returns the model
    (best val checkpoint) and {train_rows, val (final evaluation), history}."""
    job = TrainJob(
        params=tp, train=rows, val=val, tokenizer=tokenizer, checkpoint_dir=paths.checkpoints(name),
        live_dir=paths.live_dir(name), seed=p.seed, device=p.device, fingerprint=fingerprint, **options,
    )
    trainer = train(model, job)
    result = {"train_rows": len(job.train), "val": trainer.evaluate(), "history": history(trainer)}
    finish(job)
    return trainer.model, result


def trainable_parameters(model: PreTrainedModel) -> int:
    return sum(q.numel() for q in model.parameters() if q.requires_grad)
