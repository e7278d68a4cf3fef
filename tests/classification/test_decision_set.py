"""The frozen decision set: the target test split is drawn once, then read back by every later
ingest; a refresh with new rows puts them into train/val only, test rows that reappear leave
training and are counted, and changing it takes an explicit command that says what it invalidates."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tasks.classification.ingest import run
from tasks.common import decision_set
from tasks.common.errors import DataError
from tasks.common.io import read_jsonl
from tasks.common.paths import SPLITS, Paths
from tests.classification.conftest import REPO, make_params, spec, write_rows


def rows(prefix: str, positive: int, negative: int) -> list[dict]:
    return ([{"id": f"{prefix}p{i}", "score": 1.5, "text": f"{prefix} good item {i}"} for i in range(positive)]
            + [{"id": f"{prefix}n{i}", "score": -1.5, "text": f"{prefix} bad item {i}"} for i in range(negative)])


@pytest.fixture
def inputs(tmp_path):
    source = spec(write_rows(tmp_path / "in" / "source.tsv", rows("src", 30, 30), "tsv"))
    target_file = tmp_path / "in" / "target.tsv"
    write_rows(target_file, rows("old", 50, 50), "tsv")
    return source, spec(target_file), target_file


def splits(workspace: Paths) -> dict[str, list[dict]]:
    return {split: read_jsonl(workspace.split_file("target", split)) for split in SPLITS}


def texts(rows_: list[dict]) -> set[str]:
    return {row["text"] for row in rows_}


def test_unchanged_data_gives_the_first_runs_splits_byte_for_byte(inputs, workspace):
    source, target, _ = inputs
    first = run(make_params(source, target), workspace)
    before = {split: workspace.split_file("target", split).read_bytes() for split in SPLITS}
    assert first["target"]["decision_set"]["frozen"] == "drawn by this run"
    second = run(make_params(source, target), workspace)
    assert {split: workspace.split_file("target", split).read_bytes() for split in SPLITS} == before
    entry = second["target"]["decision_set"]
    assert entry["frozen"] == "read back (frozen)" and entry["in_data"] == entry["rows"] == 20
    assert entry["sha256"] == first["target"]["decision_set"]["sha256"]


def test_a_refresh_keeps_test_and_sends_new_rows_to_train_and_val(inputs, workspace):
    source, target, target_file = inputs
    run(make_params(source, target), workspace)
    test_before = splits(workspace)["test"]
    # The refresh: 40 new rows, 10 old rows gone (one of them a test row), a test row repeated
    # with other casing (the same text to leakage removal) and another label.
    old = rows("old", 50, 50)
    gone = {row["id"] for row in old[:10]}
    refreshed = [row for row in old if row["id"] not in gone] + rows("new", 20, 20)
    refreshed.append({"id": "again", "score": -1.5, "text": test_before[-1]["text"].upper()})
    write_rows(target_file, refreshed, "tsv")
    report = run(make_params(source, target), workspace)["target"]
    after = splits(workspace)
    assert after["test"] == test_before  # the decision set did not move
    new_texts = texts(rows("new", 20, 20))
    assert new_texts <= texts(after["train"]) | texts(after["val"])
    trained = {row["text"].lower() for split in ("train", "val") for row in after[split]}
    assert not trained & {row["text"].lower() for row in test_before}  # no test text trains
    absent = sum(row["id"] in gone for row in test_before)
    entry = report["decision_set"]
    assert entry["absent_from_data"] == absent and entry["in_data"] == 20 - absent
    # the upper-cased copy is a duplicate of its first copy or, with the label flipped, a
    # conflicting one: either way it is accounted for, in no split
    account = report["files"][str(target_file)]
    assert account["rows_read"] == account["kept"] + sum(account["quarantined"].values()) + sum(account["dropped"].values())
    assert account["dropped"]["in_decision_set"] == 20 - absent


def test_another_label_set_needs_an_explicit_reset(inputs, workspace, tmp_path):
    source, target, _ = inputs
    run(make_params(source, target), workspace)
    other = make_params(source, target, task={"labels": ["bad", "good"]})
    with pytest.raises(DataError, match=r"decision set has label \['negative', 'positive'\] not in this run's "
                                        r"task.labels \['bad', 'good'\].*python -m tasks decision-set --reset"):
        run(other, workspace)
    line = decision_set.reset(workspace)
    assert "20 rows" in line and "no longer comparable" in line
    assert run(other, workspace)["target"]["decision_set"]["frozen"] == "drawn by this run"


def test_an_edited_set_is_refused(inputs, workspace):
    source, target, _ = inputs
    run(make_params(source, target), workspace)
    rows_file = workspace.decision_set / decision_set.ROWS_FILE
    rows_file.write_text(rows_file.read_text().replace("good", "great", 1))
    with pytest.raises(DataError, match="changed by hand") as refused:
        run(make_params(source, target), workspace)
    # the way back it names is one DVC accepts over a modified output (plain `dvc checkout` asks for --force)
    assert "restore it (dvc checkout --force data/decision_set)" in str(refused.value)
    assert "(an edited or unreadable set removed)" in decision_set.reset(workspace)  # the way out works on it
    assert run(make_params(source, target), workspace)["target"]["decision_set"]["frozen"] == "drawn by this run"


def test_freeze_test_off_redraws_each_run(inputs, workspace):
    source, target, target_file = inputs
    run(make_params(source, target, data={"split": {"freeze_test": False}}), workspace)
    write_rows(target_file, rows("old", 50, 50) + rows("new", 50, 50), "tsv")
    report = run(make_params(source, target, data={"split": {"freeze_test": False}}), workspace)
    assert report["target"]["splits"]["test"]["rows"] == 40  # 0.2 of 200: drawn again


def test_the_command_shows_and_resets(inputs, tmp_path):
    source, target, _ = inputs
    workspace = Paths(tmp_path)
    run(make_params(source, target), workspace)
    command = [sys.executable, "-m", "tasks", "decision-set"]
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    shown = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "20 rows" in shown.stdout and "labels ['negative', 'positive']" in shown.stdout
    reset = subprocess.run(command + ["--reset"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert reset.returncode == 0 and "no longer comparable" in reset.stdout
    assert not workspace.decision_set.exists()
    bad = subprocess.run(command + ["--now"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and bad.stderr.startswith("error:") and len(bad.stderr.splitlines()) == 1


def test_other_split_params_keep_the_set_and_say_so(inputs, workspace, capsys):
    source, target, _ = inputs
    run(make_params(source, target), workspace)
    before = splits(workspace)["test"]
    run(make_params(source, target, data={"split": {"test_fraction": 0.3}}, seed=7), workspace)
    assert splits(workspace)["test"] == before
    note = capsys.readouterr().err
    assert "drawn with other split params (seed 42 -> 7, test_fraction 0.2 -> 0.3)" in note and "--reset" in note
