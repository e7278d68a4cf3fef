"""Every input kind ingest reads: csv, tsv (.txt too), jsonl, parquet, a directory of them, an
HF dataset (saved with save_to_disk, or a directory of data files), and an http URL pinned by
sha256 (served locally, so the test is offline)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tasks.common.errors import DataError
from tasks.common.io import read_jsonl
from tasks.common.paths import SPLITS
from tests.classification.conftest import balanced_rows, spec, write_rows

ROWS = balanced_rows("source")


def prepared(workspace, domain: str = "source") -> list[dict]:
    return [row for split in SPLITS for row in read_jsonl(workspace.split_file(domain, split))]


def expected_labels(rows: list[dict]) -> dict[str, str]:
    return {row["text"]: "positive" if row["score"] > 0 else "negative" for row in rows}


def assert_read_all(report: dict, workspace, rows: list[dict] = ROWS) -> None:
    assert report["source"]["rows_read"] == len(rows)
    assert report["source"]["kept"] == len(rows)
    assert {row["text"]: row["label"] for row in prepared(workspace)} == expected_labels(rows)


@pytest.mark.parametrize(
    "fmt, name", [("csv", "s.csv"), ("tsv", "s.tsv"), ("tsv", "s.txt"), ("jsonl", "s.jsonl"), ("parquet", "s.parquet")]
)
def test_each_file_format_by_extension(tmp_path, ingest, workspace, fmt, name):
    path = write_rows(tmp_path / name, ROWS, fmt)
    report = ingest(spec(path))
    assert_read_all(report, workspace)
    assert report["source"]["input"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert {row["id"] for row in prepared(workspace)} == {row["id"] for row in ROWS}


def test_explicit_format_overrides_the_extension(tmp_path, ingest, workspace):
    path = write_rows(tmp_path / "s.data", ROWS, "csv")
    assert_read_all(ingest(spec(path, format="csv")), workspace)


def test_unknown_extension_asks_for_a_format(tmp_path, ingest):
    path = write_rows(tmp_path / "s.data", ROWS, "csv")
    with pytest.raises(DataError, match=r"data\.source\.format: .*s\.data"):
        ingest(spec(path))


def test_jsonl_rows_without_a_key_are_quarantined_on_any_line(tmp_path, ingest, workspace):
    # A jsonl file has no header: a first object that left the label out stopped ingest with
    # "column 'score' not in ... (columns: id, text)", though every other row had it; the same
    # object on line 2 was one quarantined row.
    for first in (True, False):
        unlabelled = {"id": "u", "text": "no score on this one"}
        rows = [unlabelled, *ROWS] if first else [ROWS[0], unlabelled, *ROWS[1:]]
        path = tmp_path / f"first-{first}.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        report = ingest(spec(path))
        assert report["source"]["rows_read"] == len(ROWS) + 1
        assert report["source"]["quarantined"]["by_reason"]["missing_label"] == 1
        assert report["source"]["kept"] == len(ROWS)
    typo = tmp_path / "typo.jsonl"
    typo.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    with pytest.raises(DataError, match=r"data\.source\.columns\.label: column 'scor' not in .*typo\.jsonl \(columns: id, score, text\)"):
        ingest({**spec(typo), "columns": {"text": "text", "label": "scor"}})


@pytest.mark.parametrize(
    "name, written_with, hint",
    [
        ("s.csv", ";", r"its header looks ';'-separated and it is read as csv: re-save it comma- or tab-separated"),
        ("s.csv", "\t", r"its header looks tab-separated and it is read as csv: set data\.source\.format: tsv"),
        ("s.tsv", ",", r"its header looks ','-separated and it is read as tsv: set data\.source\.format: csv"),
    ],
)
def test_a_header_with_another_separator_says_what_to_do(tmp_path, ingest, name, written_with, hint):
    # A ';'-separated "csv" (as spreadsheets save it in many locales) read as one column.
    path = tmp_path / name
    path.write_text("".join(f"{row['id']}{written_with}{row['text']}{written_with}{row['score']}\n"
                            for row in [{"id": "id", "text": "text", "score": "score"}, *ROWS[:5]]), encoding="utf-8")
    with pytest.raises(DataError, match=r"data\.source\.columns\.\w+: column '\w+' not in .*" + hint):
        ingest(spec(path))


def test_a_one_column_header_without_another_separator_gets_no_hint(tmp_path, ingest):
    path = tmp_path / "s.csv"
    path.write_text("words\nsome text\n", encoding="utf-8")
    with pytest.raises(DataError) as caught:
        ingest(spec(path))
    assert "separated" not in str(caught.value)


def test_csv_quoted_fields_keep_commas_and_newlines(tmp_path, ingest, workspace):
    rows = ROWS + [{"id": "q", "score": 3.0, "text": 'one, "two"\r\nand  three'}]
    report = ingest(spec(write_rows(tmp_path / "s.csv", rows, "csv")))
    assert report["source"]["quarantined"]["total"] == 0
    assert 'one, "two" and three' in {row["text"] for row in prepared(workspace)}


def test_directory_of_mixed_files(tmp_path, ingest, workspace):
    folder = tmp_path / "corpus"
    write_rows(folder / "a.csv", ROWS[:10], "csv")
    write_rows(folder / "b.jsonl", ROWS[10:], "jsonl")
    (folder / ".hidden.csv").write_text("not,read\n")
    (folder / "notes.md").write_text("not a data file\n")
    report = ingest(spec(folder))
    assert_read_all(report, workspace)
    ids = {row["id"] for row in prepared(workspace)}
    assert f"a.csv:{ROWS[0]['id']}" in ids and f"b.jsonl:{ROWS[10]['id']}" in ids


def test_empty_directory_is_an_error(tmp_path, ingest):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no data files"):
        ingest(spec(tmp_path / "empty"))


@pytest.fixture
def saved_hf_dataset(tmp_path) -> Path:
    from datasets import Dataset, DatasetDict

    half = len(ROWS) // 2
    splits = {"train": Dataset.from_list(ROWS[:half]), "test": Dataset.from_list(ROWS[half:])}
    DatasetDict(splits).save_to_disk(str(tmp_path / "hf"))
    return tmp_path / "hf"


def test_hf_saved_dataset_all_splits(saved_hf_dataset, ingest, workspace):
    assert_read_all(ingest(spec(saved_hf_dataset, format="hf")), workspace)


def test_hf_saved_dataset_one_split(saved_hf_dataset, ingest, workspace):
    report = ingest(spec(saved_hf_dataset, format="hf", hf_split="test"))
    assert_read_all(report, workspace, ROWS[len(ROWS) // 2 :])


def test_hf_unknown_split_lists_the_splits(saved_hf_dataset, ingest):
    with pytest.raises(DataError, match=r"hf_split: 'dev' not in .*\(splits: train, test\)"):
        ingest(spec(saved_hf_dataset, format="hf", hf_split="dev"))


def test_hf_directory_of_data_files(tmp_path, ingest, workspace):
    write_rows(tmp_path / "hfdir" / "train.csv", ROWS, "csv")
    report = ingest(spec(tmp_path / "hfdir", format="hf"))
    assert_read_all(report, workspace)
    assert (workspace.root / "data" / "cache" / "hf").is_dir()  # the datasets cache stays in the workspace


def test_hf_unknown_dataset_is_one_line(ingest):
    with pytest.raises(DataError, match="cannot load HF dataset") as caught:
        ingest(spec("no-such-user/no-such-dataset-xyz", format="hf"))
    assert "\n" not in str(caught.value)


def test_url_with_sha256_is_downloaded_verified_and_cached(http_root, ingest, workspace):
    folder, base = http_root
    path = write_rows(folder / "source.jsonl", ROWS, "jsonl")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    report = ingest(spec(f"{base}/source.jsonl", sha256=digest))
    assert_read_all(report, workspace)
    assert report["source"]["input"]["sha256"] == digest
    path.unlink()  # a second run reads the verified cache, not the server
    assert_read_all(ingest(spec(f"{base}/source.jsonl", sha256=digest)), workspace)


def test_url_sha256_mismatch_is_an_error_and_nothing_is_kept(http_root, ingest, workspace):
    folder, base = http_root
    write_rows(folder / "source.jsonl", ROWS, "jsonl")
    wrong = "0" * 64
    with pytest.raises(DataError, match=f"data.source.sha256: {base}/source.jsonl: .*expected {wrong}"):
        ingest(spec(f"{base}/source.jsonl", sha256=wrong))
    cached = workspace.root / "data" / "cache" / "downloads"
    assert not [p for p in cached.rglob("*") if p.is_file()]
    assert not workspace.prepared.exists()


def test_url_not_found_is_a_data_error(http_root, ingest):
    _, base = http_root
    with pytest.raises(DataError, match="download failed"):
        ingest(spec(f"{base}/missing.csv", sha256="0" * 64))


def test_local_file_sha256_is_checked(tmp_path, ingest, workspace):
    path = write_rows(tmp_path / "s.tsv", ROWS, "tsv")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert_read_all(ingest(spec(path, sha256=digest)), workspace)
    with pytest.raises(DataError, match=f"has sha256 {digest}, expected {'1' * 64}"):
        ingest(spec(path, sha256="1" * 64))
