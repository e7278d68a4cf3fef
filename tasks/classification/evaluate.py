"""Score the fine-tuned model on the frozen target test split against baselines on the same
split: target_only (same init, no source stage, its own lr and steps), zero_shot (the source
model as it is, when its labels agree) and vader (rule-based sentiment). Writes
metrics/scores.json, metrics/transfer.json, reports/evaluate/predictions.jsonl (every test row
with each model's label, for error analysis) and plots/classification/confusion.json with
plots/dvc.yaml, how `dvc plots show` draws it (the training curves are DVCLive's)."""

from __future__ import annotations

import numpy as np

from tasks.classification.metrics import classification_metrics, confusion_counts, confusion_rows
from tasks.classification.model import (
    check_handoff,
    has_classifier_head,
    load_classifier,
    load_tokenized,
    model_labels,
    predict,
)
from tasks.classification.train import train_target_only
from tasks.common.io import write_json_atomic, write_jsonl_atomic, write_plot_definitions
from tasks.common.models import save_model
from tasks.common.paths import Paths
from tasks.common.prepared import prepared_split
from tasks.common.training import pick_device
from tasks.params import Params


def model_predictions(model_dir_or_model, tokenizer, texts: list[str], p: Params) -> np.ndarray:
    model = model_dir_or_model
    if not hasattr(model, "config"):
        model = load_classifier(model_dir_or_model, p.task.labels)
    logits = predict(model, tokenizer, texts, p.evaluate.batch_size, p.tokenize.max_length, pick_device(p.device))
    return logits.argmax(axis=-1)


def vader_predictions(texts: list[str]) -> np.ndarray:
    """VADER's compound score >= 0 -> the second (positive) class: the rule the data's authors use."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return np.array([1 if analyzer.polarity_scores(text)["compound"] >= 0 else 0 for text in texts])


def target_only_baseline(p: Params, paths: Paths, tokenizer) -> tuple:
    """The fair baseline at the run's own budget, saved to models/baselines/target_only."""
    splits, _ = load_tokenized(paths, "target")
    model, result = train_target_only(p, paths, splits, tokenizer, p.finetune.target_budget, "target_only")
    save_model(model, tokenizer, paths.baselines / "target_only", {"train.json": result})
    return model, result


def zero_shot_applicable(paths: Paths, labels: list[str]) -> str | None:
    """Why the source model cannot be scored as it is on the target, or None when it can."""
    if not has_classifier_head(paths.source_model):
        return "source model has no classifier head (pretrain.mode mlm)"
    if model_labels(paths.source_model) != labels:
        return "source labels differ from task.labels"
    return None


def baseline_predictions(p: Params, paths: Paths, tokenizer, texts: list[str]) -> tuple[dict, dict]:
    predictions, notes = {}, {}
    labels = list(p.task.labels)
    for name in p.evaluate.baselines:
        if name == "target_only":
            model, result = target_only_baseline(p, paths, tokenizer)
            predictions[name] = model_predictions(model, tokenizer, texts, p)
            notes[name] = {"train_rows": result["train_rows"], "params": p.evaluate.target_only.model_dump()}
        elif name == "zero_shot":
            reason = zero_shot_applicable(paths, labels)
            if reason:
                notes[name] = {"skipped": reason}
                continue
            predictions[name] = model_predictions(paths.source_model, tokenizer, texts, p)
        elif name == "vader":
            if len(labels) != 2:
                notes[name] = {"skipped": "vader needs exactly two classes (negative, positive)"}
                continue
            predictions[name] = vader_predictions(texts)
    return predictions, notes


def transfer_summary(scores: dict, p: Params, notes: dict) -> dict:
    transfer = scores["transfer"]["f1_macro"]
    return {
        "metric": "f1_macro",
        "transfer": transfer,
        "baselines": {name: s["f1_macro"] for name, s in scores.items() if name != "transfer"},
        "gain_over": {name: transfer - s["f1_macro"] for name, s in scores.items() if name != "transfer"},
        "target_budget": p.finetune.target_budget,
        "strategy": p.finetune.strategy,
        "pretrain_mode": p.pretrain.mode,
        "notes": notes,
    }


def prediction_rows(rows: list[dict], predictions: dict, labels: list[str]) -> list[dict]:
    """One row per test example: its text, the true label and every model's label."""
    return [
        {"id": row["id"], "text": row["text"], "label": row["label"],
         **{name: labels[int(pred[i])] for name, pred in predictions.items()}}
        for i, row in enumerate(rows)
    ]


# ---------------------------------------------------------------- plots

KIND = "classification"  # plots/classification/: dvc.yaml's `plots/${task.kind}` output of evaluate



def write_plots(paths: Paths, truth: np.ndarray, predicted: np.ndarray, labels: list[str]) -> None:
    """The transfer model's confusion matrix on the test split, then its DVC plot definition.
    The loss and validation curves are not repeated here: DVCLive's files under dvclive/finetune
    (the finetune stage's `plots`) hold them."""
    write_json_atomic(paths.kind_plots(KIND) / "confusion.json", confusion_rows(truth, predicted, labels))
    confusion = {"template": "confusion", "x": "predicted", "y": "actual",
                 "title": "Transfer model on the target test split: true label (rows) by predicted"}
    write_plot_definitions(paths.plot_definitions, KIND, [{f"{KIND}/confusion.json": confusion}])


def run(p: Params, paths: Paths) -> dict:
    _, tokenizer = load_tokenized(paths, "target")
    check_handoff(paths.target_model, tokenizer, p.task.labels)
    rows = prepared_split(paths, "target", "test")[: p.evaluate.test_rows]  # None: every row
    texts = [row["text"] for row in rows]
    label_ids = {name: i for i, name in enumerate(p.task.labels)}
    truth = np.array([label_ids[row["label"]] for row in rows])
    paths.baselines.mkdir(parents=True, exist_ok=True)  # a DVC output even with no trained baseline
    predictions = {"transfer": model_predictions(paths.target_model, tokenizer, texts, p)}
    baselines, notes = baseline_predictions(p, paths, tokenizer, texts)
    predictions.update(baselines)
    scores = {name: classification_metrics(truth, pred, p.task.labels) for name, pred in predictions.items()}
    scores["transfer"]["confusion_matrix"] = confusion_counts(truth, predictions["transfer"], p.task.labels)
    summary = transfer_summary(scores, p, notes)
    write_json_atomic(paths.metrics / "scores.json", scores)
    write_jsonl_atomic(paths.evaluate_reports / "predictions.jsonl", prediction_rows(rows, predictions, p.task.labels))
    write_json_atomic(paths.metrics / "transfer.json", summary)
    write_plots(paths, truth, predictions["transfer"], list(p.task.labels))
    return summary
