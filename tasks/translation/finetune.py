"""Fine-tune the source-pair translator on the target pair (e.g. en->fr): writes models/target/.

Strategies: full; freeze_bottom (shared embeddings + the bottom `freeze_layers` encoder layers
frozen); freeze_encoder (every encoder layer frozen, embeddings trainable)."""

from __future__ import annotations

from tasks.common.models import save_model
from tasks.common.paths import Paths
from tasks.common.training import trainable_parameters
from tasks.params import Params
from tasks.translation.model import check_translation_handoff, load_translator
from tasks.translation.train import freeze, load_pairs, train_translator


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
