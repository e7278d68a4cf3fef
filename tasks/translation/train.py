"""Training a translation model with the shared Trainer wrapper (tasks.common.training): used by
pretrain (source pair), finetune (target pair) and evaluate (target-only baseline, curves).

Fine-tuning strategies: full; freeze_bottom (shared embeddings + the bottom `freeze_layers`
encoder layers frozen); freeze_encoder (every encoder layer frozen, embeddings trainable)."""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset, DatasetDict, load_from_disk
from transformers import AutoTokenizer, DataCollatorForSeq2Seq, PreTrainedModel, PreTrainedTokenizerBase

from tasks.common.errors import HandoffError, PipelineError
from tasks.common.paths import Paths
from tasks.common.training import fingerprint_of, train_named_run
from tasks.params import Params, TrainParams

# What the model and the length-grouped sampler read; `id` stays on disk for evaluate.
MODEL_COLUMNS = ["input_ids", "attention_mask", "labels", "length"]


def load_tokenizer(paths: Paths) -> PreTrainedTokenizerBase:
    if not paths.tokenizer.exists():
        raise HandoffError(f"{paths.tokenizer} not found: run the tokenize stage first")
    return AutoTokenizer.from_pretrained(str(paths.tokenizer))


def load_pairs(paths: Paths, domain: str) -> tuple[DatasetDict, PreTrainedTokenizerBase]:
    """One domain's tokenized train/val/test (model columns only) and the shared tokenizer."""
    directory = paths.tokenized_domain(domain)
    if not directory.exists():
        raise HandoffError(f"{directory} not found: run the tokenize stage first")
    splits = load_from_disk(str(directory))
    missing = [c for c in MODEL_COLUMNS if c not in splits["train"].column_names]
    if missing:
        raise HandoffError(f"{directory}: columns {missing} missing (classification data?): re-run tokenize")
    return splits.select_columns(MODEL_COLUMNS), load_tokenizer(paths)


def budget_subset(train_split: Dataset, budget: int | None, seed: int) -> Dataset:
    """`budget` random train pairs (seeded; no labels to stratify by), in their original order."""
    if budget is None or budget >= len(train_split):
        return train_split
    keep = np.random.default_rng(seed).choice(len(train_split), size=budget, replace=False)
    return train_split.select(sorted(int(i) for i in keep))


def train_translator(
    model: PreTrainedModel,
    splits: DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    tp: TrainParams,
    p: Params,
    paths: Paths,
    name: str,
    budget: int | None,
) -> tuple[PreTrainedModel, dict]:
    """Train on a `budget`-sized train subset, keep the best checkpoint by val loss.

    Returns the model and {train_rows, val (eval loss etc.), history}."""
    return train_named_run(
        model, p, paths, name, tp, budget_subset(splits["train"], budget, p.seed), splits["val"], tokenizer,
        fingerprint_of(name, tp, p.seed, p.model, p.data, budget, len(splits["train"])),
        # selected and stopped on val loss (TrainJob defaults)
        # pads labels with -100 (ignored by the loss) and builds decoder_input_ids from them
        collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100),
    )


def encoder_layers(model: PreTrainedModel) -> list[torch.nn.Module]:
    """The encoder's blocks, bottom first (Marian/BART `layers`, T5 `block`)."""
    encoder = model.get_encoder()
    layers = getattr(encoder, "layers", None) or getattr(encoder, "block", None)
    if layers is None:
        raise PipelineError(f"finetune.strategy: cannot find the encoder layers of {type(model).__name__}")
    return list(layers)


def freeze(model: PreTrainedModel, strategy: str, freeze_layers: int) -> None:
    if strategy == "freeze_bottom":
        layers = encoder_layers(model)
        if freeze_layers > len(layers):
            raise PipelineError(f"finetune.freeze_layers: {freeze_layers} exceeds the model's {len(layers)} encoder layers")
        # Tied: the shared embedding is also the encoder's, the decoder's and the output layer.
        model.get_input_embeddings().requires_grad_(False)
        for layer in layers[:freeze_layers]:
            layer.requires_grad_(False)
    elif strategy == "freeze_encoder":
        model.get_encoder().requires_grad_(False)
        # The encoder's token embedding is the shared one the decoder reads (and the tied output
        # layer): freezing it would freeze the decoder's vocabulary too, so it stays trainable.
        model.get_input_embeddings().requires_grad_(True)
