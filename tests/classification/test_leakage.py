"""Leakage: a test text (compared case-insensitively) never also sits in train or val, and a
target test text never sits in source train, so transfer cannot look better than it is."""

from __future__ import annotations

from tasks.common.io import read_jsonl
from tasks.common.paths import SPLITS
from tests.classification.conftest import balanced_rows, rows_accounted, spec, write_rows


def keys(workspace, domain: str, split: str) -> set[str]:
    return {row["text"].casefold() for row in read_jsonl(workspace.split_file(domain, split))}


def case_variant_rows(n: int = 40) -> list[dict]:
    """Each text twice, differing only in case and spacing: the same text, deduplicated as leakage
    removal compares texts (case-insensitively, whitespace normalised)."""
    rows = []
    for i in range(n):
        score = 2.0 if i % 2 else -2.0
        rows.append({"id": f"a{i}", "score": score, "text": f"Sample text number {i}"})
        rows.append({"id": f"b{i}", "score": score, "text": f"sample  TEXT number {i}"})
    return rows


def test_case_variants_do_not_straddle_splits(tmp_path, ingest, workspace):
    report = ingest(spec(write_rows(tmp_path / "s.tsv", case_variant_rows(), "tsv")))["source"]
    test, val, train = (keys(workspace, "source", split) for split in ("test", "val", "train"))
    assert not test & train and not test & val and not val & train
    assert report["duplicates"] == 40  # the second spelling of each text: nothing left to leak
    assert report["leakage_removed"]["total"] == 0
    assert rows_accounted(report) == report["rows_read"] == 80


def test_leaked_texts_are_counted_per_split_and_per_file(tmp_path, ingest, workspace):
    """Same text, different labels in one file: conflicting duplicates; the same text in two
    files of a directory: a duplicate counted against the file it came from."""
    folder = tmp_path / "many"
    write_rows(folder / "a.tsv", balanced_rows("shared", per_class=10), "tsv")
    write_rows(folder / "b.tsv", balanced_rows("shared", per_class=10) + balanced_rows("own", per_class=10), "tsv")
    report = ingest(spec(folder))["source"]
    assert report["duplicates"] == 20
    files = report["files"]
    assert files[f"{folder}/b.tsv"]["dropped"] == {"duplicates": 20}
    assert files[f"{folder}/a.tsv"]["kept"] + files[f"{folder}/b.tsv"]["kept"] == report["kept"] == 40


def test_target_test_texts_leave_source_train(tmp_path, ingest, workspace):
    target_rows = balanced_rows("shared", per_class=20)
    source_rows = balanced_rows("source", per_class=20) + [dict(row, id=f"copy-{row['id']}") for row in target_rows]
    report = ingest(
        spec(write_rows(tmp_path / "s.tsv", source_rows, "tsv")),
        target=spec(write_rows(tmp_path / "t.tsv", target_rows, "tsv")),
    )
    assert not keys(workspace, "target", "test") & keys(workspace, "source", "train")
    removed = report["source"]["leakage_removed"]["source_train_vs_target_test"]
    assert removed > 0
    assert rows_accounted(report["source"]) == report["source"]["rows_read"]
    # Source test and val are not trained on, and the target itself is untouched.
    assert report["target"]["kept"] == len(target_rows)


def test_no_leakage_when_domains_are_disjoint(tmp_path, ingest):
    report = ingest(spec(write_rows(tmp_path / "s.tsv", balanced_rows("s", 20), "tsv")))
    for domain in ("source", "target"):
        assert report[domain]["leakage_removed"]["total"] == 0
        assert sum(report[domain]["splits"][split]["rows"] for split in SPLITS) == report[domain]["kept"]
