"""Fine-tune the source model on the target split. Strategies: full, freeze_bottom (embeddings
+ bottom N layers frozen), head_only, features (frozen encoder features -> scikit-learn
logistic regression, written back as the classifier head so the model exports like any other)
and llrd (layer-wise learning-rate decay)."""

from __future__ import annotations

from tasks.classification.model import check_handoff, load_classifier, load_tokenized
from tasks.classification.train import budget_subset, fit_features_head, freeze, train_classifier
from tasks.common.models import save_model
from tasks.common.paths import Paths
from tasks.common.training import trainable_parameters
from tasks.params import Params


def run(p: Params, paths: Paths) -> dict:
    splits, tokenizer = load_tokenized(paths, "target")
    check_handoff(paths.source_model, tokenizer, p.task.labels)
    model = load_classifier(paths.source_model, p.task.labels)
    ft = p.finetune
    freeze(model, ft.strategy, ft.freeze_layers)
    if ft.strategy == "features":
        train_rows = budget_subset(splits["train"], ft.target_budget, p.seed)
        result = {"train_rows": len(train_rows), "features": fit_features_head(model, train_rows, tokenizer, p.seed)}
    else:
        model, result = train_classifier(model, splits, tokenizer, ft, p, paths, "finetune", ft.target_budget)
    result.update(strategy=ft.strategy, target_budget=ft.target_budget, learning_rate=ft.learning_rate,
                  trainable_parameters=trainable_parameters(model))
    save_model(model, tokenizer, paths.target_model, {"finetune.json": result})
    return result
