"""Score the fine-tuned model on the frozen target test split against baselines on the same
split: target_only (same init, no source stage, its own lr and steps), setfit (optional: SetFit
on the same body and subset), zero_shot (the source model as it is, when its labels are the
target's) and vader (rule-based sentiment, for a target declared as sentiment by evaluate.vader).
Then the budget curve: at the run's own budget and each of evaluate.curve_budgets, for seeds
p.seed .. p.seed+evaluate.seeds-1, transfer and every trained baseline are trained again with
that seed (its own stratified subset, head init and order); the run's own models are seed p.seed
at its own budget. A paired bootstrap over test rows, seeds averaged, gives each gain an interval
and a verdict (helps / no difference / hurts).

Writes metrics/scores.json (every model at the run's own budget and seed), metrics/transfer.json
(the gains, `headline`, `verdict`, `interval`, `by_budget`, `curve`), reports/evaluate/predictions.jsonl
(every test row with each model's label, for error analysis) and plots/classification/
{confusion,budget_curve}.json with plots/dvc.yaml, how `dvc plots show` draws them (the training
curves are DVCLive's)."""

from __future__ import annotations

import numpy as np
from datasets import load_from_disk

from tasks.classification.metrics import classification_metrics, confusion_counts, confusion_rows
from tasks.classification.model import (
    check_handoff,
    has_classifier_head,
    load_classifier,
    load_tokenized,
    model_labels,
    predict,
)
from tasks.classification.setfit_baseline import setfit_predictions, setfit_rows
from tasks.classification.train import fine_tune, train_target_only
from tasks.common.io import write_json_atomic, write_jsonl_atomic, write_plot_definitions
from tasks.common.models import save_model
from tasks.common.paths import Paths
from tasks.common.prepared import prepared_split
from tasks.common.training import pick_device
from tasks.common.significance import budget_report, curve_rows, curve_sentence, headline, macro_f1_scorer
from tasks.params import ALL, Params, VaderLabels


def model_predictions(model_dir_or_model, tokenizer, texts: list[str], p: Params) -> np.ndarray:
    model = model_dir_or_model
    if not hasattr(model, "config"):
        model = load_classifier(model_dir_or_model, p.task.labels)
    logits = predict(model, tokenizer, texts, p.evaluate.batch_size, p.tokenize.max_length, pick_device(p.device))
    return logits.argmax(axis=-1)


VADER_NEUTRAL_BAND = 0.05  # |compound| below it is neutral: VADER's own convention
VADER_UNDECLARED = "declare evaluate.vader: {negative: ..., positive: ...} for a sentiment target"


def vader_predictions(texts: list[str], vader: VaderLabels, labels: list[str]) -> np.ndarray:
    """VADER's compound score as label ids in `labels` (task.labels) order: < 0 -> vader.negative,
    >= 0 -> vader.positive (the rule the sentiment data's authors use); with vader.neutral
    declared, |compound| < 0.05 -> neutral."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    index = {name: i for i, name in enumerate(labels)}

    def label(compound: float) -> str:
        if vader.neutral is not None and abs(compound) < VADER_NEUTRAL_BAND:
            return vader.neutral
        return vader.negative if compound < 0 else vader.positive

    return np.array([index[label(analyzer.polarity_scores(text)["compound"])] for text in texts], dtype=np.int64)


def target_only_baseline(p: Params, paths: Paths, tokenizer) -> tuple:
    """The fair baseline at the run's own budget, saved to models/baselines/target_only."""
    splits, _ = load_tokenized(paths, "target")
    model, result = train_target_only(p, paths, splits, tokenizer, p.finetune.target_budget, "target_only")
    save_model(model, tokenizer, paths.baselines / "target_only", {"train.json": result})
    return model, result


def zero_shot_applicable(paths: Paths, labels: list[str]) -> str | None:
    """Why the source model cannot be scored as it is on the target, or None when it can: only a
    source head over exactly task.labels, in order, predicts the target's classes."""
    if not has_classifier_head(paths.source_model):
        return "source model has no classifier head (pretrain.mode mlm)"
    found = model_labels(paths.source_model)
    if found != labels:
        return f"source labels {found} differ from task.labels {labels}: the source model does not predict the target's classes"
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
            if p.evaluate.vader is None:
                notes[name] = {"skipped": VADER_UNDECLARED}
                continue
            predictions[name] = vader_predictions(texts, p.evaluate.vader, labels)
        elif name == "setfit":
            predictions[name], notes[name] = setfit_at(p, paths, p.finetune.target_budget, texts)
    return predictions, notes


def setfit_at(p: Params, paths: Paths, budget: int | None, texts: list[str]) -> tuple[np.ndarray, dict]:
    """SetFit (the same body) trained on the subset every other model gets at `budget` and p.seed."""
    train_split = load_from_disk(str(paths.tokenized_domain("target")))["train"]  # with its text column
    return setfit_predictions(p, setfit_rows(train_split, budget, p.seed), texts)


def transfer_summary(scores: dict, p: Params, notes: dict, by_budget: dict, own_key: str) -> dict:
    """The run's own figures (seed p.seed, its own budget), then the verdict on each gain (paired
    bootstrap over test rows, seeds averaged) at that budget and at every curve budget."""
    transfer = scores["transfer"]["f1_macro"]
    own = by_budget[own_key]["gain_over"]
    return {
        "metric": "f1_macro",
        "transfer": transfer,
        "baselines": {name: s["f1_macro"] for name, s in scores.items() if name != "transfer"},
        "gain_over": {name: transfer - s["f1_macro"] for name, s in scores.items() if name != "transfer"},
        "headline": [headline(gain, name, f"{own_key} labels", scale=100, unit="F1 points") for name, gain in own.items()],
        "verdict": {name: gain["verdict"] for name, gain in own.items()},
        "interval": {name: {"low": gain["low"], "high": gain["high"], "confidence": gain["confidence"]}
                     for name, gain in own.items()},
        "budget": own_key,
        "by_budget": by_budget,
        "curve": {name: curve_sentence(by_budget, name, "labels") for name in own},
        "target_budget": p.finetune.target_budget,
        "strategy": p.finetune.strategy,
        "pretrain_mode": p.pretrain.mode,
        "seeds": [p.seed + index for index in range(p.evaluate.seeds)],
        "notes": notes,
    }


# ---------------------------------------------------------------- the budget curve

TRAINED_BASELINES = ("target_only", "setfit")  # trained on the target budget: re-trained per budget and seed


def budget_key(budget: int | str | None, available: int) -> str:
    """A budget as the curve names it: "all" for every training row, else the row count."""
    if budget is None or budget == ALL or int(budget) >= available:
        return ALL
    return str(budget)


def budget_rows(key: str) -> int | None:
    return None if key == ALL else int(key)


def curve_keys(p: Params, available: int) -> list[str]:
    """The run's own budget and each of evaluate.curve_budgets, fewest rows first."""
    keys = {budget_key(p.finetune.target_budget, available)}
    keys |= {budget_key(budget, available) for budget in p.evaluate.curve_budgets}
    return sorted(keys, key=lambda key: available if key == ALL else int(key))


def train_point(p: Params, paths: Paths, splits, tokenizer, texts: list[str], name: str, key: str) -> np.ndarray:
    """One model trained at one budget with p.seed, as the stage's own run does it, scored on the
    test texts; nothing is saved (checkpoints only while it trains)."""
    run_name = f"curve-{name}-{key}-s{p.seed}"
    budget = budget_rows(key)
    print(f"evaluate: budget curve: {name} at {key} labels, seed {p.seed}", flush=True)
    if name == "setfit":
        return setfit_at(p, paths, budget, texts)[0]
    if name == "transfer":
        model, _ = fine_tune(p, paths, splits, tokenizer, budget, run_name)
    else:
        model, _ = train_target_only(p, paths, splits, tokenizer, budget, run_name)
    return model_predictions(model, tokenizer, texts, p)


def curve_predictions(p: Params, paths: Paths, splits, tokenizer, texts: list[str], own: dict) -> dict:
    """predictions[budget][model]: one array per seed (seed, seed+1, ...). The run's own models are
    the first seed at its own budget; the other trained models are trained here; a baseline no
    budget changes (zero_shot, vader) is its one prediction, repeated."""
    available = len(splits["train"])
    own_key = budget_key(p.finetune.target_budget, available)
    trained = [name for name in own if name == "transfer" or name in TRAINED_BASELINES]
    runs: dict[str, dict[str, list[np.ndarray]]] = {}
    for key in curve_keys(p, available):
        runs[key] = {name: [] for name in own}
        for index in range(p.evaluate.seeds):
            seeded = p.model_copy(update={"seed": p.seed + index})
            for name in own:
                reuse = name not in trained or (key == own_key and index == 0)
                runs[key][name].append(own[name] if reuse else train_point(seeded, paths, splits, tokenizer, texts, name, key))
    return runs


def curve_report(p: Params, runs: dict, truth: np.ndarray, available: int) -> dict:
    n_classes = len(p.task.labels)
    scorers = {key: {name: [macro_f1_scorer(truth, pred, n_classes) for pred in preds] for name, preds in models.items()}
               for key, models in runs.items()}
    train_rows = {key: available if key == ALL else int(key) for key in runs}
    e = p.evaluate
    return budget_report(scorers, train_rows, len(truth), "transfer", e.bootstrap_resamples, e.confidence, p.seed)


def prediction_rows(rows: list[dict], predictions: dict, labels: list[str]) -> list[dict]:
    """One row per test example: its text, the true label and every model's label."""
    return [
        {"id": row["id"], "text": row["text"], "label": row["label"],
         **{name: labels[int(pred[i])] for name, pred in predictions.items()}}
        for i, row in enumerate(rows)
    ]


# ---------------------------------------------------------------- plots

KIND = "classification"  # plots/classification/: dvc.yaml's `plots/${task.kind}` output of evaluate



def write_plots(paths: Paths, truth: np.ndarray, predicted: np.ndarray, labels: list[str], by_budget: dict) -> None:
    """The transfer model's confusion matrix on the test split and the budget curve (macro-F1 by
    target labels, one line per model), then their DVC plot definitions. The loss and validation
    curves are not repeated here: DVCLive's files under dvclive/finetune hold them."""
    rows = curve_rows(by_budget)
    write_json_atomic(paths.kind_plots(KIND) / "confusion.json", confusion_rows(truth, predicted, labels))
    write_json_atomic(paths.kind_plots(KIND) / "budget_curve.json", rows)
    confusion = {"template": "confusion", "x": "predicted", "y": "actual",
                 "title": "Transfer model on the target test split: true label (rows) by predicted"}
    models = [name for name in next(iter(by_budget.values()))["scores"]]
    curve = {"template": "linear" if len(rows) > 1 else "scatter",  # one budget: a line would not show
             "x": "budget", "y": models, "x_label": "target training labels", "y_label": "macro-F1 (mean over seeds)",
             "title": "Macro-F1 on the target test split by target budget"}
    write_plot_definitions(paths.plot_definitions, KIND,
                           [{f"{KIND}/confusion.json": confusion}, {f"{KIND}/budget_curve.json": curve}])


def run(p: Params, paths: Paths) -> dict:
    splits, tokenizer = load_tokenized(paths, "target")
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
    available = len(splits["train"])
    by_budget = curve_report(p, curve_predictions(p, paths, splits, tokenizer, texts, predictions), truth, available)
    summary = transfer_summary(scores, p, notes, by_budget, budget_key(p.finetune.target_budget, available))
    write_json_atomic(paths.metrics / "scores.json", scores)
    write_jsonl_atomic(paths.evaluate_reports / "predictions.jsonl", prediction_rows(rows, predictions, p.task.labels))
    write_json_atomic(paths.metrics / "transfer.json", summary)
    write_plots(paths, truth, predictions["transfer"], list(p.task.labels), by_budget)
    return summary
