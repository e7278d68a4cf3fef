"""The SetFit baseline (evaluate.baselines: [..., setfit]): what a user would pick instead of this
project for a few hundred labels, on the same body (model.init), the same budgeted target subsets
and the same seeds as the other models. SetFit's method, run by the `setfit` package itself:
contrastive fine-tuning of the sentence-transformers body on generated same/different-label pairs
(CosineSimilarityLoss), then a logistic-regression head on its pooled embeddings. Optional:
`pip install -r requirements-setfit.txt` (imported only when the baseline runs)."""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset

from tasks.classification.train import budget_subset
from tasks.common.errors import PipelineError
from tasks.common.models import SCRATCH, first_line, resolve_init
from tasks.common.training import pick_device
from tasks.params import Params, SetFitParams

MISSING = "evaluate.baselines: setfit needs the setfit package: pip install -r requirements-setfit.txt"


def setfit_rows(train_split: Dataset, budget: int | None, seed: int) -> list[dict]:
    """The rows the other models train on at `budget` and `seed` (the same stratified subset:
    tasks.classification.train.budget_subset), as SetFit's {"text", "label"} rows; `train_split`
    is the tokenized target train split (its `text` and `labels` columns)."""
    rows = budget_subset(train_split, budget, seed)
    return [{"text": text, "label": label} for text, label in zip(rows["text"], rows["labels"])]


def setfit_predictions(p: Params, train_rows: list[dict], texts: list[str]) -> tuple[np.ndarray, dict]:
    """Train SetFit on `train_rows` ({"text", "label"}: a class name of task.labels or its id)
    and predict `texts`: label ids in task.labels order, and notes (rows, params, seconds)."""
    try:
        import setfit
    except ImportError:
        raise PipelineError(MISSING) from None
    labels = p.task.labels
    label_ids = [label_id(row["label"], labels) for row in train_rows]
    if len(set(label_ids)) < 2:
        raise PipelineError(f"evaluate.baselines: setfit needs rows of at least two classes, got {len(train_rows)} rows of one")
    sp = p.evaluate.setfit
    device = pick_device(p.device)
    max_steps = setfit_step_cap(len(train_rows), sp)
    started = time.perf_counter()
    with cpu_only(device.type == "cpu"), tempfile.TemporaryDirectory(prefix="setfit-") as scratch:
        model = setfit.SetFitModel.from_pretrained(body_folder(p.model.init), device=str(device))
        model.model_body.max_seq_length = p.tokenize.max_length  # what the other models read of a text
        args = setfit.TrainingArguments(
            output_dir=scratch,
            num_iterations=sp.num_iterations,
            num_epochs=sp.epochs,
            max_steps=max_steps,
            batch_size=sp.batch_size,
            body_learning_rate=sp.learning_rate,
            seed=p.seed,
            save_strategy="no",
            report_to="none",
            show_progress_bar=True,
        )
        train = Dataset.from_dict({"text": [row["text"] for row in train_rows], "label": label_ids})
        trainer = setfit.Trainer(model=model, args=args, train_dataset=train)
        trainer.train()
        trained = time.perf_counter()
        predicted = model.predict(list(texts), batch_size=p.evaluate.batch_size, use_labels=False, show_progress_bar=True)
    predicted = np.asarray(predicted.cpu() if isinstance(predicted, torch.Tensor) else predicted, dtype=np.int64)
    notes = {
        "train_rows": len(train_rows),
        "pairs": setfit_pairs(len(train_rows), sp),
        "num_iterations": sp.num_iterations,
        "epochs": sp.epochs,
        "max_steps": max_steps,
        "batch_size": sp.batch_size,
        "learning_rate": sp.learning_rate,
        "seed": p.seed,
        "device": device.type,
        "setfit": setfit.__version__,
        "train_seconds": round(trained - started, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return predicted, notes


def setfit_pairs(rows: int, sp: SetFitParams) -> int:
    """The contrastive pairs SetFit generates per epoch (setfit.sampler.ContrastiveDataset):
    num_iterations x rows same-label pairs and as many different-label ones."""
    return sp.num_iterations * 2 * rows


def setfit_step_cap(rows: int, sp: SetFitParams) -> int:
    """evaluate.setfit.max_steps as a cap: SetFit's own max_steps REPLACES its epochs (a small
    budget would train past its one epoch), so it is passed only when the run would be longer."""
    steps = math.ceil(setfit_pairs(rows, sp) / sp.batch_size) * sp.epochs
    return sp.max_steps if 0 <= sp.max_steps < steps else -1


def label_id(label: str | int, labels: Sequence[str]) -> int:
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool) and 0 <= label < len(labels):
        return int(label)
    if isinstance(label, str) and label in labels:
        return labels.index(label)
    raise PipelineError(f"evaluate.baselines: setfit: label {label!r} is not one of task.labels {list(labels)}")


def body_folder(init: str) -> str:
    """model.init as a local folder: a packaged model, a local path, or an HF id already in the
    local cache (never downloaded); SetFit needs a pretrained body, so not scratch."""
    if init == SCRATCH:
        raise PipelineError("evaluate.baselines: setfit needs a pretrained model.init (a sentence-transformers body), not scratch")
    resolved = resolve_init(init)
    if Path(resolved).is_dir():
        return resolved
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(resolved, local_files_only=True)
    except Exception as err:  # not cached, or not a valid repo id: either way no local body
        raise PipelineError(f"model.init: setfit needs '{init}' as a local folder or in the HF cache: {first_line(err)}") from None


@contextmanager
def cpu_only(on: bool) -> Iterator[None]:
    """device: cpu on a CUDA machine: SetFit's inner transformers Trainer picks its own device,
    and reads ACCELERATE_USE_CPU for it (its args are built inside setfit, out of reach)."""
    if not on or not torch.cuda.is_available():
        yield
        return
    before = os.environ.get("ACCELERATE_USE_CPU")
    os.environ["ACCELERATE_USE_CPU"] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("ACCELERATE_USE_CPU", None)
        else:
            os.environ["ACCELERATE_USE_CPU"] = before
