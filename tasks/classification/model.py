"""The classification model and its data: a sequence classifier over `task.labels`, built from
a pretrained init or a scratch config, the tokenized splits it reads, the handoff checks between
stages, and batched prediction with dynamic padding."""

from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence

import numpy as np
import torch
from datasets import DatasetDict, load_from_disk
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from tasks.common.errors import HandoffError
from tasks.common.models import SCRATCH, first_line, resolve_init, vocab_fingerprint
from tasks.common.paths import Paths
from tasks.params import ScratchConfig

# What the model and the length-grouped sampler read; `id` stays on disk for evaluate.
MODEL_INPUTS = ["input_ids", "attention_mask", "token_type_ids", "labels", "length"]


def label_maps(labels: Sequence[str]) -> dict:
    return {"id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}


def new_classifier(
    init: str, labels: Sequence[str], scratch: ScratchConfig, tokenizer: PreTrainedTokenizerBase
) -> PreTrainedModel:
    """A sequence classifier with a fresh head, from a pretrained init or a scratch config."""
    if init == SCRATCH:
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=scratch.hidden_size,
            num_hidden_layers=scratch.layers,
            num_attention_heads=scratch.heads,
            intermediate_size=scratch.intermediate_size,
            max_position_embeddings=max(512, tokenizer.model_max_length),  # scratch: tokenize.max_length
            pad_token_id=tokenizer.pad_token_id,
            num_labels=len(labels),
            **label_maps(labels),
        )
        return BertForSequenceClassification(config)
    return load_classifier(resolve_init(init), labels)


def load_classifier(path: str | Path, labels: Sequence[str]) -> PreTrainedModel:
    """Load an encoder (with or without a head) as a classifier over `labels`."""
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            str(path), num_labels=len(labels), **label_maps(labels)
        )
    except (OSError, ValueError) as err:
        raise HandoffError(f"cannot load a classifier from {path}: {first_line(err)}") from None


def load_tokenized(paths: Paths, domain: str) -> tuple[DatasetDict, PreTrainedTokenizerBase]:
    if not paths.tokenizer.exists() or not paths.tokenized_domain(domain).exists():
        raise HandoffError(f"{paths.tokenized} not found: run the tokenize stage first")
    tokenizer = AutoTokenizer.from_pretrained(str(paths.tokenizer))
    splits = load_from_disk(str(paths.tokenized_domain(domain)))
    keep = [c for c in splits["train"].column_names if c in MODEL_INPUTS]
    return splits.select_columns(keep), tokenizer


def has_classifier_head(model_dir: Path) -> bool:
    config = AutoConfig.from_pretrained(str(model_dir))
    return any(arch.endswith("ForSequenceClassification") for arch in (config.architectures or []))


def model_labels(model_dir: Path) -> list[str]:
    config = AutoConfig.from_pretrained(str(model_dir))
    return [config.id2label[i] for i in sorted(config.id2label)]


def check_handoff(model_dir: Path, data_tokenizer: PreTrainedTokenizerBase, labels: Sequence[str]) -> None:
    """The model must read the same token ids the data was tokenized with, and a trained head
    must predict the same classes, in the same order, as this task."""
    if not (model_dir / "config.json").exists():
        raise HandoffError(f"{model_dir} has no model (config.json missing): run the previous stage first")
    model_tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if vocab_fingerprint(model_tokenizer) != vocab_fingerprint(data_tokenizer):
        raise HandoffError(
            f"{model_dir}: its tokenizer differs from data/tokenized/tokenizer "
            f"(vocab {len(model_tokenizer)} vs {len(data_tokenizer)}): re-run tokenize and pretrain together"
        )
    if has_classifier_head(model_dir):
        found = model_labels(model_dir)
        if found != list(labels):
            raise HandoffError(f"{model_dir}: model labels {found} differ from task.labels {list(labels)}")


@torch.no_grad()
def predict(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    batch_size: int,
    max_length: int,
    device: torch.device,
) -> np.ndarray:
    """Logits for `texts`, sorted by length and padded per batch (dynamic padding)."""
    model.eval().to(device)
    order = np.argsort([len(t) for t in texts], kind="stable")
    logits = np.zeros((len(texts), model.config.num_labels), dtype=np.float32)
    for start in range(0, len(texts), batch_size):
        index = order[start : start + batch_size]
        batch = tokenizer(
            [texts[i] for i in index], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        ).to(device)
        logits[index] = model(**batch).logits.float().cpu().numpy()
    return logits
