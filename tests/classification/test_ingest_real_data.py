"""The real VADER files (../shared/data): every row of every domain parses, and 200-row subsets of
movie (source) and amazon (target) give a report whose counts add up."""

from __future__ import annotations

from collections import Counter

import pytest

from tasks.common.io import read_json, read_jsonl
from tasks.common.paths import SPLITS
from tasks.common.sources import read_records
from tasks.params import SourceSpec
from tests.classification.conftest import rows_accounted

VADER = {"kind": "threshold", "threshold": 0.0, "neutral_band": 0.5}
ROLES = {"text": "text", "label": "sentiment"}  # what classification reads, by role
# Rows per file, from ../shared/data/README.md.
ROWS = {
    "movieReviewSnippets_GroundTruth.txt": 10_605,
    "amazonReviewSnippets_GroundTruth.txt": 3_708,
    "tweets_GroundTruth.txt": 4_200,
    "nytEditorialSnippets_GroundTruth.txt": 5_190,
}


def vader_spec(path, **extra) -> dict:
    columns = {"text": "text", "label": "sentiment"}
    return {"path": str(path), "format": "tsv", "columns": columns, "label_rule": VADER, **extra}


@pytest.mark.parametrize("name", list(ROWS))
def test_every_row_of_the_real_files_parses(sentiment_dir, tmp_path, name):
    spec = SourceSpec.model_validate(vader_spec(sentiment_dir / name))
    records = list(read_records("source", spec, sentiment_dir / name, ROLES, tmp_path))
    assert len(records) == ROWS[name]
    assert [r for r in records if r.problem] == []
    assert all(float(r.values["label"]) == float(r.values["label"]) for r in records)  # every score is a number
    assert records[0].row == 2 and records[-1].row == ROWS[name] + 1  # header is line 1


def test_unbalanced_quotes_in_real_text_stay_in_their_row(amazon_file, tmp_path):
    spec = SourceSpec.model_validate(vader_spec(amazon_file))
    texts = [r.values["text"] for r in read_records("target", spec, amazon_file, ROLES, tmp_path)]
    assert '"  this problem vanished after the first month, so i assume it was a temporary dust issue.' in texts


def test_real_200_row_subsets_counts_add_up(movie_file, amazon_file, ingest, workspace):
    source, target = vader_spec(movie_file, max_rows=200), vader_spec(amazon_file, max_rows=200)
    report = ingest(source, target=target, data={"min_chars": 3})
    assert read_json(workspace.data_report) == report
    for domain in ("source", "target"):
        d = report[domain]
        assert d["rows_read"] == 200
        assert rows_accounted(d) == 200
        assert d["kept"] == sum(d["splits"][s]["rows"] for s in SPLITS) > 100
        for split in SPLITS:
            rows = read_jsonl(workspace.split_file(domain, split))
            assert len(rows) == d["splits"][split]["rows"]
            counted = {label: n for label, n in d["splits"][split]["labels"].items() if n}
            assert dict(Counter(row["label"] for row in rows)) == counted
            assert all(set(row) == {"id", "text", "label"} for row in rows)
        assert d["splits"]["test"]["rows"] == pytest.approx(0.2 * d["kept"], abs=2)
        assert d["splits"]["val"]["rows"] == pytest.approx(0.1 * d["kept"], abs=2)
    quarantined = read_jsonl(workspace.quarantine)
    assert len(quarantined) == report["source"]["quarantined"]["total"] + report["target"]["quarantined"]["total"]
    assert report["source"]["input"]["sha256"] == "7c545917836f4935ff00d729bf8190564651c0f0eb9e07fb258f1c1a182e8f4e"
