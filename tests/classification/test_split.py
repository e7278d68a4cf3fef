"""The train/val/test split: stratified by label, sized by the fractions, seeded and
byte-for-byte reproducible."""

from __future__ import annotations

from collections import Counter

import pytest

from tasks.common.errors import DataError
from tasks.common.io import read_jsonl
from tasks.common.paths import SPLITS, Paths
from tasks.classification.ingest import run
from tests.classification.conftest import make_params, spec, write_rows


def unbalanced_rows(positive: int = 100, negative: int = 60) -> list[dict]:
    rows = [{"id": f"p{i}", "score": 1.5, "text": f"positive text {i}"} for i in range(positive)]
    rows += [{"id": f"n{i}", "score": -1.5, "text": f"negative text {i}"} for i in range(negative)]
    return rows


@pytest.fixture
def source(tmp_path) -> dict:
    return spec(write_rows(tmp_path / "s.tsv", unbalanced_rows(), "tsv"))


def split_rows(workspace: Paths, domain: str = "source") -> dict[str, list[dict]]:
    return {split: read_jsonl(workspace.split_file(domain, split)) for split in SPLITS}


def test_fractions_are_applied_per_class(source, ingest, workspace):
    report = ingest(source)["source"]
    expected = {
        "test": {"negative": 12, "positive": 20},  # 0.2 of 60 and of 100
        "val": {"negative": 6, "positive": 10},  # 0.1
        "train": {"negative": 42, "positive": 70},
    }
    assert {split: report["splits"][split]["labels"] for split in SPLITS} == expected
    for split, rows in split_rows(workspace).items():
        assert dict(Counter(row["label"] for row in rows)) == expected[split]
        assert report["splits"][split]["rows"] == len(rows)


def test_other_fractions(source, ingest):
    report = ingest(source, data={"split": {"val_fraction": 0.25, "test_fraction": 0.25}})["source"]
    assert report["splits"]["test"]["labels"] == {"negative": 15, "positive": 25}
    assert report["splits"]["val"]["labels"] == {"negative": 15, "positive": 25}


def test_splits_are_disjoint_and_complete(source, ingest, workspace):
    ingest(source)
    ids = [row["id"] for rows in split_rows(workspace).values() for row in rows]
    assert len(ids) == len(set(ids)) == 160


def test_rows_keep_input_order(source, ingest, workspace):
    ingest(source)
    order = {row["id"]: i for i, row in enumerate(unbalanced_rows())}
    for rows in split_rows(workspace).values():
        positions = [order[row["id"]] for row in rows]
        assert positions == sorted(positions)


def test_same_params_and_data_give_identical_bytes(tmp_path, source, target_spec):
    params = make_params(source, target_spec)
    first, second = Paths(tmp_path / "one"), Paths(tmp_path / "two")
    run(params, first)
    run(params, second)
    files = sorted(p.relative_to(first.root) for p in first.root.rglob("*") if p.is_file())
    assert len(files) == 10  # 6 splits, quarantine, report, the decision set and its record
    for name in files:
        assert (first.root / name).read_bytes() == (second.root / name).read_bytes(), name


def test_seed_changes_the_split(tmp_path, source, target_spec):
    tests = []
    for seed in (1, 2):
        paths = Paths(tmp_path / f"seed{seed}")
        run(make_params(source, target_spec, seed=seed), paths)
        tests.append({row["id"] for row in read_jsonl(paths.split_file("source", "test"))})
    assert tests[0] != tests[1] and len(tests[0]) == len(tests[1])


def test_class_too_small_to_stratify_names_domain_and_file(tmp_path, ingest):
    path = write_rows(tmp_path / "small.tsv", unbalanced_rows(positive=30, negative=2), "tsv")
    with pytest.raises(DataError, match=r"data\.source \(.*small\.tsv\): class 'negative' has 2 usable rows"):
        ingest(spec(path))


def test_three_rows_a_class_is_enough(tmp_path, ingest):
    path = write_rows(tmp_path / "small.tsv", unbalanced_rows(positive=3, negative=3), "tsv")
    report = ingest(spec(path))["source"]
    assert all(report["splits"][split]["labels"] == {"negative": 1, "positive": 1} for split in SPLITS)
