"""Fine-tune the source model on the target split. Strategies: full, freeze_bottom (embeddings
+ bottom N layers frozen), head_only, features (frozen encoder features -> scikit-learn
logistic regression, written back as the classifier head so the model exports like any other)
and llrd (layer-wise learning-rate decay)."""

from __future__ import annotations

from tasks.classification.model import check_handoff, load_tokenized
from tasks.classification.train import fine_tune
from tasks.common.models import save_model
from tasks.common.paths import Paths
from tasks.params import Params


def run(p: Params, paths: Paths) -> dict:
    splits, tokenizer = load_tokenized(paths, "target")
    check_handoff(paths.source_model, tokenizer, None)  # any head: fine_tune replaces one over other classes
    model, result = fine_tune(p, paths, splits, tokenizer, p.finetune.target_budget, "finetune")
    save_model(model, tokenizer, paths.target_model, {"finetune.json": result})
    return result
