"""The classification model and its data: a sequence classifier over `task.labels`, built from
a pretrained init or a scratch config, the tokenized splits it reads, the handoff checks between
stages, and batched prediction with dynamic padding."""

from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence

import numpy as np
import torch
from datasets import Dataset, DatasetDict, load_from_disk
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    BertPreTrainedModel,
    DataCollatorWithPadding,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.modeling_outputs import SequenceClassifierOutput

from tasks.common.errors import HandoffError
from tasks.common.models import SCRATCH, first_line, resolve_init, vocab_fingerprint
from tasks.common.paths import Paths
from tasks.params import ScratchConfig

# What the model and the length-grouped sampler read; `id` stays on disk for evaluate.
MODEL_INPUTS = ["input_ids", "attention_mask", "token_type_ids", "labels", "length"]


def label_maps(labels: Sequence[str]) -> dict:
    return {"id2label": dict(enumerate(labels)), "label2id": {name: i for i, name in enumerate(labels)}}


# ---------------------------------------------------------------- pooling (model.pooling)
# config.json records what the head reads, so every loader here (load_classifier: finetune,
# evaluate, export) rebuilds the same class; absent (older models, other tools): cls.
# AutoModelForSequenceClassification knows nothing of it: load classifiers with load_classifier.
POOLING_KEY = "classifier_pooling"


def pooling_of(config: PreTrainedConfig) -> str:
    return getattr(config, POOLING_KEY, None) or "cls"


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The mean of the hidden states over the real tokens (padding excluded): the pooling
    sentence-transformers trains its encoders with (all-MiniLM-L6-v2 among them)."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class BertMeanPoolingForSequenceClassification(BertPreTrainedModel):
    """BERT whose head (dropout + linear) reads the attention-masked mean of the last hidden
    states instead of BertForSequenceClassification's pooler (dense + tanh over [CLS]). No
    dense + tanh: a mean-pooled sentence encoder's embedding space is the mean itself, and a
    new 384x384 layer would have to be learnt from a few hundred labels (MiniLM's pooler
    weights are untrained). Weight names are BertForSequenceClassification's without the
    pooler, so either loads the other's encoder and head."""

    _keys_to_ignore_on_load_unexpected = [r"pooler\."]  # a [CLS] checkpoint's pooler: unused here

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def encode(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs):
        """The encoder's output and the masked mean the head reads (before dropout)."""
        output = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True, **kwargs)
        return output, masked_mean(output.last_hidden_state, attention_mask)

    def pooled(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs) -> torch.Tensor:
        """What the head reads, before dropout."""
        return self.encode(input_ids, attention_mask, token_type_ids, **kwargs)[1]

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        output, pooled = self.encode(
            input_ids, attention_mask, token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds, **kwargs
        )
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:  # single-label classification, as BertForSequenceClassification's default
            loss = nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=output.hidden_states, attentions=output.attentions
        )


def classifier_class(config: PreTrainedConfig, where: str | Path):
    """The class that reads the head input config.classifier_pooling names."""
    if pooling_of(config) == "cls":
        return AutoModelForSequenceClassification
    if config.model_type != "bert":
        raise HandoffError(
            f"model.pooling: 'mean' is built for BERT encoders (model_type bert); {where} is "
            f"{config.model_type!r}: use model.pooling cls"
        )
    return BertMeanPoolingForSequenceClassification


@torch.no_grad()
def head_input(model: PreTrainedModel, batch: dict) -> torch.Tensor:
    """The vector the classification head reads (before dropout): the masked mean for pooling
    mean; BERT's pooler output (dense + tanh over [CLS]) for cls, or [CLS] itself without one."""
    if isinstance(model, BertMeanPoolingForSequenceClassification):
        return model.pooled(**batch)
    output = model.base_model(**batch)
    return output.pooler_output if getattr(output, "pooler_output", None) is not None else output.last_hidden_state[:, 0]


# ---------------------------------------------------------------- building and loading


def new_classifier(
    init: str, labels: Sequence[str], scratch: ScratchConfig, tokenizer: PreTrainedTokenizerBase, *, pooling: str
) -> PreTrainedModel:
    """A sequence classifier with a fresh head reading `pooling` (model.pooling), from a
    pretrained init or a scratch config."""
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
            **{POOLING_KEY: pooling},
        )
        if pooling == "mean":
            return BertMeanPoolingForSequenceClassification(config)
        return BertForSequenceClassification(config)
    return load_classifier(resolve_init(init), labels, pooling=pooling)


def load_classifier(path: str | Path, labels: Sequence[str], pooling: str | None = None, **options) -> PreTrainedModel:
    """Load an encoder (with or without a head) as a classifier over `labels`. `pooling` (cls |
    mean): the head reads that (model.pooling, for a model about to be trained); None: what the
    saved model records (a trained model, as evaluate and export load it). `options` go to
    from_pretrained (dtype, ...)."""
    try:
        saved = AutoConfig.from_pretrained(str(path))
        recorded = pooling_of(saved)
        trained_head = any(a.endswith("ForSequenceClassification") for a in (saved.architectures or []))
        keeps_head = trained_head and [saved.id2label[i] for i in sorted(saved.id2label)] == list(labels)
        if pooling is not None and pooling != recorded and keeps_head:
            raise HandoffError(
                f"{path}: its classifier head was trained on model.pooling {recorded!r}, this run asks for "
                f"{pooling!r}: re-run pretrain with the same model.pooling"
            )
        config = AutoConfig.from_pretrained(str(path), num_labels=len(labels), **label_maps(labels))
        setattr(config, POOLING_KEY, pooling or recorded)
        return classifier_class(config, path).from_pretrained(str(path), config=config, **options)
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


def check_handoff(model_dir: Path, data_tokenizer: PreTrainedTokenizerBase, labels: Sequence[str] | None) -> None:
    """The model must read the same token ids the data was tokenized with, and a trained head
    must predict `labels`, in the same order (the target model: task.labels). labels None: any
    head (the source model, whose head finetune replaces when its classes differ: head_handoff)."""
    if not (model_dir / "config.json").exists():
        raise HandoffError(f"{model_dir} has no model (config.json missing): run the previous stage first")
    model_tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if vocab_fingerprint(model_tokenizer) != vocab_fingerprint(data_tokenizer):
        raise HandoffError(
            f"{model_dir}: its tokenizer differs from data/tokenized/tokenizer "
            f"(vocab {len(model_tokenizer)} vs {len(data_tokenizer)}): re-run tokenize and pretrain together"
        )
    if labels is not None and has_classifier_head(model_dir):
        found = model_labels(model_dir)
        if found != list(labels):
            raise HandoffError(f"{model_dir}: model labels {found} differ from task.labels {list(labels)}")


def head_handoff(model_dir: Path, labels: Sequence[str]) -> tuple[bool, str]:
    """Whether a classifier over `labels` (task.labels) built from the source model `model_dir`
    gets a fresh head, and the line finetune.json reports. The encoder always transfers; the
    head only when it was trained on the same classes in the same order."""
    if not has_classifier_head(model_dir):
        return True, "fresh head: the source model has none (pretrain.mode mlm)"
    found = model_labels(model_dir)
    if found != list(labels):
        return True, f"fresh head: source labels {found} differ from task.labels {list(labels)}"
    return False, "source head reused (same labels)"


@torch.no_grad()
def reset_head(model: PreTrainedModel) -> None:
    """Initialise every weight outside the encoder anew, as a new model's head is (normal with
    the config's initializer_range, zero bias; seeded by the caller): a source head trained on
    other classes must not carry over, even when it has as many classes as the target."""
    std = getattr(model.config, "initializer_range", None) or 0.02
    for name, module in model.named_modules():
        if not name or name.split(".")[0] == model.base_model_prefix:
            continue
        if isinstance(module, nn.Linear):  # torch's init: transformers' skips loaded weights
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


# The tokenized columns a classifier reads (token_type_ids only where the tokenizer makes them).
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def collated_batches(rows: Dataset, tokenizer: PreTrainedTokenizerBase, batch_size: int, device: torch.device | None = None):
    """Tokenized `rows` in their order, `batch_size` at a time, padded per batch (dynamic padding)
    and moved to `device`: what feature extraction and pseudo-labelling read."""
    collator = DataCollatorWithPadding(tokenizer)
    inputs = rows.select_columns([c for c in ENCODER_INPUTS if c in rows.column_names])
    for start in range(0, len(inputs), batch_size):
        batch = collator([inputs[i] for i in range(start, min(start + batch_size, len(inputs)))])
        yield batch.to(device) if device is not None else batch


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
