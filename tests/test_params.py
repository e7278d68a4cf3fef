"""params.yaml validation: one line naming the field and the value, before any stage runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.common.errors import ParamsError
from tasks.params import load_params, parse_params
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


def test_out_of_range_names_field_and_value():
    data = {**DATA, "split": {"test_fraction": 0.7}}
    message = error_of({"data": data})
    assert "data.split.test_fraction" in message and "0.7" in message


def test_bad_choice_names_field_and_value():
    data = {**DATA, "source": {"path": "x.tsv", "format": "xlsx"}}
    message = error_of({"data": data})
    assert "data.source.format" in message and "'xlsx'" in message


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
    ],
)
def test_translation_refuses_classification_only_choices(section, value, named):
    message = error_of({**TRANSLATION, **section})
    assert named in message and value in message


def test_freeze_encoder_is_refused_for_classification():
    message = error_of({"data": DATA, "finetune": {"strategy": "freeze_encoder"}})
    assert "finetune.strategy" in message and "translation" in message


def test_a_language_pair_needs_two_languages():
    data = {**PAIRS, "source": {**PAIRS["source"], "languages": {"src": "en", "tgt": "en"}}}
    message = error_of({**TRANSLATION, "data": data})
    assert "data.source.languages" in message and "same language" in message
