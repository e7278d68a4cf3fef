"""Bad rows are quarantined with their reason and counted; nothing is lost without a count:
kept + quarantined + neutral + duplicates (+ conflicting, + leaked) == rows read."""

from __future__ import annotations

import pytest

from tasks.common.io import read_jsonl
from tasks.common.prepared import summary
from tests.classification.conftest import balanced_rows, rows_accounted, spec

HEADER = b"id\tscore\ttext\r\n"
GOOD = b"".join(f"{r['id']}\t{r['score']}\t{r['text']}\r\n".encode() for r in balanced_rows("good", 10))
# (line bytes, expected reason or None); line numbers follow from the order (header = line 1).
BAD_LINES = [
    (b"e1\t2.0\t   \r\n", "empty or too short text (0 chars, min_chars 3)"),
    (b"e2\t2.0\t ab \r\n", "empty or too short text (2 chars, min_chars 3)"),
    (b"m1\t\tno label on this row\r\n", "missing label"),
    (b"x1\tvery good\ta word for a score\r\n", "label 'very good' is not a number (label_rule threshold)"),
    (b"u1\t2.0\tbroken \xff\xfe bytes here\r\n", "undecodable bytes (not UTF-8)"),
    (b"f1\t2.0\ttab\tinside the text\r\n", "expected 3 fields, got 4"),
    (b"f2\t2.0\r\n", "expected 3 fields, got 2"),
]
EXTRA_LINES = [
    b"n1\t0.3\tlukewarm at best\r\n",  # neutral
    b"d1\t2.0\tgood item 0 was great\r\n",  # exact duplicate of a good row, same label
    b"d2\t2.0\tgood   item 1 was great\r\n",  # duplicate once whitespace is normalised
    b"c1\t2.0\tflip flop text\r\n",  # conflicting duplicates: both copies dropped
    b"c2\t-2.0\tflip flop text\r\n",
    b"\r\n",  # a blank line is not a row
]


@pytest.fixture
def messy_tsv(tmp_path):
    path = tmp_path / "messy.tsv"
    path.write_bytes(HEADER + GOOD + b"".join(line for line, _ in BAD_LINES) + b"".join(EXTRA_LINES))
    return path


@pytest.fixture
def messy_report(messy_tsv, ingest):
    return ingest(spec(messy_tsv), data={"min_chars": 3})


def test_every_bad_row_is_quarantined_with_reason_and_line(messy_tsv, messy_report, workspace):
    rows = read_jsonl(workspace.quarantine)
    first_bad_line = 2 + GOOD.count(b"\n")
    expected = [(first_bad_line + i, reason) for i, (_, reason) in enumerate(BAD_LINES)]
    assert [(row["row"], row["reason"]) for row in rows] == expected
    assert {row["domain"] for row in rows} == {"source"}
    assert {row["file"] for row in rows} == {str(messy_tsv)}
    by_line = {row["row"]: row for row in rows}
    assert by_line[first_bad_line + 3]["raw_label"] == "very good"
    assert "broken" in by_line[first_bad_line + 4]["text"]
    assert by_line[first_bad_line + 5]["text"] == "f1\t2.0\ttab\tinside the text"


def test_counts_add_up(messy_report):
    report = messy_report["source"]
    assert report["rows_read"] == 20 + len(BAD_LINES) + len(EXTRA_LINES) - 1
    assert report["quarantined"]["by_reason"] == {
        "undecodable": 1, "malformed_row": 0, "unbalanced_quote": 0, "wrong_field_count": 2, "bad_json": 0,
        "not_text": 0, "empty_text": 2, "missing_label": 1, "not_a_number": 1, "unknown_label": 0,
    }
    assert report["quarantined"]["total"] == len(BAD_LINES)
    assert report["dropped_neutral"] == 1
    assert report["duplicates"] == 2
    assert report["conflicting_duplicates"] == 2
    assert report["kept"] == 20
    assert rows_accounted(report) == report["rows_read"]


def test_the_summary_line_says_to_re_save_a_file_that_is_not_utf8(messy_report):
    line = summary(messy_report)
    assert f"quarantined {len(BAD_LINES)}, 1 of them not UTF-8: re-save the file as UTF-8 (rows in " in line
    assert "not UTF-8" not in summary({**messy_report, "source": {**messy_report["source"], "quarantined": {
        "total": 0, "by_reason": dict.fromkeys(messy_report["source"]["quarantined"]["by_reason"], 0)}}})


def test_jsonl_bad_lines_and_unknown_labels(tmp_path, ingest, workspace):
    good = [f'{{"text": "review number {i}", "label": "{"positive" if i % 2 else "negative"}"}}' for i in range(20)]
    bad = ['{"text": "cut off', "[1, 2]", '{"text": "fine words", "label": "meh"}', '{"text": "no label at all"}']
    lines = good + bad
    path = tmp_path / "s.jsonl"
    path.write_bytes("\n".join(lines).encode() + b'\n{"text": "bad \xff", "label": "positive"}\n')
    source = {"path": str(path), "label_rule": {"kind": "map"}}
    report = ingest(source)["source"]
    reasons = [(row["row"], row["reason"]) for row in read_jsonl(workspace.quarantine)]
    assert reasons == [
        (21, "not valid JSON: Unterminated string starting at (column 10)"),
        (22, "not a JSON object: list"),
        (23, "unknown label 'meh'"),
        (24, "missing label"),
        (25, "undecodable bytes (not UTF-8)"),
    ]
    assert report["quarantined"]["by_reason"]["bad_json"] == 2
    assert rows_accounted(report) == report["rows_read"] == 25


def test_parquet_nulls_are_quarantined(tmp_path, ingest, workspace):
    import pyarrow as pa
    import pyarrow.parquet as pq

    nulls = [{"id": "x", "score": None, "text": "no score here"}, {"id": "y", "score": 1.0, "text": None}]
    rows = balanced_rows("p") + nulls
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "s.parquet")
    report = ingest(spec(tmp_path / "s.parquet"))["source"]
    assert [row["reason"] for row in read_jsonl(workspace.quarantine)] == [
        "missing label", "empty or too short text (0 chars, min_chars 1)",
    ]
    assert [row["row"] for row in read_jsonl(workspace.quarantine)] == [21, 22]
    assert rows_accounted(report) == report["rows_read"] == 22
