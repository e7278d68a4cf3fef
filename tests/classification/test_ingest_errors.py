"""User mistakes end `python -m tasks.ingest` with one line naming the file (and column) and exit
code 1: no traceback, nothing half-written. An input that cannot be read leaves an existing
data/prepared intact; data that was read but cannot be used leaves the quarantine file and the
report of this run (never a stale one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.common.errors import DataError
from tasks.common.io import read_jsonl
from tests.classification.conftest import balanced_rows, spec, write_rows


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs"
    write_rows(folder / "good.tsv", balanced_rows("good"), "tsv")
    write_rows(folder / "target.tsv", balanced_rows("target"), "tsv")
    write_rows(folder / "wrong_columns.csv", [{"id": 1, "review": "nice", "score": 1.0}], "csv")
    write_rows(folder / "one_class.tsv", balanced_rows("one")[::2], "tsv")
    write_rows(folder / "all_neutral.tsv", [{"id": i, "score": 0.1, "text": f"meh {i}"} for i in range(9)], "tsv")
    (folder / "broken.parquet").write_text("this is not parquet\n")
    return folder


def params(source: str, target: str = "inputs/target.tsv") -> dict:
    return {"data": {"source": spec(source), "target": spec(target)}}


CASES = {
    "missing file": (params("inputs/nope.tsv"), ["data.source.path", "inputs/nope.tsv", "no such file"]),
    "missing column": (
        params("inputs/wrong_columns.csv"),
        ["data.source.columns.text", "'text'", "inputs/wrong_columns.csv", "columns: id, review, score"],
    ),
    "zero usable rows": (
        params("inputs/good.tsv", "inputs/all_neutral.tsv"),
        ["data.target", "inputs/all_neutral.tsv", "no usable rows", "neutral 9"],
    ),
    "single class": (
        params("inputs/one_class.tsv"),
        ["data.source", "inputs/one_class.tsv", "only one class", "'positive'"],
    ),
    "bad sha256": (
        {"data": {"source": spec("inputs/good.tsv", sha256="a" * 64), "target": spec("inputs/target.tsv")}},
        ["data.source.sha256", "inputs/good.tsv", "expected " + "a" * 64],
    ),
    "bad format": (
        {"data": {"source": spec("inputs/good.tsv", format="jsonl"), "target": spec("inputs/target.tsv")}},
        ["data.source", "inputs/good.tsv", "no usable rows", "bad_json 21"],
    ),
    "broken parquet": (
        params("inputs/broken.parquet"),
        ["data.source.path", "inputs/broken.parquet", "not a readable parquet"],
    ),
}


def assert_one_line_error(result, expected: list[str]) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ingest: ")
    for part in expected:
        assert part in lines[0]


# Found before any row is read: nothing is written and the last good outputs stay.
UNREADABLE = ["missing file", "missing column", "bad sha256", "broken parquet"]
# Found after reading: the quarantine file and the report are written (with the error), the old
# splits are gone, so nothing stale is left to mislead and no later stage runs on old data.
UNUSABLE = ["zero usable rows", "single class", "bad format"]


def old_outputs(tmp_path: Path) -> Path:
    prepared = tmp_path / "data" / "prepared"
    (prepared / "source").mkdir(parents=True)
    (prepared / "source" / "train.jsonl").write_text('{"id": "old"}\n')
    (prepared / "quarantine.jsonl").write_text('{"id": "old"}\n')
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "data.json").write_text("{}\n")
    return prepared


@pytest.mark.parametrize("case", UNREADABLE)
def test_unreadable_input_leaves_existing_outputs_intact(case, inputs, tmp_path, ingest_cli):
    raw, expected = CASES[case]
    prepared = old_outputs(tmp_path)
    assert_one_line_error(ingest_cli(raw), expected)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["prepared"]  # no temp dirs left over
    assert sorted(p.relative_to(prepared).as_posix() for p in prepared.rglob("*")) == [
        "quarantine.jsonl", "source", "source/train.jsonl"
    ]
    assert (prepared / "source" / "train.jsonl").read_text() == '{"id": "old"}\n'
    assert (tmp_path / "reports" / "data.json").read_text() == "{}\n"


@pytest.mark.parametrize("case", UNUSABLE)
def test_unusable_data_still_writes_quarantine_and_report(case, inputs, tmp_path, ingest_cli):
    raw, expected = CASES[case]
    prepared = old_outputs(tmp_path)
    result = ingest_cli(raw)
    assert_one_line_error(result, expected)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["prepared"]
    assert [p.name for p in prepared.iterdir()] == ["quarantine.jsonl"]  # no stale splits
    report = json.loads((tmp_path / "reports" / "data.json").read_text())
    assert report["error"] in result.stderr
    quarantined = read_jsonl(prepared / "quarantine.jsonl")
    assert {"id": "old"} not in quarantined
    assert len(quarantined) == sum(report[name]["quarantined"]["total"] for name in ("source", "target") if name in report)


def test_bad_input_creates_no_outputs(inputs, tmp_path, ingest_cli):
    assert_one_line_error(ingest_cli(CASES["missing column"][0]), CASES["missing column"][1])
    assert not (tmp_path / "data").exists() and not (tmp_path / "reports").exists()


def test_unreadable_file_is_a_data_error(inputs, tmp_path, monkeypatch, ingest):
    # Tests run as root here, where file modes do not stop reads: make open() fail instead.
    path = inputs / "good.tsv"
    real_open = Path.open

    def failing_open(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", failing_open)
    with pytest.raises(DataError, match=r"data\.source\.path: .*good\.tsv: cannot read: Permission denied"):
        ingest(spec(path), target=spec(inputs / "target.tsv"))


def test_success_writes_outputs_and_a_summary(inputs, tmp_path, ingest_cli):
    result = ingest_cli(params("inputs/good.tsv"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ingest: source 20 kept of 20")
    assert (tmp_path / "data" / "prepared" / "target" / "test.jsonl").is_file()
    assert (tmp_path / "reports" / "data.json").is_file()
