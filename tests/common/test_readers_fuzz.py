"""Property-based tests of the readers (tasks/common/sources.py) and of the ingest stage over
them: whatever bytes, encodings, quotes, line endings and field counts a file holds, reading
it never raises anything but a one-line PipelineError, and when ingest succeeds every row it
read is accounted for (per file: rows_read == kept + quarantined + dropped). Files a writer
produced (csv, tsv, jsonl, parquet) read back row for row."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tasks.classification.ingest import run as ingest
from tasks.common.errors import PipelineError
from tasks.common.paths import Paths
from tasks.common.sources import clean_text, read_records
from tasks.params import SourceSpec, parse_params
from tests.classification.conftest import REPO, balanced_rows, write_rows

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROLES = {"text": "text", "label": "label"}
LABELS = ("negative", "positive")

# Text a user's file may hold: quotes, both delimiters, CR, unicode, control characters.
field_text = st.text(alphabet=st.sampled_from('ab Z,;"\'\t\r|é漢\x00\x1b🙂'), min_size=0, max_size=30)
multiline_text = st.lists(st.text(alphabet='ab "é\t', min_size=1, max_size=12), min_size=2, max_size=5).map("\n".join)


def read_all(path: Path, fmt: str) -> list:
    spec = SourceSpec(path=str(path), format=fmt, columns={"text": "text", "label": "label"})
    return list(read_records("target", spec, path, ROLES, path.parent / "cache"))


def csv_bytes(rows: list[tuple[str, str]], terminator: str) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=terminator)
    writer.writerow(["id", "text", "label"])
    writer.writerows((f"r{i}", text, label) for i, (text, label) in enumerate(rows))
    return buffer.getvalue().encode("utf-8")


# ---------------------------------------------------------------- what a writer wrote reads back


@FUZZ
@given(
    texts=st.lists(st.one_of(field_text, multiline_text), min_size=1, max_size=30),
    terminator=st.sampled_from(["\n", "\r\n"]),
)
def test_csv_written_by_a_csv_writer_reads_back_row_for_row(texts, terminator):
    rows = [(text, LABELS[i % 2]) for i, text in enumerate(texts)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "in.csv"
        path.write_bytes(csv_bytes(rows, terminator))
        records = read_all(path, "csv")
    assert len(records) == len(rows)
    for record, (text, label) in zip(records, rows):
        if record.problem is None:
            assert record.values == {"text": text, "label": label}
        else:  # a lone CR outside quotes is the only thing the writer leaves that breaks a row
            assert record.problem.kind == "malformed_row"


@FUZZ
@given(texts=st.lists(st.text(alphabet='ab "é,;漢\x00', min_size=0, max_size=30), min_size=1, max_size=30),
       terminator=st.sampled_from(["\n", "\r\n", "\r"]))
def test_tsv_reads_back_row_for_row_with_any_line_ending(texts, terminator):
    lines = ["id\ttext\tlabel"] + [f"r{i}\t{text}\t{LABELS[i % 2]}" for i, text in enumerate(texts)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "in.tsv"
        path.write_bytes(terminator.join(lines).encode("utf-8") + terminator.encode())
        records = read_all(path, "tsv")
    assert [r.values for r in records] == [{"text": t, "label": LABELS[i % 2]} for i, t in enumerate(texts)]


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)


@FUZZ
@given(values=st.lists(json_value, min_size=1, max_size=30))
def test_jsonl_values_of_any_type_are_kept_as_read(values):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "in.jsonl"
        path.write_text("".join(json.dumps({"text": v, "label": "positive"}) + "\n" for v in values))
        records = read_all(path, "jsonl")
    assert len(records) == len(values)
    assert all(r.problem is None for r in records)


@FUZZ
@given(texts=st.lists(st.one_of(st.none(), st.text(max_size=30)), min_size=1, max_size=30))
def test_parquet_reads_back_row_for_row(texts):
    with tempfile.TemporaryDirectory() as folder:
        path = write_rows(Path(folder) / "in.parquet", [{"text": t, "label": "positive"} for t in texts], "parquet")
        records = read_all(path, "parquet")
    assert [r.values["text"] for r in records] == texts


# ---------------------------------------------------------------- whatever the bytes: ingest holds


def fuzz_ingest(content: bytes, suffix: str) -> None:
    """Ingest a fixed good source and `content` as the target; it either succeeds with every row
    accounted for, or stops with a PipelineError; nothing is written outside its outputs."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        source = write_rows(root / "inputs" / "source.tsv", balanced_rows("source"), "tsv")
        target = root / "inputs" / f"target{suffix}"
        target.write_bytes(content)
        params = parse_params({"data": {
            "source": {"path": str(source), "columns": {"text": "text", "label": "score"},
                       "label_rule": {"kind": "threshold", "threshold": 0.0}},
            "target": {"path": str(target), "columns": dict(ROLES)},
        }})
        try:
            report = ingest(params, Paths(root / "ws"))
        except PipelineError as err:
            assert "\n" not in str(err).strip()
            report = None
        if report is not None:
            for name in ("source", "target"):
                for account in report[name]["files"].values():
                    dropped = sum(account["quarantined"].values()) + sum(account["dropped"].values())
                    assert account["rows_read"] == account["kept"] + dropped
        written = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
        allowed = ("inputs/", "ws/data/prepared/", "ws/data/decision_set/", "ws/reports/data.json")
        assert all(name.startswith(allowed) for name in written), written
        assert target.read_bytes() == content  # the input is never touched


def labelled_lines(sep: str) -> st.SearchStrategy[bytes]:
    """A header and enough good rows to split, with lines broken in every way a file can be
    spliced in among them, in any line ending and encoding."""
    good = [f"g{i}{sep}good row number {i}{sep}{LABELS[i % 2]}" for i in range(12)]
    row = st.builds(lambda i, t, lab: f"r{i}{sep}{t}{sep}{lab}", st.integers(0, 99), field_text, st.sampled_from(LABELS + ("", "maybe")))
    bad = st.one_of(row, field_text, st.just(""), st.just('"'), st.just(sep * 5), st.just(f'x{sep}"open quote{sep}positive'))
    spliced = st.lists(st.tuples(st.integers(0, len(good)), bad), max_size=12).map(
        lambda inserts: splice(good, inserts)
    )
    ending = st.sampled_from(["\n", "\r\n", "\r"])
    encoding = st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"])
    return st.builds(
        lambda lines, end, enc: end.join([sep.join(["id", "text", "label"])] + lines).encode(enc, errors="replace"),
        spliced, ending, encoding,
    )


def splice(lines: list[str], inserts: list[tuple[int, str]]) -> list[str]:
    out = list(lines)
    for position, line in sorted(inserts, reverse=True):
        out.insert(position, line)
    return out


@FUZZ
@given(content=st.one_of(st.binary(max_size=400), labelled_lines(",")))
def test_any_csv_bytes_end_in_outputs_or_one_line(content):
    fuzz_ingest(content, ".csv")


@FUZZ
@given(content=st.one_of(st.binary(max_size=400), labelled_lines("\t")))
def test_any_tsv_bytes_end_in_outputs_or_one_line(content):
    fuzz_ingest(content, ".tsv")


GOOD_JSON = [json.dumps({"id": i, "text": f"good row number {i}", "label": LABELS[i % 2]}) for i in range(12)]
jsonl_lines = st.lists(
    st.tuples(
        st.integers(0, len(GOOD_JSON)),
        st.one_of(
            st.builds(lambda v, lab: json.dumps({"text": v, "label": lab}), json_value, st.sampled_from(LABELS)),
            st.text(max_size=20), st.just("[1, 2]"), st.just("{}"),
        ),
    ),
    max_size=12,
).map(lambda inserts: "\n".join(splice(GOOD_JSON, inserts)).encode("utf-8", errors="replace"))


@FUZZ
@given(content=st.one_of(st.binary(max_size=400), jsonl_lines))
def test_any_jsonl_bytes_end_in_outputs_or_one_line(content):
    fuzz_ingest(content, ".jsonl")


@settings(max_examples=40, deadline=None)
@given(content=st.binary(max_size=400))
def test_any_parquet_bytes_end_in_outputs_or_one_line(content):
    fuzz_ingest(b"PAR1" + content + b"PAR1", ".parquet")


def test_random_bytes_through_the_cli_exit_with_one_line(tmp_path):
    """The same through `python -m tasks ingest`: exit code 1 and one line, never a traceback."""
    source = write_rows(tmp_path / "source.tsv", balanced_rows("source"), "tsv")
    target = tmp_path / "target.csv"
    target.write_bytes(bytes(range(256)) * 4)
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps({"data": {
        "source": {"path": str(source), "columns": {"text": "text", "label": "score"}, "label_rule": {"kind": "threshold"}},
        "target": {"path": str(target)},
    }}))
    env = {"PIPELINE_PARAMS": str(params), "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "tasks", "ingest"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and str(target) in result.stderr


@pytest.mark.parametrize("text, cleaned", [("a\x00b c", "ab c"), ("tab\there\r\nnew", "tab here new"), ("\x1b[31mred", "[31mred")])
def test_clean_text_drops_control_characters(text, cleaned):
    assert clean_text(text) == cleaned
