"""Label rules: a numeric score split at a threshold (neutral band dropped), or raw values
mapped to class names; what fits neither is quarantined with its reason."""

from __future__ import annotations

import pytest

from tasks.common.errors import ParamsError
from tasks.common.io import read_jsonl
from tasks.classification.ingest import apply_rule
from tasks.common.sources import Bad
from tasks.params import LabelRule
from tests.classification.conftest import balanced_rows, spec, write_rows

LABELS = ["negative", "positive"]
VADER = LabelRule(kind="threshold", threshold=0.0, neutral_band=0.5)


@pytest.mark.parametrize(
    "raw, expected",
    [
        (2.27, "positive"), ("-0.9", "negative"), (" 0.5 ", "positive"), (-0.5, "negative"),
        (0.49, None), (-0.2, None), (0, None),
    ],
)
def test_threshold_with_neutral_band(raw, expected):
    assert apply_rule(raw, VADER, LABELS) == expected


def test_threshold_itself_is_neutral_even_without_a_band():
    rule = LabelRule(kind="threshold", threshold=3.0)
    assert apply_rule(3, rule, LABELS) is None
    assert apply_rule(4, rule, LABELS) == "positive"
    assert apply_rule(2.99, rule, LABELS) == "negative"


@pytest.mark.parametrize("raw", ["abc", "nan", "inf", [1]])
def test_threshold_non_numeric_is_quarantined(raw):
    outcome = apply_rule(raw, VADER, LABELS)
    assert isinstance(outcome, Bad) and outcome.kind == "not_a_number"


@pytest.mark.parametrize("raw", [None, "", "  ", float("nan")])
def test_missing_label_is_quarantined(raw):
    assert apply_rule(raw, VADER, LABELS) == Bad("missing_label", "missing label")


def test_map_rule_maps_raw_values_as_strings():
    rule = LabelRule(kind="map", mapping={"1": "negative", "5": "positive", "true": "positive"})
    assert apply_rule(1, rule, LABELS) == "negative"
    assert apply_rule("5", rule, LABELS) == "positive"
    assert apply_rule(True, rule, LABELS) == "positive"
    assert apply_rule(3, rule, LABELS) == Bad("unknown_label", "unknown label '3'")


def test_empty_mapping_means_values_are_class_names():
    rule = LabelRule(kind="map")
    assert apply_rule(" positive ", rule, LABELS) == "positive"
    assert apply_rule("Positive", rule, LABELS) == Bad("unknown_label", "unknown label 'Positive'")


def test_map_rule_end_to_end(tmp_path, ingest, workspace):
    rows = [{"text": f"review {i}", "stars": str(1 + i % 5)} for i in range(40)]
    path = write_rows(tmp_path / "stars.csv", rows, "csv")
    rule = {"kind": "map", "mapping": {"1": "negative", "2": "negative", "4": "positive", "5": "positive"}}
    source = {"path": str(path), "columns": {"text": "text", "label": "stars"}, "label_rule": rule}
    report = ingest(source)["source"]
    assert report["kept"] == 32
    assert report["quarantined"]["by_reason"]["unknown_label"] == 8  # the 3-star rows
    reasons = {row["reason"] for row in read_jsonl(workspace.quarantine)}
    assert reasons == {"unknown label '3'"}


def test_neutral_rows_are_counted_not_quarantined(tmp_path, ingest, workspace):
    neutral = [{"id": "n1", "score": 0.2, "text": "meh"}, {"id": "n2", "score": -0.4, "text": "so so"}]
    rows = balanced_rows("s") + neutral
    report = ingest(spec(write_rows(tmp_path / "s.tsv", rows, "tsv")))["source"]
    assert report["dropped_neutral"] == 2 and report["quarantined"]["total"] == 0
    assert read_jsonl(workspace.quarantine) == []


def test_threshold_rule_needs_two_labels(tmp_path, ingest):
    """The source's classes are task.labels unless data.source.labels names its own."""
    path = write_rows(tmp_path / "s.tsv", balanced_rows("s"), "tsv")
    expected = (r"data\.source\.label_rule\.kind: threshold needs exactly 2 classes \(low, high\) in task\.labels, "
                r"got \['negative', 'neutral', 'positive'\]; a source task of its own: data\.source\.labels")
    with pytest.raises(ParamsError, match=expected):
        ingest(spec(path), task={"labels": ["negative", "neutral", "positive"]})


def test_mapping_to_a_class_not_in_labels_is_a_params_error(tmp_path, ingest):
    path = write_rows(tmp_path / "s.tsv", balanced_rows("s"), "tsv")
    with pytest.raises(ParamsError, match=r"data\.source\.label_rule\.mapping: 'pos' maps to 'good'"):
        ingest(spec(path, label_rule={"kind": "map", "mapping": {"pos": "good"}}))


def test_custom_labels_follow_the_order_of_task_labels(tmp_path, ingest, workspace):
    path = write_rows(tmp_path / "s.tsv", balanced_rows("s"), "tsv")
    target = spec(write_rows(tmp_path / "t.tsv", balanced_rows("t"), "tsv"))
    ingest(spec(path), target=target, task={"labels": ["bad", "good"]})
    labels = {row["text"]: row["label"] for row in read_jsonl(workspace.split_file("source", "train"))}
    assert {label for text, label in labels.items() if "great" in text} == {"good"}
    assert {label for text, label in labels.items() if "awful" in text} == {"bad"}
