"""Translation evaluate on the tiny fine-tuned Multi30k workspace (real data, 2-layer model):
every output written and consistent, a budget curve over seeds (each seed its own subset, the
run's own models not trained again), the BLEU bootstrap and its verdicts, a missing handoff as
one line."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import torch
import yaml
from sacrebleu.metrics import BLEU

from tasks.translation import evaluate, train
from tasks.common.errors import HandoffError
from tasks.common.io import read_json, read_jsonl
from tasks.common.paths import Paths
from tasks.common.significance import HELPS, HURTS, NO_DIFFERENCE, paired_gain
from tasks.translation.evaluate import BleuStatistics, budget_rows, curve_budgets, decoding_options, prediction_rows
from tasks.translation.metrics import translation_scores

TEST_ROWS = 12
# Short outputs and few rows keep decoding to seconds on a shared CPU.
FAST = {
    "evaluate.test_rows": TEST_ROWS,
    "evaluate.samples": 3,
    "evaluate.batch_size": 8,
    "evaluate.generation.num_beams": 2,
    "evaluate.generation.max_new_tokens": 12,
    "evaluate.curve_budgets": [],
    # 4 steps, one evaluation on the (whole) val split: the baselines train in seconds
    "evaluate.target_only": {"max_steps": 4, "eval_steps": 4, "batch_size": 16, "learning_rate": 1e-3},
}
OUTPUTS = ("metrics/scores.json", "metrics/transfer.json", "reports/evaluate/predictions.jsonl",
           "reports/evaluate/samples.jsonl", "plots/translation/budget_curve.json", "plots/dvc.yaml")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models on a shared, busy CPU: with two intra-op threads every op waits on the other
    (3 s vs 0.02 s for one batch of decoding here), so these tests use one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def workspace(tmp_path, translation_finetuned) -> Paths:
    """A private copy of the fine-tuned workspace (evaluate writes into it)."""
    shutil.copytree(translation_finetuned, tmp_path, dirs_exist_ok=True, symlinks=True)
    return Paths(tmp_path)


def test_run_writes_every_output_with_consistent_scores(workspace, translation_params):
    p = translation_params(**FAST, **{"evaluate.baselines": ["target_only", "zero_shot"]})
    summary = evaluate.run(p, workspace)
    root = workspace.root
    for name in OUTPUTS:
        assert (root / name).is_file(), name

    scores = read_json(root / "metrics/scores.json")
    assert set(scores) == {"transfer", "target_only", "zero_shot"}
    for by_mode in scores.values():
        assert set(by_mode) == {"greedy", "beam"}
        for s in by_mode.values():
            assert 0.0 <= s["bleu"] <= 100.0 and 0.0 <= s["chrf"] <= 100.0
            assert 0.0 <= s["exact_match"] <= 1.0
            assert s["count"] == TEST_ROWS
            assert "nrefs:1" in s["bleu_signature"]

    transfer = read_json(root / "metrics/transfer.json")
    assert transfer == summary
    assert transfer["metric"] == "bleu"
    assert transfer["transfer"] == scores["transfer"]["beam"]["bleu"]
    for name in ("target_only", "zero_shot"):
        assert transfer["baselines"][name] == scores[name]["beam"]["bleu"]
        assert transfer["gain_over"][name]["bleu"] == pytest.approx(transfer["transfer"] - transfer["baselines"][name])
        assert transfer["gain_over"][name]["chrf"] == pytest.approx(
            scores["transfer"]["beam"]["chrf"] - scores[name]["beam"]["chrf"])
    assert transfer["strategy"] == p.finetune.strategy
    assert transfer["notes"]["zero_shot"]["tag"] == f"<2{p.data.target.languages.tgt}>"

    predictions = read_jsonl(root / "reports/evaluate/predictions.jsonl")
    test_rows = read_jsonl(workspace.split_file("target", "test"))[:TEST_ROWS]
    assert [row["id"] for row in predictions] == [row["id"] for row in test_rows]
    assert [row["ref"] for row in predictions] == [row["tgt"] for row in test_rows]
    for row in predictions:
        for model in scores:
            assert isinstance(row[model]["greedy"], str) and isinstance(row[model]["beam"], str)
    # the scores are those of the hypotheses written out, not of another decoding
    rescored = translation_scores([row["transfer"]["beam"] for row in predictions],
                                  [row["ref"] for row in predictions], p.data.target.languages.tgt)
    assert rescored["bleu"] == pytest.approx(scores["transfer"]["beam"]["bleu"])
    assert read_jsonl(root / "reports/evaluate/samples.jsonl") == predictions[:3]

    assert (workspace.baselines / "target_only" / "config.json").is_file()
    budget = read_json(root / "plots/translation/budget_curve.json")
    assert len(budget) == 1  # no curve_budgets: the run's own point only, one series per model
    assert set(budget[0]) == {"budget"} | {f"{m}{end}" for m in ("transfer", "target_only") for end in ("", "_low", "_high")}
    assert budget[0]["transfer"] == pytest.approx(scores["transfer"]["greedy"]["bleu"])
    assert budget[0]["transfer_low"] == budget[0]["transfer"] == budget[0]["transfer_high"]  # one seed

    # one seed, no curve: by_budget holds the run's own point; the verdict is on beam hypotheses
    [(key, point)] = transfer["by_budget"].items()
    assert key == str(point["train_rows"]) and point["seeds"] == 1
    for model in scores:
        assert point["scores"][model]["bleu"]["per_seed"] == [pytest.approx(scores[model]["greedy"]["bleu"])]
    assert set(point["gain_over"]) == set(transfer["verdict"]) == set(transfer["interval"]) == {"target_only", "zero_shot"}
    assert transfer["budget"] == key and transfer["seeds"] == [p.seed]
    for name, result in transfer["interval"].items():
        assert result["decoding"] == "beam" and result["seeds"] == 1
        assert result["gain"] == pytest.approx(transfer["gain_over"][name]["bleu"])
        assert result["low"] <= result["gain"] <= result["high"]
        assert transfer["verdict"][name] in (HELPS, NO_DIFFERENCE, HURTS)
        assert transfer["curve"][name] == f"transfer vs {name}: {point['gain_over'][name]['bleu']['verdict']} at {key} pairs"
    assert [line.split(":")[0] for line in transfer["headline"]] == [f"transfer vs {name} at {key} pairs" for name in ("target_only", "zero_shot")]


SEEDS = 2


@pytest.fixture(scope="module")
def curve_run(tmp_path_factory, translation_finetuned, translation_params):
    """One evaluate run with a curve of 2 budgets (a quarter of the rows and the run's own, all of
    them) x 2 seeds, recording each training (name, seed, budget) and each subset drawn."""
    root = tmp_path_factory.mktemp("translation-curve")
    shutil.copytree(translation_finetuned, root, dirs_exist_ok=True, symlinks=True)
    workspace = Paths(root)
    own = read_json(workspace.target_model / "finetune.json")["train_rows"]
    small = max(2, own // 4)
    p = translation_params(**{**FAST, "evaluate.test_rows": 6, "evaluate.generation.num_beams": 1,
                              "evaluate.baselines": ["target_only"], "evaluate.curve_budgets": [small],
                              "evaluate.seeds": SEEDS, "evaluate.bootstrap_resamples": 200,
                              "finetune.max_steps": 4, "finetune.eval_steps": 4})
    trainings, subsets = [], []
    real_train, real_subset = evaluate.train_translator, train.budget_subset

    def recorded_train(model, splits, tokenizer, tp, q, paths, name, budget):
        trainings.append((name, q.seed, budget))
        return real_train(model, splits, tokenizer, tp, q, paths, name, budget)

    def recorded_subset(split, budget, seed):
        subset = real_subset(split, budget, seed)
        subsets.append((budget, seed, [tuple(ids) for ids in subset["input_ids"]]))
        return subset

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(evaluate, "train_translator", recorded_train)
            patch.setattr(train, "budget_subset", recorded_subset)
            summary = evaluate.run(p, workspace)
    finally:
        torch.set_num_threads(threads)
    return {"workspace": workspace, "params": p, "summary": summary, "own": own, "small": small,
            "trainings": trainings, "subsets": subsets}


def test_curve_over_budgets_and_seeds_writes_every_file_and_point(curve_run):
    workspace, own, small, p = curve_run["workspace"], curve_run["own"], curve_run["small"], curve_run["params"]
    for name in OUTPUTS:
        assert (workspace.root / name).is_file(), name
    transfer = read_json(workspace.metrics / "transfer.json")
    assert transfer == curve_run["summary"]
    assert set(transfer["by_budget"]) == {str(small), str(own)}
    for key, point in transfer["by_budget"].items():
        assert point["train_rows"] == int(key) and point["seeds"] == SEEDS
        for model in ("transfer", "target_only"):
            bleu = point["scores"][model]["bleu"]
            assert len(bleu["per_seed"]) == SEEDS and bleu["min"] <= bleu["mean"] <= bleu["max"]
        result = point["gain_over"]["target_only"]["bleu"]
        assert result["seeds"] == SEEDS and result["resamples"] == 200
        assert result["low"] <= result["high"] and result["verdict"] in (HELPS, NO_DIFFERENCE, HURTS)
    # more than one seed: the verdict is the greedy curve point at the run's own budget
    assert transfer["interval"]["target_only"]["decoding"] == "greedy" and transfer["budget"] == str(own)
    assert transfer["seeds"] == [p.seed, p.seed + 1]
    assert transfer["verdict"]["target_only"] == transfer["by_budget"][str(own)]["gain_over"]["target_only"]["bleu"]["verdict"]
    # seed p.seed at the own budget is the run's own model: its greedy BLEU from scores.json
    scores = read_json(workspace.metrics / "scores.json")
    for model in ("transfer", "target_only"):
        assert transfer["by_budget"][str(own)]["scores"][model]["bleu"]["per_seed"][0] == pytest.approx(
            scores[model]["greedy"]["bleu"])

    points = read_json(workspace.kind_plots("translation") / "budget_curve.json")
    assert [row["budget"] for row in points] == [small, own]
    for row in points:
        bleu = transfer["by_budget"][str(row["budget"])]["scores"]
        for model in ("transfer", "target_only"):
            assert row[model] == pytest.approx(bleu[model]["bleu"]["mean"])
            assert (row[f"{model}_low"], row[f"{model}_high"]) == (bleu[model]["bleu"]["min"], bleu[model]["bleu"]["max"])
    [definition] = yaml.safe_load((workspace.root / "plots/dvc.yaml").read_text())["plots"]
    assert definition["translation/budget_curve.json"]["y"] == ["transfer", "target_only"]  # one line per model
    assert not workspace.checkpoints(f"finetune-{small}-seed{p.seed}").exists()  # finished runs leave no checkpoints


def test_curve_trains_every_seed_but_the_runs_own_models(curve_run):
    """Seed p.seed at the own budget is models/target and the saved baseline: not trained again.
    Every other (budget, seed) trains transfer and target_only with that seed."""
    seed, own, small = curve_run["params"].seed, curve_run["own"], curve_run["small"]
    expected = {("target_only", seed, None)}  # the stage's own baseline (finetune.target_budget: all rows)
    for budget in (small, own):
        for s in range(seed, seed + SEEDS):
            if (budget, s) != (own, seed):
                expected |= {(f"finetune-{budget}-seed{s}", s, budget), (f"target_only-{budget}-seed{s}", s, budget)}
    assert sorted(curve_run["trainings"], key=str) == sorted(expected, key=str)


def test_each_seed_draws_its_own_subset(curve_run):
    small, seed = curve_run["small"], curve_run["params"].seed
    drawn = {s: rows for budget, s, rows in curve_run["subsets"] if budget == small}
    assert set(drawn) == {seed, seed + 1}
    assert len(drawn[seed]) == len(drawn[seed + 1]) == small
    assert drawn[seed] != drawn[seed + 1]
    # the same seed draws the same subset for transfer and target_only (a paired comparison)
    for budget, s, rows in curve_run["subsets"]:
        if budget == small:
            assert rows == drawn[s]


# ---------------------------------------------------------------- the BLEU bootstrap (no training)


def synthetic_corpus(n_rows: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = [f"mot{i}" for i in range(60)]
    return [" ".join(rng.choice(words, size=int(rng.integers(5, 15)))) for _ in range(n_rows)]


def damaged(sentences: list[str], seed: int) -> list[str]:
    """A decent system: each sentence with one word dropped (which one: seeded)."""
    rng = np.random.default_rng(seed)
    out = []
    for sentence in sentences:
        words = sentence.split()
        del words[int(rng.integers(len(words)))]
        out.append(" ".join(words))
    return out


def test_bleu_scorer_is_sacrebleus_corpus_bleu_on_any_resample():
    references = synthetic_corpus(200)
    hypotheses = damaged(references, 1)
    statistics = BleuStatistics(references, "fr")
    score = statistics.scorer(hypotheses)
    assert score(np.arange(200)) == pytest.approx(translation_scores(hypotheses, references, "fr")["bleu"])
    rows = np.random.default_rng(3).integers(0, 200, size=200)  # with repeats, as a resample has
    expected = BLEU(tokenize="13a").corpus_score([hypotheses[i] for i in rows], [[references[i] for i in rows]]).score
    assert score(rows) == pytest.approx(expected)
    with pytest.raises(ValueError, match="199 hypotheses for 200"):
        statistics.scorer(hypotheses[:-1])


def test_bootstrap_against_itself_is_no_difference_and_against_garbage_helps():
    """1,000 sentences, 3 seeds, 1,000 resamples: a model against itself holds 0; against a
    crippled baseline (empty output) the interval is above 0, and the reverse hurts."""
    references = synthetic_corpus(1000)
    statistics = BleuStatistics(references, "fr")
    model = [statistics.scorer(damaged(references, seed)) for seed in range(3)]
    garbage = [statistics.scorer([""] * len(references))] * 3
    started = time.perf_counter()
    itself = paired_gain(model, model, len(references), count=1000, seed=5)
    elapsed = time.perf_counter() - started
    assert (itself["gain"], itself["low"], itself["high"], itself["verdict"]) == (0.0, 0.0, 0.0, NO_DIFFERENCE)
    better = paired_gain(model, garbage, len(references), count=1000, seed=5)
    assert better["verdict"] == HELPS and 0 < better["low"] <= better["gain"] <= better["high"]
    assert paired_gain(garbage, model, len(references), count=1000, seed=5)["verdict"] == HURTS
    assert elapsed < 20, f"1,000 resamples x 3 seeds x 1,000 rows took {elapsed:.1f} s"


def test_budget_rows_hold_the_mean_and_the_min_and_max_over_seeds():
    def spread_of(*v: float) -> dict:
        return {"mean": sum(v) / len(v), "std": 0.0, "min": min(v), "max": max(v), "per_seed": list(v)}

    by_budget = {
        "300": {"train_rows": 300, "scores": {"transfer": {"bleu": spread_of(20.0, 24.0)}, "target_only": {"bleu": spread_of(10.0, 12.0)},
                                              "zero_shot": {"bleu": spread_of(1.0, 1.0)}}},
        "75": {"train_rows": 75, "scores": {"transfer": {"bleu": spread_of(8.0, 10.0)}, "target_only": {"bleu": spread_of(2.0, 4.0)},
                                            "zero_shot": {"bleu": spread_of(1.0, 1.0)}}},
    }
    assert budget_rows(by_budget) == [
        {"budget": 75, "transfer": 9.0, "transfer_low": 8.0, "transfer_high": 10.0,
         "target_only": 3.0, "target_only_low": 2.0, "target_only_high": 4.0},
        {"budget": 300, "transfer": 22.0, "transfer_low": 20.0, "transfer_high": 24.0,
         "target_only": 11.0, "target_only_low": 10.0, "target_only_high": 12.0},
    ]


def test_missing_target_model_is_one_line_and_writes_nothing(workspace, translation_params):
    shutil.rmtree(workspace.target_model)
    with pytest.raises(HandoffError) as err:
        evaluate.run(translation_params(**FAST), workspace)
    message = str(err.value)
    assert "models/target" in message and "\n" not in message
    for name in OUTPUTS:
        assert not (workspace.root / name).exists(), name


def test_decoding_options_greedy_is_one_beam_and_beam_follows_params(translation_params):
    p = translation_params(**{"evaluate.generation.num_beams": 4, "evaluate.generation.no_repeat_ngram_size": 3})
    options = decoding_options(p)
    assert options["greedy"]["num_beams"] == 1 and "no_repeat_ngram_size" not in options["greedy"]
    assert options["beam"]["num_beams"] == 4 and options["beam"]["no_repeat_ngram_size"] == 3


def test_curve_budgets_are_capped_deduplicated_and_hold_the_runs_own(translation_params):
    p = translation_params(**{"evaluate.curve_budgets": [50, 10, 100, 5000, 10]})
    assert curve_budgets(p, own=100, available=300) == [10, 50, 100, 300]
    p = translation_params(**{"evaluate.curve_budgets": ["all", 20]})
    assert curve_budgets(p, own=100, available=300) == [20, 100, 300]
    assert curve_budgets(translation_params(), own=300, available=300) == [300]


def test_prediction_rows_keep_order_and_every_mode():
    rows = [{"id": "a", "src": "one", "tgt": "eins"}, {"id": "b", "src": "two", "tgt": "zwei"}]
    hyps = {"transfer": {"greedy": ["ein", "zwei"], "beam": ["eins", "zwei"]}}
    assert prediction_rows(rows, hyps) == [
        {"id": "a", "src": "one", "ref": "eins", "transfer": {"greedy": "ein", "beam": "eins"}},
        {"id": "b", "src": "two", "ref": "zwei", "transfer": {"greedy": "zwei", "beam": "zwei"}},
    ]
