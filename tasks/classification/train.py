"""Training a classifier with the shared Trainer wrapper (tasks.common.training): the
fine-tuning strategies (frozen layers, layer-wise learning-rate decay, a logistic-regression head
on frozen features, LoRA adapters merged back into the encoder) and the budgeted run used by finetune and by evaluate's target-only baseline."""

from __future__ import annotations

import numpy as np
import torch
import transformers
from datasets import Dataset, concatenate_datasets
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from transformers import PreTrainedModel

from tasks.classification.metrics import trainer_metrics
from tasks.classification.self_training import class_probabilities, pseudo_labelled, round_name
from tasks.classification.model import collated_batches, head_handoff, head_input, load_classifier, new_classifier, reset_head
from tasks.common.errors import PipelineError
from tasks.common.paths import Paths
from tasks.common.training import fingerprint_of, train_named_run, trainable_parameters
from tasks.params import FinetuneParams, Params, TrainParams

# What a classifier's training keeps the best checkpoint by and stops early on: val macro-F1.
SCORED_BY_F1 = {"compute_metrics": trainer_metrics, "metric": "f1_macro", "greater_is_better": True}


def budget_subset(train_split: Dataset, budget: int | None, seed: int) -> Dataset:
    """`budget` labelled target examples, stratified by label and seeded (for learning curves)."""
    return budget_split(train_split, budget, seed)[0]


def budget_split(train_split: Dataset, budget: int | None, seed: int) -> tuple[Dataset, Dataset]:
    """The `budget` rows (stratified by label, seeded) and the rest, each in the split's order."""
    keep, rest = budget_indices(train_split, budget, seed)
    return train_split.select(keep), train_split.select(rest)


def budget_indices(train_split: Dataset, budget: int | None, seed: int) -> tuple[list[int], list[int]]:
    """budget_split's two parts as sorted row indices of `train_split`."""
    if budget is None or budget >= len(train_split):
        return list(range(len(train_split))), []
    labels = train_split["labels"]
    keep, rest = train_test_split(np.arange(len(labels)), train_size=budget, stratify=labels, random_state=seed)
    return sorted(keep.tolist()), sorted(rest.tolist())


def encoder_of(model: PreTrainedModel) -> torch.nn.Module:
    return getattr(model, model.base_model_prefix)


def encoder_layers(model: PreTrainedModel) -> list[torch.nn.Module]:
    return list(encoder_of(model).encoder.layer)


def freeze(model: PreTrainedModel, strategy: str, freeze_layers: int) -> None:
    if strategy in ("head_only", "features"):
        encoder_of(model).requires_grad_(False)
    elif strategy == "freeze_bottom":
        layers = encoder_layers(model)
        if freeze_layers > len(layers):
            raise PipelineError(f"finetune.freeze_layers: {freeze_layers} exceeds the model's {len(layers)} layers")
        encoder_of(model).embeddings.requires_grad_(False)
        for layer in layers[:freeze_layers]:
            layer.requires_grad_(False)


def llrd_optimizer(model: PreTrainedModel, p: FinetuneParams) -> torch.optim.Optimizer:
    """Top layer and head at the full rate, each layer below at `llrd_decay` times the one above."""
    layers = encoder_layers(model)
    depth = len(layers)
    groups = [{"params": list(encoder_of(model).embeddings.parameters()), "lr": p.learning_rate * p.llrd_decay ** (depth + 1)}]
    for index, layer in enumerate(layers):
        groups.append({"params": list(layer.parameters()), "lr": p.learning_rate * p.llrd_decay ** (depth - index)})
    grouped = {id(param) for group in groups for param in group["params"]}
    groups.append({"params": [q for q in model.parameters() if id(q) not in grouped], "lr": p.learning_rate})
    return torch.optim.AdamW(groups, lr=p.learning_rate, weight_decay=p.weight_decay)


def with_lora(model: PreTrainedModel, ft: FinetuneParams) -> PreTrainedModel:
    """finetune.strategy lora (peft): the encoder frozen, low-rank adapters (rank lora_rank,
    scaled lora_alpha / lora_rank) on its attention query and value projections (peft's default
    targets for the model type; every linear layer where it has none), and the head trained in
    full: the classifier, and BERT's [CLS] pooler when the head reads it (pooling cls).
    fine_tune merges the adapters into the encoder before the model leaves it."""
    from peft import LoraConfig, TaskType, get_peft_model
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULT_TARGETS

    head = ["classifier"] + (["pooler"] if getattr(encoder_of(model), "pooler", None) is not None else [])
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS, r=ft.lora_rank, lora_alpha=ft.lora_alpha, lora_dropout=ft.lora_dropout,
        target_modules=None if model.config.model_type in DEFAULT_TARGETS else "all-linear", modules_to_save=head,
    )
    return get_peft_model(model, config)


def lora_summary(model) -> dict:
    """What the adapters were (for finetune.json), read from the peft model before merging."""
    config = model.peft_config[model.active_adapter]
    return {"rank": config.r, "alpha": config.lora_alpha, "dropout": config.lora_dropout,
            "target_modules": sorted(config.target_modules), "modules_to_save": sorted(config.modules_to_save or [])}


@torch.no_grad()
def pooled_features(model: PreTrainedModel, dataset: Dataset, tokenizer, batch_size: int) -> np.ndarray:
    """The vector the classification head reads (model.pooling: the masked mean, or BERT's
    pooler output over [CLS])."""
    model.eval()
    features = [head_input(model, batch).float().numpy() for batch in collated_batches(dataset, tokenizer, batch_size)]
    return np.concatenate(features)


def fit_features_head(model: PreTrainedModel, train_split: Dataset, tokenizer, seed: int) -> dict:
    """Logistic regression on frozen features, copied into the classifier layer."""
    features = pooled_features(model, train_split, tokenizer, batch_size=64)
    labels = np.asarray(train_split["labels"])
    regression = LogisticRegression(max_iter=2000, random_state=seed).fit(features, labels)
    weight, bias = regression.coef_, regression.intercept_
    if weight.shape[0] == 1:  # binary: sigmoid(w.x + b) == softmax([-w/2, w/2] . x + [-b/2, b/2])
        weight, bias = np.vstack([-weight / 2, weight / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    classifier = model.classifier
    with torch.no_grad():
        classifier.weight.copy_(torch.as_tensor(weight, dtype=classifier.weight.dtype))
        classifier.bias.copy_(torch.as_tensor(bias, dtype=classifier.bias.dtype))
    return {"train_accuracy": float(regression.score(features, labels))}


def train_classifier(
    model: PreTrainedModel, rows: Dataset, val: Dataset, tokenizer, tp: TrainParams, p: Params, paths: Paths, name: str,
    fingerprint: dict,
):
    """Train `model` on target train `rows`, best checkpoint by val macro-F1; shared with the target-only baseline."""
    optimizer = llrd_optimizer(model, tp) if getattr(tp, "strategy", None) == "llrd" else None
    return train_named_run(model, p, paths, name, tp, rows, val, tokenizer, fingerprint, optimizer=optimizer, **SCORED_BY_F1)


def from_source(p: Params, paths: Paths) -> tuple[PreTrainedModel, str, int]:
    """models/source as a classifier of task.labels, ready to train as finetune.strategy says,
    its fresh parts (a head, adapters) drawn from p.seed: the model, the head handoff and the
    number of parameters training updates (lora: adapters + head, not the merged model)."""
    ft = p.finetune
    transformers.set_seed(p.seed)
    # The encoder transfers; the head only when the source's was trained on task.labels.
    fresh, head = head_handoff(paths.source_model, p.task.labels)
    model = load_classifier(paths.source_model, p.task.labels, pooling=p.model.pooling, ignore_mismatched_sizes=fresh)
    if fresh:
        reset_head(model)
    if ft.strategy == "lora":
        model = with_lora(model, ft)
    freeze(model, ft.strategy, ft.freeze_layers)
    return model, head, trainable_parameters(model)


def fine_tune_on(p: Params, paths: Paths, splits, tokenizer, rows: Dataset, name: str, fingerprint: dict):
    """models/source fine-tuned on target train `rows` as finetune.strategy says (the run `name`)."""
    ft = p.finetune
    model, head, trainable = from_source(p, paths)
    if ft.strategy == "features":
        result = {"train_rows": len(rows), "features": fit_features_head(model, rows, tokenizer, p.seed)}
    else:
        model, result = train_classifier(model, rows, splits["val"], tokenizer, ft, p, paths, name, fingerprint)
    if ft.strategy == "lora":
        result["lora"] = lora_summary(model)
        model = model.merge_and_unload()  # a plain classifier again: saved, evaluated and exported as any other
    result.update(head=head, trainable_parameters=trainable)
    return model, result


def run_identity(name: str, tp: TrainParams, p: Params, budget: int | None, train_split: Dataset) -> tuple:
    """What a budgeted run's checkpoints are fingerprinted by (a resumed run must be this very
    one): its name, training params, seed, model params, budget and the train split's size."""
    return (name, tp, p.seed, p.model, budget, len(train_split))


def fine_tune(p: Params, paths: Paths, splits, tokenizer, budget: int | None, name: str) -> tuple[PreTrainedModel, dict]:
    """models/source fine-tuned on `budget` target rows as finetune.strategy says, with p.seed
    (its subset, head init and order), then finetune.self_training's rounds: the finetune
    stage's model, and each point of evaluate's budget curve (p with another seed, another
    budget and run name)."""
    ft = p.finetune
    labelled, unlabelled = budget_split(splits["train"], budget, p.seed)
    rounds = ft.self_training.rounds if len(unlabelled) else 0
    run = run_identity(name, ft, p, budget, splits["train"])
    model, result = fine_tune_on(p, paths, splits, tokenizer, labelled, round_name(name, 0, rounds), fingerprint_of(*run))
    if rounds:
        model, result = self_train(model, p, paths, splits, tokenizer, labelled, unlabelled, run)
    elif ft.self_training.rounds:
        result["self_training"] = {"skipped": "every target train row is labelled (target_budget: all): none to pseudo-label"}
    result.update(weight_ensembled(model, p, paths, splits["val"], tokenizer, result.get("val")))
    result.update(strategy=ft.strategy, target_budget=budget, learning_rate=ft.learning_rate, seed=p.seed)
    return model, result


def interpolated(tuned: dict, source: dict, alpha: float) -> dict:
    """alpha x tuned + (1 - alpha) x source, tensor by tensor (integer buffers such as position ids stay)."""
    return {key: alpha * value + (1 - alpha) * source[key].to(value.device, value.dtype) if value.is_floating_point() else value
            for key, value in tuned.items()}


def source_classifier_weights(p: Params, paths: Paths) -> dict:
    """The state dict of models/source as a classifier of task.labels (what WiSE-FT mixes with)."""
    return load_classifier(paths.source_model, p.task.labels, pooling=p.model.pooling).state_dict()


def weight_ensembled(model: PreTrainedModel, p: Params, paths: Paths, val: Dataset, tokenizer, evaluated: dict | None) -> dict:
    """finetune.wise_alpha < 1 (WiSE-FT): `model`'s weights mixed in place with those of the source
    classifier it was fine-tuned from. Only when that head was reused (same labels): a fresh head
    has no source counterpart to mix with. What finetune.json reports of it, with val macro-F1
    before (the run's final evaluation, `evaluated`, when it trained; the features strategy has
    none) and after."""
    alpha = p.finetune.wise_alpha
    if alpha == 1.0:
        return {}
    fresh, why = head_handoff(paths.source_model, p.task.labels)
    if fresh:
        return {"wise_ft": {"skipped": f"{why}: no source classifier of task.labels to mix with"}}
    before = evaluated["eval_f1_macro"] if evaluated else val_f1_macro(model, val, tokenizer, p.evaluate.batch_size)
    model.load_state_dict(interpolated(model.state_dict(), source_classifier_weights(p, paths), alpha))
    return {"wise_ft": {"alpha": alpha, "val_f1_macro_fine_tuned": before,
                        "val_f1_macro": val_f1_macro(model, val, tokenizer, p.evaluate.batch_size)}}


def val_f1_macro(model: PreTrainedModel, val: Dataset, tokenizer, batch_size: int) -> float:
    predictions = class_probabilities(model, val, tokenizer, batch_size)
    return trainer_metrics((predictions, np.asarray(val["labels"])))["f1_macro"]


def self_train(model: PreTrainedModel, p: Params, paths: Paths, splits, tokenizer, labelled: Dataset, unlabelled: Dataset,
               run: tuple) -> tuple[PreTrainedModel, dict]:
    """finetune.self_training's rounds: the latest model labels the train rows the budget left
    out (`unlabelled`); its confident guesses join the `labelled` rows and models/source is
    fine-tuned afresh on both. The last round's model and report, with every round's."""
    st = p.finetune.self_training
    rounds = []
    for index in range(1, st.rounds + 1):
        pseudo, report = pseudo_labelled(model, unlabelled, tokenizer, p.task.labels, p.evaluate.batch_size, st.min_confidence)
        rows = concatenate_datasets([labelled, pseudo]) if len(pseudo) else labelled
        fingerprint = fingerprint_of(*run, index, st.min_confidence, pseudo["labels"])
        model, result = fine_tune_on(p, paths, splits, tokenizer, rows, round_name(run[0], index, st.rounds), fingerprint)
        rounds.append({"round": index, **report, "train_rows": len(rows), "val": result.get("val")})
    result.update(labelled_rows=len(labelled), self_training={"min_confidence": st.min_confidence, "rounds": rounds})
    return model, result


def train_target_only(p: Params, paths: Paths, splits, tokenizer, budget: int | None, name: str) -> tuple[PreTrainedModel, dict]:
    """The fair baseline: the init with a fresh head, trained on the same `budget` target rows
    (same seed: same subset) with evaluate.target_only's params, no source stage."""
    transformers.set_seed(p.seed)
    model = new_classifier(p.model.init, p.task.labels, p.model.scratch, tokenizer, pooling=p.model.pooling)
    tp = p.evaluate.target_only
    rows = budget_subset(splits["train"], budget, p.seed)
    fingerprint = fingerprint_of(*run_identity(name, tp, p, budget, splits["train"]))
    model, result = train_classifier(model, rows, splits["val"], tokenizer, tp, p, paths, name, fingerprint)
    result["seed"] = p.seed
    return model, result
