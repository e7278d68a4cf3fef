"""tokenize, pretrain, finetune and evaluate on 200-row real subsets with a 2-layer scratch model."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from datasets import load_from_disk
from transformers import AutoConfig, AutoModelForSequenceClassification, Trainer

from tasks.classification import evaluate, finetune, pretrain, train
from tasks.common.errors import HandoffError, PipelineError
from tasks.common.io import read_json, read_jsonl
from tasks.common.training import capped_steps
from tasks.classification.tokenize import encode_split, train_wordpiece
from tasks.params import TrainParams, VaderLabels



@pytest.fixture
def workspace(pretrained_copy):
    """Here: a private copy of the pretrained workspace (the ingest tests' `workspace` is empty)."""
    return pretrained_copy


def snapshot(model, prefix: str) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(prefix)}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def load_target(paths):
    return AutoModelForSequenceClassification.from_pretrained(str(paths.target_model))


def load_source(paths):
    return AutoModelForSequenceClassification.from_pretrained(str(paths.source_model))


# ---------------------------------------------------------------- tokenize


def test_tokenize_keeps_examples_unpadded_and_reports_lengths(tokenized_workspace):
    train = load_from_disk(str(tokenized_workspace / "data/tokenized/target"))["train"]
    lengths = {len(ids) for ids in train["input_ids"]}
    assert len(lengths) > 5, "examples must not be padded to one length (dynamic padding)"
    assert train["length"] == [len(ids) for ids in train["input_ids"]]
    prepared = read_jsonl(tokenized_workspace / "data/prepared/target/train.jsonl")
    assert len(train) == len(prepared)
    assert train["labels"] == [["negative", "positive"].index(row["label"]) for row in prepared]
    report = read_json(tokenized_workspace / "reports/tokenize.json")
    assert report["target"]["train"]["rows"] == len(train)
    assert report["target"]["train"]["max"] >= report["target"]["train"]["p50"] > 0
    assert report["vocab_size"] <= 1000


def test_scratch_wordpiece_is_learned_from_the_texts():
    tokenizer = train_wordpiece(["the film was wonderful"] * 20 + ["a dull boring film"] * 20, 200, 32)
    ids = tokenizer("wonderful film")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["[CLS]", "wonderful", "film", "[SEP]"]


def test_texts_longer_than_max_length_are_truncated_and_counted_without_a_warning(params):
    tokenizer = train_wordpiece(["the film was wonderful"] * 20 + ["a dull boring film"] * 20, 200, 8)
    long_text = " ".join(["wonderful film"] * 20)
    rows = [{"id": 1, "text": long_text, "label": "positive"}, {"id": 2, "text": "dull", "label": "negative"}]
    warnings: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = warnings.append
    library_logger = logging.getLogger("transformers")  # transformers' own handler, not propagated to the root
    library_logger.addHandler(handler)
    try:
        encoded = encode_split(rows, tokenizer, params(**{"tokenize.max_length": 8}))
    finally:
        library_logger.removeHandler(handler)
    assert encoded["length"] == [8, 3]
    assert encoded["untruncated_length"] == [42, 3]
    assert not [r.getMessage() for r in warnings if "Token indices sequence length" in r.getMessage()]


# ---------------------------------------------------------------- pretrain


def test_supervised_pretrain_writes_a_labelled_classifier_and_live_logs(pretrained_workspace):
    config = AutoConfig.from_pretrained(str(pretrained_workspace / "models/source"))
    assert config.id2label == {0: "negative", 1: "positive"}
    assert config.num_hidden_layers == 2
    log = read_json(pretrained_workspace / "models/source/pretrain.json")
    assert log["mode"] == "supervised" and 0.0 <= log["val"]["eval_f1_macro"] <= 1.0
    assert (pretrained_workspace / "dvclive/pretrain/metrics.json").exists()
    assert not (pretrained_workspace / "checkpoints/pretrain").exists(), "a finished run leaves no checkpoint"


def test_pretrain_resumes_from_the_latest_checkpoint_after_a_kill(workspace, params, monkeypatch):
    p = params(**{"pretrain.max_steps": 8, "pretrain.eval_steps": 4, "pretrain.early_stopping_patience": 0})
    steps = []
    original = Trainer.training_step

    def dying_step(self, *args, **kwargs):
        steps.append(self.state.global_step)
        if len(steps) == 6:  # past checkpoint-4: the process "dies" here
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        pretrain.run(p, workspace)
    assert (workspace.checkpoints("pretrain") / "checkpoint-4").exists()
    steps.clear()
    monkeypatch.setattr(Trainer, "training_step", original)
    counted = []
    monkeypatch.setattr(Trainer, "training_step", lambda self, *a, **k: counted.append(1) or original(self, *a, **k))
    resumed_log = pretrain.run(p, workspace)
    assert len(counted) == 4, "the re-run must resume at step 4, not start over"
    resumed = snapshot(load_source(workspace), "")
    # The same run uninterrupted (the finished run left no checkpoint): the Trainer restored the
    # RNG state and the data order at step 4, so the model and its metrics are the same.
    counted.clear()
    straight_log = pretrain.run(p, workspace)
    assert len(counted) == 8
    straight = snapshot(load_source(workspace), "")
    assert resumed.keys() == straight.keys()
    assert all(torch.allclose(resumed[k], straight[k], atol=1e-6) for k in resumed), "resumed weights differ"
    scores = ("eval_loss", "eval_accuracy", "eval_f1_macro")
    assert [resumed_log["val"][k] for k in scores] == pytest.approx([straight_log["val"][k] for k in scores], abs=1e-6)


def test_mlm_pretrain_then_finetune_gets_a_fresh_head(workspace, params):
    p = params(**{"pretrain.mode": "mlm", "pretrain.max_steps": 4, "pretrain.eval_steps": 2})
    log = pretrain.run(p, workspace)
    config = AutoConfig.from_pretrained(str(workspace.source_model))
    assert config.architectures == ["BertForMaskedLM"]
    assert log["mlm_head"] == "fresh (init scratch)"
    assert sorted({entry["step"] for entry in log["history"] if "eval_loss" in entry}) == [2, 4]  # the MLM val loss curve
    assert read_json(workspace.source_model / "pretrain.json")["val"]["eval_loss"] > 0
    result = finetune.run(p, workspace)
    assert result["head"] == "fresh head: the source model has none (pretrain.mode mlm)"
    assert load_target(workspace).config.id2label[1] == "positive"


def test_early_stopping_stops_when_validation_stalls(workspace, params):
    p = params(**{"pretrain.max_steps": 40, "pretrain.epochs": 10.0, "pretrain.eval_steps": 1, "pretrain.learning_rate": 1e-9,
                  "pretrain.early_stopping_patience": 2})
    log = pretrain.run(p, workspace)
    assert log["history"][-1]["step"] < 40


# ---------------------------------------------------------------- finetune


def test_freeze_bottom_leaves_frozen_layers_unchanged(workspace, params):
    before = snapshot(load_source(workspace), "bert.encoder.layer.0.")
    embeddings = snapshot(load_source(workspace), "bert.embeddings.")
    top = snapshot(load_source(workspace), "bert.encoder.layer.1.")
    finetune.run(params(**{"finetune.strategy": "freeze_bottom", "finetune.freeze_layers": 1}), workspace)
    after = load_target(workspace)
    assert same(snapshot(after, "bert.encoder.layer.0."), before)
    assert same(snapshot(after, "bert.embeddings."), embeddings)
    assert not same(snapshot(after, "bert.encoder.layer.1."), top)


def test_head_only_trains_only_the_head(workspace, params):
    encoder = snapshot(load_source(workspace), "bert.")
    head = snapshot(load_source(workspace), "classifier.")
    result = finetune.run(params(**{"finetune.strategy": "head_only"}), workspace)
    assert result["head"] == "source head reused (same labels)"
    after = load_target(workspace)
    assert same(snapshot(after, "bert."), encoder)
    assert not same(snapshot(after, "classifier."), head)
    assert result["trainable_parameters"] == sum(v.numel() for v in head.values())


def test_features_strategy_writes_the_logistic_regression_into_the_head(workspace, params):
    encoder = snapshot(load_source(workspace), "bert.")
    result = finetune.run(params(**{"finetune.strategy": "features"}), workspace)
    after = load_target(workspace)
    assert same(snapshot(after, "bert."), encoder)
    assert 0.5 <= result["features"]["train_accuracy"] <= 1.0
    weight = after.classifier.weight.detach()
    assert torch.allclose(weight[0], -weight[1]), "binary LR is written as a symmetric 2-logit head"


def test_llrd_gives_lower_layers_smaller_learning_rates(workspace, params):
    p = params(**{"finetune.strategy": "llrd", "finetune.llrd_decay": 0.5})
    optimizer = train.llrd_optimizer(load_source(workspace), p.finetune)
    rates = [group["lr"] for group in optimizer.param_groups]
    assert rates == sorted(rates) and rates[-1] == p.finetune.learning_rate
    assert rates[1] == pytest.approx(rates[2] * 0.5)
    finetune.run(p, workspace)
    assert load_target(workspace).config.id2label[0] == "negative"


def test_target_budget_limits_training_rows_stratified(workspace, params):
    result = finetune.run(params(**{"finetune.target_budget": 20}), workspace)
    assert result["train_rows"] == 20
    target = load_from_disk(str(workspace.tokenized_domain("target")))["train"]
    subset = train.budget_subset(target, 20, seed=7)
    assert set(subset["labels"]) == {0, 1}
    assert subset["id"] == train.budget_subset(target, 20, seed=7)["id"]


def test_budget_split_is_the_subset_and_the_rest_without_overlap(workspace):
    target = load_from_disk(str(workspace.tokenized_domain("target")))["train"]
    labelled, rest = train.budget_split(target, 20, seed=7)
    assert labelled["id"] == train.budget_subset(target, 20, seed=7)["id"]
    assert rest["id"] == [row_id for row_id in target["id"] if row_id not in set(labelled["id"])]
    assert len(labelled) + len(rest) == len(target)
    assert len(train.budget_split(target, None, seed=7)[1]) == 0


def test_self_training_adds_confident_pseudo_labels_from_the_rows_left_out(workspace, params):
    p = params(**{"finetune.target_budget": 20, "finetune.self_training": {"rounds": 2, "min_confidence": 0.5}})
    result = finetune.run(p, workspace)
    target = load_from_disk(str(workspace.tokenized_domain("target")))["train"]
    rounds = result["self_training"]["rounds"]
    assert [r["round"] for r in rounds] == [1, 2] and result["labelled_rows"] == 20
    for report in rounds:
        # a 2-class softmax always reaches 0.5: every left-out row gets a guess
        assert report["unlabelled_rows"] == len(target) - 20 == report["pseudo_rows"]
        assert sum(report["per_label"].values()) == report["pseudo_rows"]
        assert report["train_rows"] == 20 + report["pseudo_rows"]
        assert 0.0 <= report["agree_with_held_back_labels"] <= 1.0
    assert result["train_rows"] == rounds[-1]["train_rows"]
    # each round is a run of its own; the last, the shipped model, is the stage's `finetune` run
    assert all(workspace.live_dir(f"finetune-self-training-{index}").is_dir() for index in (0, 1))
    assert not workspace.live_dir("finetune-self-training-2").exists()


def test_self_training_needs_confidence_and_leaves_nothing_to_do_with_every_label(workspace, params):
    strict = finetune.run(params(**{"finetune.target_budget": 20,
                                    "finetune.self_training": {"rounds": 1, "min_confidence": 1.0}}), workspace)
    report = strict["self_training"]["rounds"][0]
    assert report["pseudo_rows"] <= report["unlabelled_rows"] and report["train_rows"] == 20 + report["pseudo_rows"]
    everything = finetune.run(params(**{"finetune.self_training": {"rounds": 1}}), workspace)
    assert "none to pseudo-label" in everything["self_training"]["skipped"]
    assert everything["train_rows"] == len(load_from_disk(str(workspace.tokenized_domain("target")))["train"])
    assert (workspace.live_dir("finetune") / "metrics.json").is_file()  # the stage's metrics file: dvc.yaml's


def test_max_steps_caps_the_epochs_it_does_not_replace_them(workspace, params):
    """20 rows at batch 16 are 2 steps an epoch: 2 epochs stop at step 4, far below max_steps."""
    p = params(**{"finetune.target_budget": 20, "finetune.batch_size": 16, "finetune.epochs": 2.0,
                  "finetune.max_steps": 400, "finetune.eval_steps": 2, "finetune.early_stopping_patience": 0})
    result = finetune.run(p, workspace)
    assert result["train_rows"] == 20
    assert max(entry["step"] for entry in result["history"]) == 4


def test_capped_steps():
    params = TrainParams(epochs=10.0, max_steps=400, batch_size=16)
    assert capped_steps(params, 2083, 16) == 400  # the demo's target_only on every row: the cap
    assert capped_steps(params, 64, 16) == 40  # a 64-row budget: its 10 epochs
    assert capped_steps(params, 65, 16) == 50  # a short last batch is a step
    assert capped_steps(TrainParams(epochs=0.5, max_steps=400, batch_size=16), 64, 16) == 2
    assert capped_steps(TrainParams(epochs=10.0, max_steps=-1), 64, 16) == -1  # epochs alone
    assert capped_steps(params, 64, 32) == 20  # two processes (DDP) take 32 rows a step


def test_min_steps_floors_a_small_budget_and_max_steps_still_caps():
    floored = TrainParams(epochs=10.0, max_steps=400, min_steps=150, batch_size=16)
    assert capped_steps(floored, 32, 16) == 150  # 32 labels: 20 steps by epochs, raised to the floor
    assert capped_steps(floored, 512, 16) == 320  # past the floor: epochs decide
    assert capped_steps(floored, 2083, 16) == 400  # and the cap still holds
    assert capped_steps(TrainParams(epochs=1.0, min_steps=30, batch_size=16), 64, 16) == 30  # no cap
    assert capped_steps(TrainParams(epochs=1.0, max_steps=6, min_steps=150, batch_size=16), 32, 16) == 6  # the cap wins


def test_freeze_layers_beyond_depth_is_a_clear_error(workspace, params):
    with pytest.raises(PipelineError, match="freeze_layers: 5 exceeds the model's 2 layers"):
        finetune.run(params(**{"finetune.strategy": "freeze_bottom", "finetune.freeze_layers": 5}), workspace)


def relabel(model_dir, labels: list[str]) -> None:
    config_file = model_dir / "config.json"
    config = json.loads(config_file.read_text())
    config["id2label"] = {str(i): name for i, name in enumerate(labels)}
    config["label2id"] = {name: i for i, name in enumerate(labels)}
    config_file.write_text(json.dumps(config))


def test_source_labels_other_than_task_labels_get_a_fresh_head(workspace, params):
    """A source task of other classes hands over its encoder, not its head: even with as many
    classes as the target, the head starts fresh (a learning rate of 1e-9 keeps it at its init)."""
    relabel(workspace.source_model, ["neg", "pos"])
    source = load_source(workspace)
    result = finetune.run(params(**{"finetune.strategy": "head_only", "finetune.learning_rate": 1e-9}), workspace)
    assert result["head"] == "fresh head: source labels ['neg', 'pos'] differ from task.labels ['negative', 'positive']"
    assert read_json(workspace.target_model / "finetune.json")["head"] == result["head"]
    target = load_target(workspace)
    assert target.config.id2label == {0: "negative", 1: "positive"}
    assert same(snapshot(target, "bert."), snapshot(source, "bert."))
    assert not torch.allclose(target.classifier.weight, source.classifier.weight, atol=1e-3)


def test_interpolated_mixes_float_tensors_and_keeps_integer_buffers():
    tuned = {"w": torch.tensor([1.0, 3.0]), "ids": torch.tensor([0, 1])}
    source = {"w": torch.tensor([3.0, 7.0]), "ids": torch.tensor([5, 6])}
    mixed = train.interpolated(tuned, source, 0.75)
    assert torch.equal(mixed["w"], torch.tensor([1.5, 4.0])) and torch.equal(mixed["ids"], tuned["ids"])


def test_wise_alpha_mixes_the_saved_model_with_the_source_classifier(workspace, params):
    """wise_alpha 0 keeps none of the fine-tune: the saved weights are the source classifier's,
    and finetune.json reports val before and after the mix."""
    source = load_source(workspace)
    result = finetune.run(params(**{"finetune.wise_alpha": 0.0}), workspace)
    assert same(snapshot(load_target(workspace), ""), snapshot(source, ""))
    report = read_json(workspace.target_model / "finetune.json")["wise_ft"]
    assert report == result["wise_ft"] and report["alpha"] == 0.0
    assert 0.0 <= report["val_f1_macro"] <= 1.0 and 0.0 <= report["val_f1_macro_fine_tuned"] <= 1.0


def test_wise_alpha_is_skipped_with_a_note_when_the_head_is_fresh(workspace, params):
    relabel(workspace.source_model, ["neg", "pos"])
    source = load_source(workspace)
    result = finetune.run(params(**{"finetune.wise_alpha": 0.0}), workspace)
    assert result["wise_ft"]["skipped"].startswith("fresh head: source labels")
    assert not same(snapshot(load_target(workspace), "bert."), snapshot(source, "bert."))


def test_target_model_labels_other_than_task_labels_are_a_handoff_error(workspace, params):
    p = params(**{"evaluate.baselines": []})
    finetune.run(p, workspace)
    relabel(workspace.target_model, ["neg", "pos"])
    with pytest.raises(HandoffError, match=r"model labels \['neg', 'pos'\] differ from task.labels"):
        evaluate.run(p, workspace)


def test_tokenizer_mismatch_is_a_handoff_error(workspace, params):
    other = train_wordpiece(["completely different words here"] * 10, 120, 32)
    other.save_pretrained(workspace.source_model)
    with pytest.raises(HandoffError, match="tokenizer differs from data/tokenized/tokenizer"):
        finetune.run(params(), workspace)


def test_missing_source_model_is_a_handoff_error(tokenized_workspace, tmp_path, params):
    import shutil

    from tasks.common.paths import Paths

    shutil.copytree(tokenized_workspace, tmp_path, dirs_exist_ok=True)
    with pytest.raises(HandoffError, match="run the previous stage first"):
        finetune.run(params(), Paths(tmp_path))


# ---------------------------------------------------------------- evaluate


def test_evaluate_scores_transfer_and_every_baseline_on_the_test_split(workspace, params):
    p = params(**{"evaluate.vader": {"negative": "negative", "positive": "positive"}})
    finetune.run(p, workspace)
    summary = evaluate.run(p, workspace)
    scores = read_json(workspace.metrics / "scores.json")
    test_size = len(read_jsonl(workspace.split_file("target", "test")))
    assert set(scores) == {"transfer", "target_only", "zero_shot", "vader"}
    for name, figures in scores.items():
        assert figures["support"] == test_size
        for key in ("accuracy", "f1_micro", "f1_macro", "f1_weighted", "precision_macro", "recall_macro"):
            assert 0.0 <= figures[key] <= 1.0, (name, key)
        assert set(figures["per_class"]) == {"negative", "positive"}
    assert sum(map(sum, scores["transfer"]["confusion_matrix"])) == test_size
    assert summary["gain_over"]["vader"] == pytest.approx(scores["transfer"]["f1_macro"] - scores["vader"]["f1_macro"])
    assert len(read_json(workspace.kind_plots("classification") / "confusion.json")) == test_size
    assert (workspace.baselines / "target_only" / "model.safetensors").exists()
    assert read_json(workspace.metrics / "transfer.json") == summary
    predictions = read_jsonl(workspace.evaluate_reports / "predictions.jsonl")
    assert len(predictions) == test_size and {"transfer", "target_only", "vader"} <= set(predictions[0])
    assert sum(r["transfer"] == r["label"] for r in predictions) / test_size == pytest.approx(
        scores["transfer"]["accuracy"])


def test_vader_baseline_is_the_real_rule_based_scorer():
    vader = VaderLabels(negative="negative", positive="positive")
    predictions = evaluate.vader_predictions(["I love this, it is wonderful!", "Terrible. I hate it."], vader,
                                             ["negative", "positive"])
    assert predictions.tolist() == [1, 0]


def test_vader_predicts_the_declared_labels_in_task_labels_order():
    texts = ["I love this, it is wonderful!", "Terrible. I hate it.", "The box is on the table."]
    labels = ["good", "meh", "bad"]  # a 3-class sentiment target, in an order of its own
    with_neutral = VaderLabels(negative="bad", positive="good", neutral="meh")
    assert evaluate.vader_predictions(texts, with_neutral, labels).tolist() == [0, 2, 1]
    without = VaderLabels(negative="bad", positive="good")  # compound 0 counts as positive
    assert evaluate.vader_predictions(texts, without, labels).tolist() == [0, 2, 0]


def test_vader_is_skipped_with_a_note_unless_declared(workspace, params):
    p = params(**{"evaluate.baselines": ["vader"]})
    finetune.run(p, workspace)
    summary = evaluate.run(p, workspace)
    assert summary["notes"]["vader"] == {"skipped": evaluate.VADER_UNDECLARED}
    assert "vader" not in read_json(workspace.metrics / "scores.json")


def test_zero_shot_is_skipped_with_a_reason_for_an_mlm_source(workspace, params):
    p = params(**{"pretrain.mode": "mlm", "pretrain.max_steps": 2, "evaluate.baselines": ["zero_shot"]})
    pretrain.run(p, workspace)
    finetune.run(p, workspace)
    summary = evaluate.run(p, workspace)
    assert "no classifier head" in summary["notes"]["zero_shot"]["skipped"]
    assert summary["baselines"] == {}
