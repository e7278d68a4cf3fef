"""Self-training's pieces (finetune.self_training): the fine-tuned model's confident guesses for
the target train rows a label budget leaves out, and the names of the rounds' runs. The rounds
themselves run in tasks.classification.train.fine_tune."""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset
from transformers import PreTrainedModel

from tasks.classification.model import collated_batches


def round_name(name: str, index: int, rounds: int) -> str:
    """The run name of round `index` of `rounds` (0: the labelled rows alone). The last round's
    model is the one shipped, so it trains as `name`: the stage's DVCLive metrics are its own."""
    return name if index == rounds else f"{name}-self-training-{index}"


def pseudo_labelled(model: PreTrainedModel, rows: Dataset, tokenizer, labels: list[str], batch_size: int,
                    min_confidence: float) -> tuple[Dataset, dict]:
    """The tokenized `rows` the model predicts with a probability of at least `min_confidence`,
    relabelled with its guesses, and a report: how many, per label, and how often a guess
    equals the label the budget held back (the rows come from the labelled train split)."""
    probabilities = class_probabilities(model, rows, tokenizer, batch_size)
    confident = np.flatnonzero(probabilities.max(axis=1) >= min_confidence)
    guesses = probabilities.argmax(axis=1)[confident]
    held_back = np.asarray(rows["labels"], dtype=np.int64)[confident]
    report = {
        "pseudo_rows": int(len(confident)),
        "unlabelled_rows": len(rows),
        "per_label": {label: int((guesses == index).sum()) for index, label in enumerate(labels)},
        "agree_with_held_back_labels": float((guesses == held_back).mean()) if len(confident) else None,
    }
    pseudo = rows.select(confident).map(lambda _, i: {"labels": int(guesses[i])}, with_indices=True)
    return pseudo, report


@torch.no_grad()
def class_probabilities(model: PreTrainedModel, rows: Dataset, tokenizer, batch_size: int) -> np.ndarray:
    """Softmax over the classifier's logits for tokenized `rows` (rows x classes), on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    probabilities = [np.zeros((0, model.config.num_labels), dtype=np.float32)]
    for batch in collated_batches(rows, tokenizer, batch_size, device):
        probabilities.append(torch.softmax(model(**batch).logits.float(), dim=-1).cpu().numpy())
    return np.concatenate(probabilities)
