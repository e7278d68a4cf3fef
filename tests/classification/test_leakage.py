"""Leakage: a test text (compared case-insensitively) never also sits in train or val, and a
target test text never sits in source train, so transfer cannot look better than it is."""

from __future__ import annotations

from tasks.common.io import read_jsonl
from tasks.common.paths import SPLITS
from tests.classification.conftest import balanced_rows, rows_accounted, spec, write_rows


def keys(workspace, domain: str, split: str) -> set[str]:
    return {row["text"].casefold() for row in read_jsonl(workspace.split_file(domain, split))}


def case_variant_rows(n: int = 40) -> list[dict]:
    """Each text twice, differing only in case and spacing: not exact duplicates, but the same text."""
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
    assert report["duplicates"] == 0  # case variants are leakage, not exact duplicates
    leakage = report["leakage_removed"]
    assert leakage["total"] > 0
    assert leakage["total"] == leakage["train_vs_test"] + leakage["val_vs_test"] + leakage["train_vs_val"]
    assert rows_accounted(report) == report["rows_read"] == 80


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
