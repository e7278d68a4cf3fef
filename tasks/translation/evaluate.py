"""Evaluate for translation: score the fine-tuned model (models/target) on the frozen target test
split, greedy and beam, against baselines on the same rows: target_only (a scratch model of the
same shape trained on the same target budget, no source stage) and zero_shot (the source model
as it is, asked for the target language by its tag). Then the budget curve: at the run's own
budget and each of evaluate.curve_budgets, for seeds p.seed .. p.seed+evaluate.seeds-1, transfer
(models/source fine-tuned as the finetune stage does) and target_only are trained with that seed
(its own target subset, init and data order) and decoded greedy; the run's own models are seed
p.seed at its own budget and are not trained again. Paired bootstrap intervals over the test
rows (sacrebleu's per-sentence BLEU statistics) say whether transfer helps.

Writes:
- metrics/scores.json: per model (transfer and each baseline), greedy and beam: BLEU (with
  sacrebleu's signature), chrF, exact match, count.
- metrics/transfer.json: beam BLEU of transfer and of each baseline, `gain_over.<name>.bleu/chrf`;
  at the run's own budget (`budget`, its rows), `verdict.<baseline>` ("helps", "no difference",
  "hurts"), `interval.<baseline>` (gain, low, high, confidence, resamples, seeds, decoding) and
  `headline` (one sentence each): on the beam hypotheses of the run's own models with one seed,
  on the greedy curve point over the seeds with more; `by_budget["<rows>"]`: train_rows, seeds,
  `scores.<model>.bleu` (mean, std, min, max, per_seed; greedy) and `gain_over.<baseline>.bleu`
  (paired gain, interval, verdict); `curve.<baseline>`: what the curve supports, in words.
- reports/evaluate/predictions.jsonl (every test row, every model, greedy and beam) and
  samples.jsonl (the first evaluate.samples of them).
- plots/translation/budget_curve.json: one row per budget, each model's mean greedy BLEU over seeds
  (`transfer`, `target_only`) with `<model>_low`/`<model>_high`, the min and max over seeds; and
  plots/dvc.yaml, how `dvc plots show` draws it (one line per model; the training curves are
  DVCLive's)."""

from __future__ import annotations

from tqdm.auto import tqdm
from transformers import set_seed

from tasks.common.errors import HandoffError
from tasks.common.io import read_json, write_json_atomic, write_jsonl_atomic, write_plot_definitions
from tasks.common.models import save_model
from tasks.common.paths import Paths
from tasks.common.prepared import prepared_split
from tasks.common import significance
from tasks.common.significance import Scorer, curve_sentence, headline, paired_gain
from tasks.common.training import pick_device
from tasks.params import ALL, Params
from tasks.translation import language_tag
from tasks.translation.metrics import BleuStatistics, translation_scores
from tasks.translation.model import check_translation_handoff, load_translator, new_translator, translate
from tasks.translation.train import freeze, load_pairs, train_translator

TRANSFER = "transfer"
TRAINED = ("target_only",)  # the baselines trained on the target budget (so trained again per budget and seed)
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
    return "zero_shot" in p.evaluate.baselines or bool(p.evaluate.curve_budgets) or p.evaluate.seeds > 1


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


def with_seed(p: Params, seed: int) -> Params:
    """The run's params with another seed: the budget subset, the fresh model's init and the
    Trainer (data order, dropout) all follow p.seed."""
    return p if seed == p.seed else p.model_copy(update={"seed": seed})


def run_seeds(p: Params) -> list[int]:
    return [p.seed + i for i in range(p.evaluate.seeds)]


def train_target_only(p: Params, paths: Paths, tokenizer, splits, budget: int | None, name: str):
    """The fair baseline: a fresh model of the same shape and tokenizer, trained only on the
    target pair's `budget` rows with evaluate.target_only's params. Its init follows p.seed
    (a pretrained init's added embedding rows too)."""
    set_seed(p.seed)
    model = new_translator(p, tokenizer)
    return train_translator(model, splits, tokenizer, p.evaluate.target_only, p, paths, name, budget)


def finetune_at_budget(p: Params, paths: Paths, tokenizer, splits, budget: int, name: str):
    """models/source fine-tuned again as the finetune stage does (same strategy and params, its
    own freeze, p.seed), on `budget` target pairs; kept in memory, not saved."""
    model = load_translator(paths.source_model)
    freeze(model, p.finetune.strategy, p.finetune.freeze_layers)
    model, _ = train_translator(model, splits, tokenizer, p.finetune, p, paths, name, budget)
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


def transfer_summary(scores: dict, p: Params, notes: dict, by_budget: dict, own: dict, own_rows: int) -> dict:
    """Beam BLEU of the transfer model, each baseline's, and the gain over each (BLEU and chrF);
    the verdict on each gain at the run's own budget (`own`: paired_gain results) and the budget
    curve's figures, with the sentences a person reads first."""
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
        "headline": [headline(gain, name, f"{own_rows} pairs", unit="BLEU") for name, gain in own.items()],
        "verdict": {name: gain["verdict"] for name, gain in own.items()},
        "interval": {name: {key: gain[key] for key in ("gain", "low", "high", "confidence", "resamples", "seeds", "decoding")}
                     for name, gain in own.items()},
        "budget": str(own_rows),
        "by_budget": by_budget,
        "curve": curve_sentences(by_budget, list(own)),
        "seeds": run_seeds(p),
        "bleu_signature": transfer["bleu_signature"],
        "target_budget": p.finetune.target_budget,
        "strategy": p.finetune.strategy,
        "languages": {"source": p.data.source.languages.model_dump(), "target": p.data.target.languages.model_dump()},
        "notes": notes,
    }


def curve_sentences(by_budget: dict, baselines: list[str]) -> dict[str, str]:
    """What the curve supports against each baseline, e.g. "transfer vs target_only: helps at
    75-300 pairs" (budgets with one BLEU verdict grouped)."""
    bleu = {key: {**point, "gain_over": {name: g["bleu"] for name, g in point["gain_over"].items()}}
            for key, point in by_budget.items()}
    return {name: curve_sentence(bleu, name, "pairs") for name in baselines}


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
    """Every budget of the curve, smallest first: the run's own and each of evaluate.curve_budgets,
    capped at the training rows there are ("all": every one of them), each once."""
    return sorted({own} | {available if b == ALL else min(b, available) for b in p.evaluate.curve_budgets})


def curve_hypotheses(p: Params, paths: Paths, tokenizer, splits, texts: list[str], tgt_lang: str,
                     own: dict[str, list[str]]) -> dict[int, dict[str, list[list[str]]]]:
    """Greedy hypotheses by budget, model and seed (in run_seeds order): transfer and each trained
    baseline at every budget and seed, trained here, except the run's own models (seed p.seed at
    its own budget: `own`, their greedy hypotheses); a baseline that is not trained (zero_shot)
    is the same at every budget and seed."""
    own_rows = own_budget(p, paths, splits)
    trained = [TRANSFER] + [name for name in TRAINED if name in own]
    greedy = decoding_options(p)["greedy"]
    curve: dict[int, dict[str, list[list[str]]]] = {}
    for budget in curve_budgets(p, own_rows, len(splits["train"])):
        runs: dict[str, list[list[str]]] = {name: [] for name in own}
        for seed in run_seeds(p):
            for name in trained:
                if budget == own_rows and seed == p.seed:
                    runs[name].append(own[name])
                    continue
                q = with_seed(p, seed)
                if name == TRANSFER:
                    model = finetune_at_budget(q, paths, tokenizer, splits, budget, f"finetune-{budget}-seed{seed}")
                else:
                    model, _ = train_target_only(q, paths, tokenizer, splits, budget, f"{name}-{budget}-seed{seed}")
                runs[name].append(decode(model, tokenizer, texts, tgt_lang, greedy, p, f"{name} @{budget} seed {seed}"))
                del model
            for name in own:
                if name not in trained:
                    runs[name].append(own[name])
        curve[budget] = runs
    return curve


# ---------------------------------------------------------------- significance


def budget_report(curve: dict[int, dict[str, list[list[str]]]], statistics: BleuStatistics, p: Params) -> dict:
    """by_budget: per budget (keyed by its rows as text) the rows trained on, the seeds, each
    model's greedy BLEU over seeds and the paired gain of transfer over each baseline: the
    kind-neutral significance.budget_report, with BLEU named in each figure."""
    scorers = {str(budget): {name: [statistics.scorer(hyps) for hyps in per_seed] for name, per_seed in runs.items()}
               for budget, runs in sorted(curve.items())}
    e = p.evaluate
    report = significance.budget_report(scorers, {str(budget): budget for budget in curve}, statistics.count,
                                        TRANSFER, e.bootstrap_resamples, e.confidence, seed=p.seed)
    return {key: {"train_rows": entry["train_rows"], "seeds": entry["seeds"], "decoding": "greedy",
                  "scores": {name: {"bleu": figure} for name, figure in entry["scores"].items()},
                  "gain_over": {name: {"bleu": gain} for name, gain in entry["gain_over"].items()}}
            for key, entry in report.items()}


def gain(model: list[Scorer], baseline: list[Scorer], n_rows: int, p: Params) -> dict:
    e = p.evaluate
    return paired_gain(model, baseline, n_rows, e.bootstrap_resamples, e.confidence, seed=p.seed)


def own_significance(p: Params, hypotheses: dict, statistics: BleuStatistics, by_budget: dict, own: int) -> dict:
    """Transfer vs each baseline at the run's own budget (paired_gain results + "decoding"): with
    one seed on the beam hypotheses of the run's own models, with more the greedy curve point
    over the seeds."""
    if p.evaluate.seeds == 1:
        transfer = [statistics.scorer(hypotheses[TRANSFER]["beam"])]
        return {name: {**gain(transfer, [statistics.scorer(by_mode["beam"])], statistics.count, p), "decoding": "beam"}
                for name, by_mode in hypotheses.items() if name != TRANSFER}
    point = by_budget[str(own)]["gain_over"]
    return {name: {**point[name]["bleu"], "decoding": "greedy"} for name in point}


# ---------------------------------------------------------------- plots

KIND = "translation"  # plots/translation/: dvc.yaml's `plots/${task.kind}` output of evaluate


def budget_rows(by_budget: dict) -> list[dict]:
    """{budget, transfer, transfer_low, transfer_high, target_only, ...}: one row per budget, each
    model's mean BLEU over seeds a field of its own, so DVC draws one line per model
    (`y: [transfer, target_only]`), and `_low`/`_high` the min and max over the seeds."""
    rows = []
    for entry in sorted(by_budget.values(), key=lambda e: e["train_rows"]):
        row: dict = {"budget": entry["train_rows"]}
        for name in (TRANSFER, *TRAINED):
            if name in entry["scores"]:
                bleu = entry["scores"][name]["bleu"]
                row.update({name: bleu["mean"], f"{name}_low": bleu["min"], f"{name}_high": bleu["max"]})
        rows.append(row)
    return rows


def write_plots(paths: Paths, by_budget: dict) -> None:
    """The budget curve, then its DVC plot definition. The loss curves are not repeated here:
    DVCLive's files under dvclive/finetune (the finetune stage's `plots`) hold them."""
    rows = budget_rows(by_budget)
    models = [name for name in (TRANSFER, *TRAINED) if all(name in row for row in rows)]
    write_json_atomic(paths.kind_plots(KIND) / "budget_curve.json", rows)
    budget = {"template": "linear" if len(rows) > 1 else "scatter",  # one budget: a line would not show
              "x": "budget", "y": models, "x_label": "target training pairs", "y_label": "BLEU (greedy, mean over seeds)",
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
    notes["budget_curve"] = {"seeds": run_seeds(p), "decoding": "greedy", "plot_band": "min and max over seeds",
                             "interval": "paired bootstrap over test rows of sacrebleu's sentence statistics, "
                                         "per-resample gain averaged over seeds"}
    greedy = {name: by_mode["greedy"] for name, by_mode in hypotheses.items()}
    curve = curve_hypotheses(p, paths, tokenizer, splits, texts, tgt_lang, greedy)
    statistics = BleuStatistics(references, tgt_lang)
    by_budget = budget_report(curve, statistics, p)
    own_rows = own_budget(p, paths, splits)
    own = own_significance(p, hypotheses, statistics, by_budget, own_rows)

    summary = transfer_summary(scores, p, notes, by_budget, own, own_rows)
    predictions = prediction_rows(rows, hypotheses)
    reports = paths.evaluate_reports
    write_json_atomic(paths.metrics / "scores.json", scores)
    write_json_atomic(paths.metrics / "transfer.json", summary)
    write_jsonl_atomic(reports / "predictions.jsonl", predictions)
    write_jsonl_atomic(reports / "samples.jsonl", predictions[: p.evaluate.samples])
    write_plots(paths, by_budget)
    return summary
