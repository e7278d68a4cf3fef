"""Classification metrics, one definition for training-time evaluation and the evaluate stage."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict:
    """Accuracy, precision/recall/F1 (micro, macro, weighted) and a per-class report."""
    ids = list(range(len(labels)))
    result: dict = {"accuracy": float(accuracy_score(y_true, y_pred)), "support": int(len(y_true))}
    for average in ("micro", "macro", "weighted"):
        precision, recall, f1, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=ids, average=average, zero_division=0
        )
        result[f"precision_{average}"] = float(precision)
        result[f"recall_{average}"] = float(recall)
        result[f"f1_{average}"] = float(f1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=ids, average=None, zero_division=0
    )
    result["per_class"] = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(labels, precision, recall, f1, support)
    }
    return result


def confusion_rows(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> list[dict]:
    """One {actual, predicted} row per example: the shape DVC's confusion template reads."""
    return [{"actual": labels[t], "predicted": labels[p]} for t, p in zip(y_true, y_pred)]


def confusion_counts(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> list[list[int]]:
    return confusion_matrix(y_true, y_pred, labels=list(range(len(labels)))).tolist()


def trainer_metrics(eval_pred) -> dict:
    """compute_metrics for the HF Trainer: the figures early stopping watches."""
    logits, label_ids = eval_pred
    predictions = np.asarray(logits).argmax(axis=-1)
    _, _, f1_macro, _ = precision_recall_fscore_support(label_ids, predictions, average="macro", zero_division=0)
    return {"accuracy": float((predictions == label_ids).mean()), "f1_macro": float(f1_macro)}
