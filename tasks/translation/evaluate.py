"""Evaluate for translation: score the fine-tuned model (models/target) on the frozen target test
split, greedy and beam, against baselines on the same rows: target_only (a scratch model of the
same shape trained on the same target budget, no source stage) and zero_shot (the source model
as it is, asked for the target language by its tag). Writes metrics/scores.json,
metrics/transfer.json, reports/evaluate/{predictions,samples}.jsonl and the budget curve
(transfer vs target_only BLEU by target budget), plots/translation/budget_curve.json, with
plots/dvc.yaml, how `dvc plots show` draws it (the training curves are DVCLive's)."""

from __future__ import annotations

from tqdm.auto import tqdm

from tasks.common.errors import HandoffError
from tasks.common.io import read_json, write_json_atomic, write_jsonl_atomic, write_plot_definitions
from tasks.common.models import save_model
from tasks.common.paths import Paths
from tasks.common.prepared import prepared_split
from tasks.common.training import pick_device
from tasks.params import Params
from tasks.translation import language_tag
from tasks.translation.metrics import translation_scores
from tasks.translation.model import check_translation_handoff, load_translator, new_translator, translate
from tasks.translation.train import freeze, load_pairs, train_translator

TRANSFER = "transfer"
MODES = ("greedy", "beam")
# Beam settings that change nothing: with these and one beam, "beam" decoding is greedy decoding.
BEAM_NEUTRAL = {"no_repeat_ngram_size": 0, "repetition_penalty": 1.0, "length_penalty": 1.0}


# ---------------------------------------------------------------- inputs


def load_test_rows(paths: Paths, limit: int | None) -> list[dict]:
    """The first `limit` rows (all when None) of the frozen target test split."""
    file = paths.split_file("target", "test")
    rows = prepared_split(paths, "target", "test")[:limit]
    for number, row in enumerate(rows, start=1):
        if not isinstance(row.get("src"), str) or not isinstance(row.get("tgt"), str):
            raise HandoffError(f"{file} row {number}: expected 'src' and 'tgt' text (a translation row), got keys {sorted(row)}")
    if not rows:
        raise HandoffError(f"{file}: no test rows to score")
    return rows


def needs_source_model(p: Params) -> bool:
    return "zero_shot" in p.evaluate.baselines or bool(p.evaluate.curve_budgets)


def check_inputs(p: Params, paths: Paths, tokenizer, tgt_lang: str) -> None:
    """Every handoff this stage relies on, checked before anything is trained or written."""
    models = [paths.target_model] + ([paths.source_model] if needs_source_model(p) else [])
    for model_dir in models:
        if not model_dir.exists():
            stage = "finetune" if model_dir == paths.target_model else "pretrain"
            raise HandoffError(f"{model_dir} not found: run the {stage} stage first")
        check_translation_handoff(model_dir, tokenizer, tgt_lang)
    log = paths.target_model / "finetune.json"
    if not log.exists():
        raise HandoffError(f"{log} not found: {paths.target_model} was not written by the finetune stage")


# ---------------------------------------------------------------- decoding


def decoding_options(p: Params) -> dict[str, dict]:
    """Greedy: one beam, no repetition rules. Beam: evaluate.generation as configured."""
    g = p.evaluate.generation
    greedy = {"num_beams": 1, "max_new_tokens": g.max_new_tokens}
    beam = {
        "num_beams": g.num_beams,
        "max_new_tokens": g.max_new_tokens,
        "no_repeat_ngram_size": g.no_repeat_ngram_size,
        "repetition_penalty": g.repetition_penalty,
        "length_penalty": g.length_penalty,
    }
    return {"greedy": greedy, "beam": beam}


def decode(model, tokenizer, texts: list[str], tgt_lang: str, options: dict, p: Params, label: str) -> list[str]:
    """Translate `texts` in batches of similar length (less padding), with a progress bar;
    the output is in the input's order."""
    size = p.evaluate.batch_size
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    device = pick_device(p.device)
    hypotheses: list[str] = [""] * len(texts)
    with tqdm(total=len(texts), desc=f"decode {label}", unit="sent") as bar:
        for start in range(0, len(order), size):
            chunk = order[start:start + size]
            outputs = translate(model, tokenizer, [texts[i] for i in chunk], tgt_lang,
                                batch_size=size, device=device, **options)
            for i, hypothesis in zip(chunk, outputs):
                hypotheses[i] = hypothesis
            bar.update(len(chunk))
    return hypotheses


def decode_both(model, tokenizer, texts: list[str], tgt_lang: str, p: Params, name: str) -> dict[str, list[str]]:
    """Greedy and beam hypotheses; beam reuses greedy when the two settings coincide."""
    options = decoding_options(p)
    greedy = decode(model, tokenizer, texts, tgt_lang, options["greedy"], p, f"{name} greedy")
    if options["beam"] == {**options["greedy"], **BEAM_NEUTRAL}:
        return {"greedy": greedy, "beam": greedy}
    return {"greedy": greedy, "beam": decode(model, tokenizer, texts, tgt_lang, options["beam"], p, f"{name} beam")}


def score_modes(hypotheses: dict[str, list[str]], references: list[str], tgt_lang: str) -> dict:
    return {mode: translation_scores(hypotheses[mode], references, tgt_lang) for mode in MODES}


# ---------------------------------------------------------------- models


def train_target_only(p: Params, paths: Paths, tokenizer, splits, budget: int | None, name: str):
    """The fair baseline: a fresh model of the same shape and tokenizer, trained only on the
    target pair's `budget` rows with evaluate.target_only's params."""
    model = new_translator(p, tokenizer)
    return train_translator(model, splits, tokenizer, p.evaluate.target_only, p, paths, name, budget)


def finetune_at_budget(p: Params, paths: Paths, tokenizer, splits, budget: int):
    """models/source fine-tuned again as the finetune stage does (same strategy and params, its
    own freeze), on `budget` target pairs; kept in memory, not saved."""
    model = load_translator(paths.source_model)
    freeze(model, p.finetune.strategy, p.finetune.freeze_layers)
    model, _ = train_translator(model, splits, tokenizer, p.finetune, p, paths, f"finetune-{budget}", budget)
    return model


def baseline_hypotheses(p: Params, paths: Paths, tokenizer, splits, texts: list[str], tgt_lang: str) -> tuple[dict, dict]:
    """Each baseline's greedy and beam hypotheses, and notes on how it was obtained."""
    hypotheses, notes = {}, {}
    for name in p.evaluate.baselines:
        if name == "target_only":
            model, result = train_target_only(p, paths, tokenizer, splits, p.finetune.target_budget, "target_only")
            save_model(model, tokenizer, paths.baselines / "target_only", {"train.json": result})
            notes[name] = {"train_rows": result.get("train_rows"), "params": p.evaluate.target_only.model_dump()}
        elif name == "zero_shot":
            model = load_translator(paths.source_model)
            notes[name] = {"model": "models/source", "tag": language_tag(tgt_lang),
                           "trained_on": p.data.source.languages.model_dump()}
        else:  # the schema rejects other baselines for translation; keep the report honest anyway
            notes[name] = {"skipped": f"{name} does not apply to translation"}
            continue
        hypotheses[name] = decode_both(model, tokenizer, texts, tgt_lang, p, name)
        del model
    return hypotheses, notes


# ---------------------------------------------------------------- reports


def transfer_summary(scores: dict, p: Params, notes: dict) -> dict:
    """Beam BLEU of the transfer model, each baseline's, and the gain over each (BLEU and chrF)."""
    transfer = scores[TRANSFER]["beam"]
    baselines = {name: s["beam"] for name, s in scores.items() if name != TRANSFER}
    return {
        "metric": "bleu",
        "decoding": "beam",
        "transfer": transfer["bleu"],
        "transfer_chrf": transfer["chrf"],
        "baselines": {name: s["bleu"] for name, s in baselines.items()},
        "gain_over": {name: {"bleu": transfer["bleu"] - s["bleu"], "chrf": transfer["chrf"] - s["chrf"]}
                      for name, s in baselines.items()},
        "bleu_signature": transfer["bleu_signature"],
        "target_budget": p.finetune.target_budget,
        "strategy": p.finetune.strategy,
        "languages": {"source": p.data.source.languages.model_dump(), "target": p.data.target.languages.model_dump()},
        "notes": notes,
    }


def prediction_rows(rows: list[dict], hypotheses: dict[str, dict[str, list[str]]]) -> list[dict]:
    """One row per test pair: id, source, reference and every model's greedy and beam output."""
    return [
        {"id": row.get("id", str(i)), "src": row["src"], "ref": row["tgt"],
         **{name: {mode: by_mode[mode][i] for mode in MODES} for name, by_mode in hypotheses.items()}}
        for i, row in enumerate(rows)
    ]


def own_budget(p: Params, paths: Paths, splits) -> int:
    """The target budget the run was fine-tuned on, as a number of training pairs."""
    rows = read_json(paths.target_model / "finetune.json").get("train_rows")
    if isinstance(rows, int):
        return rows
    budget = p.finetune.target_budget
    return min(budget, len(splits["train"])) if budget else len(splits["train"])


def curve_budgets(p: Params, own: int, available: int) -> list[int]:
    """The extra budgets to train at: capped at the training rows there are, without the run's own."""
    return sorted({min(b, available) for b in p.evaluate.curve_budgets} - {own})


def budget_curve(p: Params, paths: Paths, tokenizer, splits, rows: list[dict], tgt_lang: str, scores: dict) -> list[dict]:
    """Greedy BLEU of transfer (and target_only, when it is a baseline) at each budget: the run's
    own point from `scores`, the others trained here."""
    own = own_budget(p, paths, splits)
    points = [{"budget": own, "model": name, "bleu": scores[name]["greedy"]["bleu"]}
              for name in (TRANSFER, "target_only") if name in scores]
    texts, references = [row["src"] for row in rows], [row["tgt"] for row in rows]
    greedy = decoding_options(p)["greedy"]
    for budget in curve_budgets(p, own, len(splits["train"])):
        trained = {TRANSFER: finetune_at_budget(p, paths, tokenizer, splits, budget)}
        if "target_only" in p.evaluate.baselines:
            trained["target_only"], _ = train_target_only(p, paths, tokenizer, splits, budget, f"target_only-{budget}")
        for name, model in trained.items():
            hyps = decode(model, tokenizer, texts, tgt_lang, greedy, p, f"{name} @{budget}")
            points.append({"budget": budget, "model": name, "bleu": translation_scores(hyps, references, tgt_lang)["bleu"]})
    return sorted(points, key=lambda point: (point["budget"], point["model"]))


# ---------------------------------------------------------------- plots

KIND = "translation"  # plots/translation/: dvc.yaml's `plots/${task.kind}` output of evaluate



def budget_rows(points: list[dict]) -> list[dict]:
    """{budget, transfer, target_only}: one row per budget, each model's BLEU a field of its own,
    so DVC draws one line per model (`y: [transfer, target_only]`)."""
    rows: dict[int, dict] = {}
    for point in points:
        rows.setdefault(point["budget"], {"budget": point["budget"]})[point["model"]] = point["bleu"]
    return [rows[budget] for budget in sorted(rows)]


def write_plots(paths: Paths, curve: list[dict]) -> None:
    """The budget curve, then its DVC plot definition. The loss curves are not repeated here:
    DVCLive's files under dvclive/finetune (the finetune stage's `plots`) hold them."""
    rows = budget_rows(curve)
    models = [name for name in (TRANSFER, "target_only") if all(name in row for row in rows)]
    write_json_atomic(paths.kind_plots(KIND) / "budget_curve.json", rows)
    budget = {"template": "linear" if len(rows) > 1 else "scatter",  # one budget: a line would not show
              "x": "budget", "y": models, "x_label": "target training pairs", "y_label": "BLEU (greedy)",
              "title": "Greedy BLEU on the target test rows by target budget"}
    write_plot_definitions(paths.plot_definitions, KIND, [{f"{KIND}/budget_curve.json": budget}])


# ---------------------------------------------------------------- stage


def run(p: Params, paths: Paths) -> dict:
    """Score transfer and baselines on the target test rows; write metrics, reports and plots."""
    tgt_lang = p.data.target.languages.tgt
    splits, tokenizer = load_pairs(paths, "target")
    check_inputs(p, paths, tokenizer, tgt_lang)
    rows = load_test_rows(paths, p.evaluate.test_rows)
    texts, references = [row["src"] for row in rows], [row["tgt"] for row in rows]
    paths.baselines.mkdir(parents=True, exist_ok=True)  # a DVC output even with no trained baseline

    hypotheses = {TRANSFER: decode_both(load_translator(paths.target_model), tokenizer, texts, tgt_lang, p, TRANSFER)}
    baselines, notes = baseline_hypotheses(p, paths, tokenizer, splits, texts, tgt_lang)
    hypotheses.update(baselines)
    scores = {name: score_modes(by_mode, references, tgt_lang) for name, by_mode in hypotheses.items()}
    notes["decoding"] = decoding_options(p)
    notes["test_rows"] = len(rows)
    curve = budget_curve(p, paths, tokenizer, splits, rows, tgt_lang, scores)

    summary = transfer_summary(scores, p, notes)
    predictions = prediction_rows(rows, hypotheses)
    reports = paths.evaluate_reports
    write_json_atomic(paths.metrics / "scores.json", scores)
    write_json_atomic(paths.metrics / "transfer.json", summary)
    write_jsonl_atomic(reports / "predictions.jsonl", predictions)
    write_jsonl_atomic(reports / "samples.jsonl", predictions[: p.evaluate.samples])
    write_plots(paths, curve)
    return summary
