"""Hostile-but-realistic inputs (issue 10): each file as a user would have it, through
`python -m tasks ingest`. Every case ends in one line and exit code 0 or 1, no row is lost
uncounted (per file: rows_read == kept + quarantined + dropped) and nothing is half-written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.common.io import read_jsonl
from tests.classification.conftest import balanced_rows, spec, write_rows

LABELS = {"text": "text", "label": "label"}


def labelled_csv(path: Path, rows: int = 200, replace: dict[int, str] | None = None) -> Path:
    """`id,text,label` with `rows` plain rows (r1..rN); `replace` swaps whole lines by row number."""
    lines = ["id,text,label"]
    for i in range(1, rows + 1):
        lines.append(f"r{i},plain review number {i} here,{'positive' if i % 2 else 'negative'}")
    for i, line in (replace or {}).items():
        lines[i] = line
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def mapped(path: Path | str, **extra) -> dict:
    """A section whose label column already holds the class names."""
    return {"path": str(path), "columns": dict(LABELS), **extra}


@pytest.fixture
def source(tmp_path: Path) -> dict:
    return spec(write_rows(tmp_path / "inputs" / "source.tsv", balanced_rows("source"), "tsv"))


def run_ok(ingest_cli, source: dict, target: dict, tmp_path: Path) -> dict:
    result = ingest_cli({"data": {"source": source, "target": target}})
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    report = json.loads((tmp_path / "reports" / "data.json").read_text())
    assert_conserved(report)
    return report


def assert_conserved(report: dict) -> None:
    for name in ("source", "target"):
        for file, account in report[name]["files"].items():
            lost = account["rows_read"] - account["kept"] - sum(account["quarantined"].values()) - sum(account["dropped"].values())
            assert lost == 0, (file, account)


def one_line_error(result) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ingest: "), result.stderr
    return lines[0]


# ---------------------------------------------------------------- 1. a stray quote


@pytest.mark.parametrize(
    "closing",
    [
        None,  # the quote never closes: the parser runs to the end of the file
        "r150,she wrote \"ok\" twice,negative",  # closed by a later stray quote, which breaks the CSV rules
        "r150,he said hi\",negative",  # closed cleanly: only the swallowed rows give it away
    ],
)
def test_a_stray_quote_costs_one_row_not_the_rest_of_the_file(closing, tmp_path, ingest_cli, source):
    replace = {10: 'r10,"unterminated quote starts here,negative'}
    if closing:
        replace[150] = closing
    target = labelled_csv(tmp_path / "inputs" / "reviews.csv", replace=replace)
    report = run_ok(ingest_cli, source, mapped(target), tmp_path)["target"]
    assert report["rows_read"] == 200  # every record of the file, the bad one included
    assert report["quarantined"]["by_reason"]["unbalanced_quote"] == 1
    assert report["kept"] == 199
    (row,) = [r for r in read_jsonl(tmp_path / "data" / "prepared" / "quarantine.jsonl") if r["kind"] == "unbalanced_quote"]
    assert row["row"] == 11 and "opens on line 11" in row["reason"]  # line 11 = row r10 (the header is line 1)
    kept = [r for split in ("train", "val", "test") for r in read_jsonl(tmp_path / "data" / "prepared" / "target" / f"{split}.jsonl")]
    assert max(len(r["text"]) for r in kept) < 60  # no row swallowed the next ones


def test_a_long_multiline_record_is_flagged(tmp_path, ingest_cli, source):
    """A legal quoted field over many lines is kept, but the report points at it."""
    paragraphs = "\n".join(f"paragraph {i} of a very long review" for i in range(15))
    target = labelled_csv(tmp_path / "inputs" / "reviews.csv", replace={5: f'r5,"{paragraphs}",positive'})
    report = run_ok(ingest_cli, source, mapped(target), tmp_path)["target"]
    assert report["rows_read"] == 200 and report["quarantined"]["total"] == 0
    assert report["long_records"]["total"] == 1
    assert report["long_records"]["first"][0] == {"file": str(target), "row": 6, "lines": 15, "chars": report["long_records"]["first"][0]["chars"]}


# ---------------------------------------------------------------- 2. line endings and bytes


def test_a_carriage_return_in_the_header_is_one_line(tmp_path, ingest_cli, source):
    target = tmp_path / "inputs" / "cr.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"id,te\rxt,label\n1,good text here,positive\n")
    line = one_line_error(ingest_cli({"data": {"source": source, "target": mapped(target)}}))
    assert "data.target.path" in line and str(target) in line and "line 1 (the header)" in line
    assert "carriage return" in line


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_classic_mac_line_endings_are_read(suffix, sep, tmp_path, ingest_cli, source):
    rows = [sep.join(["id", "text", "label"])] + [
        sep.join([f"r{i}", f"old mac review {i}", "positive" if i % 2 else "negative"]) for i in range(40)
    ]
    target = tmp_path / "inputs" / f"mac{suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes("\r".join(rows).encode() + b"\r")
    report = run_ok(ingest_cli, source, mapped(target), tmp_path)["target"]
    assert report["rows_read"] == 40 and report["kept"] == 40


def test_a_carriage_return_inside_a_row_quarantines_that_row(tmp_path, ingest_cli, source):
    target = labelled_csv(tmp_path / "inputs" / "reviews.csv", rows=40, replace={7: "r7,broken\rtext,positive"})
    report = run_ok(ingest_cli, source, mapped(target), tmp_path)["target"]
    assert report["rows_read"] == 40 and report["quarantined"]["by_reason"]["malformed_row"] == 1


# ---------------------------------------------------------------- 3. silent surprises


def test_boolean_labels_map_as_written_in_yaml(tmp_path, ingest_cli, source):
    rows = [{"id": i, "text": f"review {i}", "label": i % 2 == 0} for i in range(40)]
    target = write_rows(tmp_path / "inputs" / "bools.jsonl", rows, "jsonl")
    section = mapped(target, label_rule={"kind": "map", "mapping": {True: "positive", False: "negative"}})
    report = run_ok(ingest_cli, source, section, tmp_path)["target"]
    assert report["kept"] == 40 and report["quarantined"]["total"] == 0


def test_values_that_are_not_text_are_quarantined(tmp_path, ingest_cli, source):
    rows = [{"id": i, "text": f"review {i}", "label": "positive" if i % 2 else "negative"} for i in range(40)]
    rows[3]["text"], rows[4]["text"], rows[5]["text"] = ["a", "list"], 12345, {"a": 1}
    target = write_rows(tmp_path / "inputs" / "mixed.jsonl", rows, "jsonl")
    report = run_ok(ingest_cli, source, mapped(target), tmp_path)["target"]
    assert report["quarantined"]["by_reason"]["not_text"] == 3 and report["kept"] == 37
    texts = {r["text"] for split in ("train", "val", "test") for r in read_jsonl(tmp_path / "data" / "prepared" / "target" / f"{split}.jsonl")}
    assert "['a', 'list']" not in texts and "12345" not in texts


def test_dedup_is_case_insensitive_like_leakage_and_nul_bytes_go(tmp_path, ingest_cli, source):
    rows = [{"id": i, "text": f"review {i}", "label": "positive" if i % 2 else "negative"} for i in range(40)]
    rows.append({"id": 40, "text": "REVIEW 1", "label": "positive"})  # a copy of row 1 but for case
    rows.append({"id": 41, "text": "nul\x00 byte\x07 here", "label": "positive"})
    target = write_rows(tmp_path / "inputs" / "dups.jsonl", rows, "jsonl")
    report = run_ok(ingest_cli, source, mapped(target), tmp_path)["target"]
    assert report["duplicates"] == 1 and report["files"][str(target)]["dropped"] == {"duplicates": 1}
    texts = {r["text"] for split in ("train", "val", "test") for r in read_jsonl(tmp_path / "data" / "prepared" / "target" / f"{split}.jsonl")}
    assert "nul byte here" in texts


# ---------------------------------------------------------------- 4. a fatal error leaves something to inspect


def float_labels(tmp_path: Path) -> Path:
    rows = [{"id": i, "text": f"product {i} review", "label": float(i % 2)} for i in range(200)]
    return write_rows(tmp_path / "inputs" / "floats.parquet", rows, "parquet")


def test_float_labels_match_integer_mapping_keys(tmp_path, ingest_cli, source):
    section = mapped(float_labels(tmp_path), label_rule={"kind": "map", "mapping": {0: "negative", 1: "positive"}})
    report = run_ok(ingest_cli, source, section, tmp_path)["target"]
    assert report["kept"] == 200


def test_unusable_labels_name_the_raw_values_and_leave_the_quarantine(tmp_path, ingest_cli, source):
    stale = tmp_path / "data" / "prepared" / "quarantine.jsonl"
    stale.parent.mkdir(parents=True)
    stale.write_text('{"stale": true}\n')
    section = mapped(float_labels(tmp_path), label_rule={"kind": "map", "mapping": {"neg": "negative", "pos": "positive"}})
    line = one_line_error(ingest_cli({"data": {"source": source, "target": section}}))
    assert "no usable rows" in line and "unknown_label 200" in line
    assert "most common raw label among unknown_label rows: 0.0 (100), 1.0 (100)" in line
    quarantined = read_jsonl(stale)
    assert len(quarantined) == 200 and {"stale": True} not in quarantined
    assert {row["raw_label"] for row in quarantined} == {0.0, 1.0}
    report = json.loads((tmp_path / "reports" / "data.json").read_text())
    assert report["error"] in line and report["target"]["quarantined"]["by_reason"]["unknown_label"] == 200
    assert_conserved(report)
