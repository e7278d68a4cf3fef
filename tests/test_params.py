"""params.yaml validation: one line naming the field and the value, before any stage runs."""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import numpy as np
import pytest
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from tasks.common.errors import ParamsError
from tasks.params import LabelRule, Params, domain_labels, label_key, load_params, parse_params
from tests.conftest import REPO

DATA = {
    "source": {"path": "data/source.tsv"},
    "target": {"path": "data/target.tsv"},
}


def error_of(raw: dict) -> str:
    with pytest.raises(ParamsError) as caught:
        parse_params(raw, "params.yaml")
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_data_section_alone_is_enough():
    params = parse_params({"data": DATA})
    assert params.task.labels == ["negative", "positive"]
    assert params.data.split.test_fraction == 0.2


def test_unknown_key_names_the_key():
    message = error_of({"data": DATA, "finetune": {"learnig_rate": 1e-4}})
    assert "finetune.learnig_rate" in message and "unknown key" in message


def test_wrong_type_names_field_and_value():
    message = error_of({"data": DATA, "finetune": {"learning_rate": "fast"}})
    assert "finetune.learning_rate" in message and "'fast'" in message


@pytest.mark.parametrize(
    "yaml_text, named, hint",
    [
        ("task: {labels: [0, 1]}", "task.labels", "item 0 is the number 0: quote it ('0')"),
        ("task: {labels: [bug, yes]}", "task.labels", "item 1 is the YAML boolean True"),
        ("data: {source: {path: s.tsv, labels: [off, on]}}", "data.source.labels", "item 0 is the YAML boolean False"),
    ],
)
def test_unquoted_numbers_and_booleans_as_labels_say_to_quote_them(yaml_text: str, named: str, hint: str):
    raw = yaml.safe_load(yaml_text)
    raw["data"] = {**DATA, **raw.get("data", {})}
    message = error_of(raw)
    assert named in message and hint in message


def test_quoted_numbers_are_labels():
    assert parse_params(yaml.safe_load("task: {labels: ['0', '1']}") | {"data": DATA}).task.labels == ["0", "1"]


def test_out_of_range_names_field_and_value():
    data = {**DATA, "split": {"test_fraction": 0.7}}
    message = error_of({"data": data})
    assert "data.split.test_fraction" in message and "0.7" in message


def test_bad_choice_names_field_and_value():
    data = {**DATA, "source": {"path": "x.tsv", "format": "xlsx"}}
    message = error_of({"data": data})
    assert "data.source.format" in message and "'xlsx'" in message


def test_mlm_text_needs_an_mlm_phase():
    message = error_of({"data": DATA, "pretrain": {"mode": "supervised", "mlm_text": "source+target"}})
    assert "pretrain" in message and "mlm_text 'source+target': only an MLM phase reads it" in message
    assert parse_params({"data": DATA, "pretrain": {"mode": "mlm", "mlm_text": "source+target"}}).pretrain.mlm_text == "source+target"


def test_url_source_must_be_pinned():
    data = {**DATA, "target": {"path": "https://example.org/target.csv"}}
    message = error_of({"data": data})
    assert "data.target" in message and "sha256" in message


def test_missing_data_section():
    assert "data" in error_of({"seed": 1})


def test_load_params_reports_missing_file(tmp_path: Path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def run_params_cli(params_file: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIPELINE_PARAMS": str(params_file), "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "tasks", "check"]
    return subprocess.run(command, cwd=params_file.parent, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "content, expected",
    [
        (yaml.safe_dump({"data": DATA, "seed": -1}), "seed"),
        (yaml.safe_dump({"data": DATA, "bogus": 1}), "bogus"),
        ("data: [unclosed\n", "not valid YAML"),
    ],
)
def test_cli_bad_params_exit_1_with_one_line(tmp_path: Path, content: str, expected: str):
    params_file = tmp_path / "params.yaml"
    params_file.write_text(content, encoding="utf-8")
    result = run_params_cli(params_file)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and str(params_file) in lines[0]


def test_cli_accepts_the_repository_params():
    result = run_params_cli(REPO / "params.yaml")
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


# ---------------------------------------------------------------- task.kind translation

PAIRS = {
    "source": {"path": "mt", "format": "text", "languages": {"src": "en", "tgt": "de"}},
    "target": {"path": "mt", "format": "text", "languages": {"src": "en", "tgt": "fr"}},
}
TRANSLATION = {"task": {"kind": "translation"}, "data": PAIRS, "evaluate": {"baselines": ["target_only", "zero_shot"]}}


def test_demo_translation_params_are_valid():
    params = load_params(REPO / "demos" / "translation.yaml")
    assert params.task.kind == "translation" and params.data.target.languages.tgt == "fr"
    assert params.data.target.splits.test == "test_2016_flickr"


def test_translation_needs_languages_on_both_pairs():
    data = {**PAIRS, "target": {"path": "mt", "format": "text"}}
    message = error_of({**TRANSLATION, "data": data})
    assert "data.target.languages is required" in message and "(top level)" not in message


@pytest.mark.parametrize(
    "section, value, named",
    [
        ({"finetune": {"strategy": "llrd"}}, "llrd", "finetune.strategy"),
        ({"pretrain": {"mode": "mlm"}}, "mlm", "pretrain.mode"),
        ({"evaluate": {"baselines": ["vader"]}}, "vader", "evaluate.baselines"),
        ({"finetune": {"self_training": {"rounds": 1}}}, "classification", "finetune.self_training"),
        ({"finetune": {"wise_alpha": 0.8}}, "classification", "finetune.wise_alpha"),
    ],
)
def test_translation_refuses_classification_only_choices(section, value, named):
    message = error_of({**TRANSLATION, **section})
    assert named in message and value in message


def test_self_training_confidence_is_a_probability():
    assert "finetune.self_training.min_confidence" in error_of({"data": DATA, "finetune": {"self_training": {"min_confidence": 1.5}}})
    assert "finetune.self_training.rounds" in error_of({"data": DATA, "finetune": {"self_training": {"rounds": -1}}})


def test_wise_alpha_is_a_mixing_weight():
    assert "finetune.wise_alpha" in error_of({"data": DATA, "finetune": {"wise_alpha": 1.5}})
    assert "finetune.wise_alpha" in error_of({"data": DATA, "finetune": {"wise_alpha": -0.1}})


def test_freeze_encoder_is_refused_for_classification():
    message = error_of({"data": DATA, "finetune": {"strategy": "freeze_encoder"}})
    assert "finetune.strategy" in message and "translation" in message


def test_each_domain_has_its_classes():
    params = parse_params({"data": {**DATA, "source": {**DATA["source"], "labels": ["neg", "pos"]}},
                           "task": {"labels": ["bug", "feature", "question"]}})
    assert domain_labels(params, "source") == ["neg", "pos"] and domain_labels(params, "target") == ["bug", "feature", "question"]
    assert domain_labels(parse_params({"data": DATA}), "source") == ["negative", "positive"]  # unset: task.labels
    message = error_of({"data": {**DATA, "source": {**DATA["source"], "labels": ["neg", "neg"]}}})
    assert "data.source.labels: labels must be unique" in message
    assert "data.target.labels" in error_of({"data": {**DATA, "target": {**DATA["target"], "labels": ["a", "b"]}}})


def test_vader_labels_must_be_task_labels():
    ok = parse_params({"data": DATA, "task": {"labels": ["bad", "meh", "good"]},
                       "evaluate": {"vader": {"negative": "bad", "positive": "good", "neutral": "meh"}}})
    assert ok.evaluate.vader.neutral == "meh"
    message = error_of({"data": DATA, "evaluate": {"vader": {"negative": "negative", "positive": "pos"}}})
    assert "evaluate.vader.positive: 'pos' is not one of task.labels" in message


def test_a_language_pair_needs_two_languages():
    data = {**PAIRS, "source": {**PAIRS["source"], "languages": {"src": "en", "tgt": "en"}}}
    message = error_of({**TRANSLATION, "data": data})
    assert "data.source.languages" in message and "same language" in message


@pytest.mark.parametrize("splits, named", [
    ({"train": "train", "val": "test", "test": "test"}, "val and test are both 'test'"),
    ({"train": "train", "val": "val", "test": "train"}, "train and test are both 'train'"),
    ({"train": "train", "val": "train", "test": "test"}, "train and val are both 'train'"),
])
def test_predefined_splits_name_three_different_splits(splits: dict, named: str):
    # val = test would early-stop on the frozen test split every score is measured on
    data = {**PAIRS, "target": {**PAIRS["target"], "splits": splits}}
    message = error_of({**TRANSLATION, "data": data})
    assert f"data.target.splits: {named}" in message and "three different splits" in message


# ---------------------------------------------------------------- numbers: finite and bounded


def numeric_fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, list]]:
    """(dotted path, constraints) of every int and float in the schema, nested models, unions,
    Optional and list items included; a list item's path ends in `[]`."""
    for name, info in model.model_fields.items():
        yield from numeric_leaves(info.annotation, list(info.metadata), prefix + name)


def numeric_leaves(annotation: Any, constraints: list, path: str) -> Iterator[tuple[str, list]]:
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *extra = get_args(annotation)
        # Annotated[int, Field(le=...)] keeps its bounds in the FieldInfo's metadata
        unpacked = [part for item in extra for part in (item.metadata if isinstance(item, FieldInfo) else [item])]
        yield from numeric_leaves(inner, constraints + unpacked, path)
    elif origin in (Union, types.UnionType):  # Optional[...] and the task union
        for arm in get_args(annotation):
            yield from numeric_leaves(arm, constraints, path)
    elif origin is list:
        yield from numeric_leaves(get_args(annotation)[0], [], path + "[]")
    elif origin is dict:
        yield from numeric_leaves(get_args(annotation)[1], [], path + "{}")
    elif origin is Literal or annotation in (str, bool, type(None)):
        return
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield from numeric_fields(annotation, path + ".")
    elif annotation in (int, float):
        yield path, constraints
    else:  # a new kind of annotation: teach the walk about it rather than skip it
        raise AssertionError(f"{path}: unexpected annotation {annotation!r}")


NUMERIC_FIELDS = dict(numeric_fields(Params))


def test_the_walk_finds_the_numeric_fields():
    assert len(NUMERIC_FIELDS) > 40
    assert {"seed", "pretrain.epochs", "evaluate.curve_budgets[]", "data.source.label_rule.threshold"} <= set(NUMERIC_FIELDS)


def test_every_numeric_field_has_an_upper_bound():
    unbounded = [path for path, constraints in NUMERIC_FIELDS.items()
                 if not any(isinstance(item, (annotated_types.Le, annotated_types.Lt)) for item in constraints)]
    assert not unbounded, f"give these fields an upper bound (le=/lt=): {unbounded}"


def with_value(path: str, value: Any) -> dict:
    """{"data": DATA} with `value` at the dotted path (a one-item list for a `[]` path)."""
    raw = copy.deepcopy({"data": DATA})
    *parents, leaf = path.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    if leaf.endswith("[]"):
        node[leaf.removesuffix("[]")] = [value]
    else:
        node[leaf] = value
    return raw


@pytest.mark.parametrize("path", sorted(NUMERIC_FIELDS))
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan, 10**30, 1e30], ids=["inf", "-inf", "nan", "10**30", "1e30"])
def test_numeric_fields_refuse_inf_nan_and_huge_values(path: str, value: float):
    message = error_of(with_value(path, value))
    assert path.removesuffix("[]") in message, message


DATA_YAML = yaml.safe_dump({"data": DATA})


def write_params(tmp_path: Path, content: str | bytes) -> Path:
    params_file = tmp_path / "params.yaml"
    if isinstance(content, str):
        content = content.encode("utf-8")
    params_file.write_bytes(content)
    return params_file


def load_error(params_file: Path) -> str:
    with pytest.raises(ParamsError) as caught:
        load_params(params_file)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(params_file)), message
    return message


@pytest.mark.parametrize(
    "line, field, value",
    [
        ("pretrain: {epochs: .inf}", "pretrain.epochs", "inf"),  # validated, then OverflowError in training
        ("finetune: {weight_decay: .inf}", "finetune.weight_decay", "inf"),
        ("export: {parity_tolerance: .inf}", "export.parity_tolerance", "inf"),  # any difference would pass
        ("seed: 12345678901234567890123", "seed", "12345678901234567890123"),  # numpy/torch refuse it
        ("evaluate: {curve_budgets: [.nan]}", "evaluate.curve_budgets.0", "nan"),
    ],
)
def test_issue_files_with_unbounded_numbers(tmp_path: Path, line: str, field: str, value: str):
    message = load_error(write_params(tmp_path, DATA_YAML + line + "\n"))
    assert f": {field}: " in message and f"(got {value})" in message and "more problem" not in message


# ---------------------------------------------------------------- reading the file


def test_a_latin1_byte_names_the_byte(tmp_path: Path):
    params_file = write_params(tmp_path, b"# caf\xe9 au lait\n" + DATA_YAML.encode())
    assert load_error(params_file) == f"{params_file}: not UTF-8 at byte 5 (0xe9, line 1); save it as UTF-8"


def test_a_utf8_byte_order_mark_is_fine(tmp_path: Path):
    assert load_params(write_params(tmp_path, "\ufeff" + DATA_YAML)).seed == 42


def test_a_directory_is_one_line(tmp_path: Path):
    assert "cannot read it" in load_error(tmp_path)


@pytest.mark.parametrize(
    "content, expected",
    [
        ("seed: 1\nseed: 1\n" + DATA_YAML, "line 2 not valid YAML (duplicate key 'seed' on lines 1 and 2)"),
        (DATA_YAML + "finetune:\n  learning_rate: 1.0e-4\n  learning_rate: 2.0e-4\n", "duplicate key 'learning_rate' on lines"),
        (DATA_YAML + "x: {1: a, 1.0: b}\n", "keys '1' and '1.0' on line"),  # equal in Python: one would be lost
        ("seed: !!python/object/apply:os.system [ls]\n", "line 1 not valid YAML (could not determine a constructor"),
        ("seed: 2024-13-45\n", "line 1 not valid YAML (cannot read '2024-13-45' as !!timestamp: month must be in 1..12)"),
        ("seed: !!bool x\n", "line 1 not valid YAML (cannot read 'x' as !!bool)"),  # KeyError inside PyYAML
        ("seed: !!timestamp x\n", "line 1 not valid YAML (cannot read 'x' as !!timestamp)"),  # AttributeError inside PyYAML
        ("seed: \x07\n", "line 1 not valid YAML (character '\\x07' is not allowed)"),
        ("[" * 3000 + "]" * 3000, "nested too deeply"),
    ],
)
def test_yaml_problems_are_one_line(tmp_path: Path, content: str, expected: str):
    assert expected in load_error(write_params(tmp_path, content))


def test_a_written_key_may_override_a_merged_one(tmp_path: Path):
    content = DATA_YAML + (
        "evaluate:\n  target_only: &base {learning_rate: 1.0e-4, epochs: 3.0}\n"
        "finetune: {<<: *base, epochs: 4.0}\n"
    )
    params = load_params(write_params(tmp_path, content))
    assert (params.finetune.learning_rate, params.finetune.epochs) == (1e-4, 4.0)


def alias_bomb() -> str:
    """Nine levels of nine references each: 9**9 items if anything expanded them."""
    lines = ["l0: &l0 [" + ", ".join(["1"] * 9) + "]"]
    lines += [f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]" for level in range(1, 9)]
    return "\n".join(lines) + "\nseed: *l8\n"


def merge_chain() -> str:
    """300 mappings merging one of 500 keys: 150,000 pairs to copy (PyYAML 6.0.4 no longer
    copies a key twice into one mapping, so the 9**n chain of merges is only quadratic)."""
    base = "base: &base {" + ", ".join(f"k{index}: 1" for index in range(500)) + "}\n"
    return base + "".join(f"m{index}: {{<<: *base}}\n" for index in range(300))


@pytest.mark.parametrize(
    "content, expected",
    [
        (alias_bomb(), "seed: Input should be a valid integer"),  # shared lists: the message must not print them whole
        (merge_chain(), "not valid YAML (more than 100,000 keys in all: merge keys `<<` expanding?)"),
    ],
)
def test_alias_bombs_are_refused_quickly(tmp_path: Path, content: str, expected: str):
    started = time.monotonic()
    message = load_error(write_params(tmp_path, content))
    assert expected in message and len(message) < 600
    assert time.monotonic() - started < 10


def test_messages_stay_one_line_with_newlines_in_names_and_values():
    assert "'bad\\nkey'" in error_of({"data": DATA, "bad\nkey": 1})
    assert "labels must be unique" in error_of({"data": DATA, "task": {"labels": ["a\nb", "a\nb"]}})
    assert "sha256" in error_of({"data": {**DATA, "target": {"path": "https://x.org/a\nb"}}})


# ---------------------------------------------------------------- label_key


@pytest.mark.parametrize(
    "raw, key",
    [
        (True, "true"), (False, "false"), (np.bool_(True), "true"),  # YAML/JSON spelling, not Python's
        (1, "1"), (1.0, "1"), (np.float64(1.0), "1"), (np.float32(2.0), "2"), (np.int64(3), "3"), (-0.0, "0"),
        (2.5, "2.5"), (np.float64(0.1), "0.1"), (math.nan, "nan"),
        (" positive ", "positive"), ("True", "True"), ("1.0", "1.0"), (None, "None"),
    ],
)
def test_label_key(raw: Any, key: str):
    assert label_key(raw) == key


def test_boolean_mapping_keys_are_yaml_spelled(tmp_path: Path):
    assert LabelRule(mapping={True: "positive"}).mapping == {"true": "positive"}
    rule_line = "\n    label_rule: {mapping: {true: positive, false: negative, 2.0: positive}}"  # the issue's file, and a float
    content = DATA_YAML.replace("path: data/source.tsv", "path: data/source.tsv" + rule_line)
    rule = load_params(write_params(tmp_path, content)).data.source.label_rule
    assert rule.mapping == {"true": "positive", "false": "negative", "2": "positive"}


@pytest.mark.parametrize("mapping", [{1: "positive", "1": "negative"}, {True: "positive", "true": "negative"}, {"a": "x", " a ": "y"}])
def test_mapping_keys_of_one_label_key_are_refused(mapping: dict):
    message = error_of({"data": {**DATA, "source": {**DATA["source"], "label_rule": {"mapping": mapping}}}})
    assert "data.source.label_rule.mapping: keys" in message and "are the same raw label" in message
