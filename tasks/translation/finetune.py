"""Fine-tune the source-pair translator on the target pair (e.g. en->fr): writes models/target/.

Strategies: full; freeze_bottom (shared embeddings + the bottom `freeze_layers` encoder layers
frozen); freeze_encoder (every encoder layer frozen, embeddings trainable)."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from tasks.common.errors import PipelineError
from tasks.common.models import save_model
from tasks.common.paths import Paths
from tasks.params import Params
from tasks.translation.model import check_translation_handoff, load_translator
from tasks.translation.train import load_pairs, train_translator


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


def trainable_parameters(model: PreTrainedModel) -> int:
    return sum(q.numel() for q in model.parameters() if q.requires_grad)


def run(p: Params, paths: Paths) -> dict:
    splits, tokenizer = load_pairs(paths, "target")
    check_translation_handoff(paths.source_model, tokenizer, p.data.target.languages.tgt)
    model = load_translator(paths.source_model)
    ft = p.finetune
    freeze(model, ft.strategy, ft.freeze_layers)
    model, result = train_translator(model, splits, tokenizer, ft, p, paths, "finetune", ft.target_budget)
    result.update(
        strategy=ft.strategy,
        target_budget=ft.target_budget,
        learning_rate=ft.learning_rate,
        trainable_parameters=trainable_parameters(model),
    )
    save_model(model, tokenizer, paths.target_model, {"finetune.json": result})
    return result
