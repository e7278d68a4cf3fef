"""Translation evaluate on the tiny fine-tuned Multi30k workspace (real data, 2-layer model):
every output written and consistent, budget-curve points, a missing handoff as one line."""

from __future__ import annotations

import shutil

import pytest
import torch

from tasks.translation import evaluate
from tasks.common.errors import HandoffError
from tasks.common.io import read_json, read_jsonl
from tasks.common.paths import Paths
from tasks.translation.evaluate import curve_budgets, decoding_options, prediction_rows
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
    assert set(budget[0]) == {"budget", "transfer", "target_only"}
    assert budget[0]["transfer"] == scores["transfer"]["greedy"]["bleu"]


def test_curve_budgets_add_points(workspace, translation_params):
    own = read_json(workspace.target_model / "finetune.json")["train_rows"]
    small = max(2, own // 4)
    p = translation_params(**{**FAST, "evaluate.test_rows": 6, "evaluate.generation.num_beams": 1,
                              "evaluate.baselines": ["target_only"], "evaluate.curve_budgets": [small],
                              "finetune.max_steps": 4, "finetune.eval_steps": 4})
    evaluate.run(p, workspace)
    points = read_json(workspace.kind_plots("translation") / "budget_curve.json")
    assert [row["budget"] for row in points] == sorted([small, own])
    assert all(0.0 <= row[model] <= 100.0 for row in points for model in ("transfer", "target_only"))
    assert not workspace.checkpoints(f"finetune-{small}").exists()  # finished runs leave no checkpoints


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


def test_curve_budgets_are_capped_deduplicated_and_skip_the_runs_own(translation_params):
    p = translation_params(**{"evaluate.curve_budgets": [50, 10, 100, 5000, 10]})
    assert curve_budgets(p, own=100, available=300) == [10, 50, 300]


def test_prediction_rows_keep_order_and_every_mode():
    rows = [{"id": "a", "src": "one", "tgt": "eins"}, {"id": "b", "src": "two", "tgt": "zwei"}]
    hyps = {"transfer": {"greedy": ["ein", "zwei"], "beam": ["eins", "zwei"]}}
    assert prediction_rows(rows, hyps) == [
        {"id": "a", "src": "one", "ref": "eins", "transfer": {"greedy": "ein", "beam": "eins"}},
        {"id": "b", "src": "two", "ref": "zwei", "transfer": {"greedy": "zwei", "beam": "zwei"}},
    ]
