"""Fixtures for the ingest tests: small synthetic corpora in every format, params built with
`parse_params`, and a runner for `python -m tasks ingest` in a temp workspace; for the export
tests (test_export.py, test_quantized_export.py): the exported tiny workspace and a private copy."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from collections.abc import Callable

import pytest
import yaml

from tasks.classification import pretrain, tokenize
from tasks.classification.ingest import run
from tasks.common.paths import Paths
from tasks.params import Params, parse_params
from tests.conftest import with_overrides

REPO = Path(__file__).resolve().parents[2]
THRESHOLD = {"kind": "threshold", "threshold": 0.0, "neutral_band": 0.5}


def balanced_rows(prefix: str, per_class: int = 10) -> list[dict]:
    """Distinct texts, half scored +2 (positive) and half -2 (negative)."""
    rows = []
    for i in range(per_class):
        rows.append({"id": f"{prefix}-p{i}", "score": 2.0, "text": f"{prefix} item {i} was great"})
        rows.append({"id": f"{prefix}-n{i}", "score": -2.0, "text": f"{prefix} item {i} was awful"})
    return rows


def write_rows(path: Path, rows: list[dict], fmt: str) -> Path:
    """Write rows (dicts with the same keys) as csv, tsv (.tsv or .txt), jsonl or parquet."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        buffer = io.StringIO()
        tsv = fmt == "tsv"
        writer = csv.DictWriter(
            buffer, fieldnames=list(rows[0]), delimiter="\t" if tsv else ",",
            quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL, lineterminator="\r\n",
        )
        writer.writeheader()
        writer.writerows(rows)
        path.write_bytes(buffer.getvalue().encode("utf-8"))
    return path


def spec(path: Path | str, **extra) -> dict:
    """A data.source/target section for the synthetic files (label column `score`)."""
    return {"path": str(path), "columns": {"text": "text", "label": "score"}, "label_rule": dict(THRESHOLD), **extra}


def make_params(source: dict, target: dict, data: dict | None = None, **top) -> Params:
    return parse_params({"data": {"source": source, "target": target, **(data or {})}, **top})


@pytest.fixture
def workspace(tmp_path: Path) -> Paths:
    return Paths(root=tmp_path / "ws")


@pytest.fixture
def target_spec(tmp_path: Path) -> dict:
    """A valid target domain, for tests about the source."""
    return spec(write_rows(tmp_path / "inputs" / "target.tsv", balanced_rows("target"), "tsv"))


@pytest.fixture
def ingest(workspace: Paths, target_spec: dict) -> Callable[..., dict]:
    """ingest(source_spec, target=None, data=None, **top) -> report, written under `workspace`."""

    def go(source: dict, target: dict | None = None, data: dict | None = None, **top) -> dict:
        return run(make_params(source, target or target_spec, data, **top), workspace)

    return go


@pytest.fixture
def ingest_cli(tmp_path: Path) -> Callable[[dict], subprocess.CompletedProcess]:
    """Run `python -m tasks ingest` in the temp dir with PIPELINE_PARAMS at a params file."""

    def go(params: dict) -> subprocess.CompletedProcess:
        params_file = tmp_path / "params.yaml"
        params_file.write_text(yaml.safe_dump(params), encoding="utf-8")
        env = {**os.environ, "PIPELINE_PARAMS": str(params_file), "PYTHONPATH": str(REPO)}
        return subprocess.run(
            [sys.executable, "-m", "tasks", "ingest"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )

    return go


def rows_accounted(domain: dict) -> int:
    """Every row read ends in exactly one place: kept, neutral, quarantined, duplicate or leaked."""
    return (
        domain["kept"]
        + domain["dropped_neutral"]
        + domain["quarantined"]["total"]
        + domain["duplicates"]
        + domain["conflicting_duplicates"]
        + domain["leakage_removed"]["total"]
    )


# ---------------------------------------------------------------- stages: 200-row real subsets (movie -> amazon)
# through the real ingest and tokenize stages, a 2-layer scratch model and tiny step counts.


def tiny_params(movie_file: Path, amazon_file: Path, **overrides) -> Params:
    sentiment = {"kind": "threshold", "threshold": 0.0, "neutral_band": 0.5}
    raw = {
        "seed": 7,
        "device": "cpu",
        "data": {
            "source": {"path": str(movie_file), "format": "tsv", "max_rows": 200,
                       "columns": {"text": "text", "label": "sentiment"}, "label_rule": sentiment},
            "target": {"path": str(amazon_file), "format": "tsv", "max_rows": 200,
                       "columns": {"text": "text", "label": "sentiment"}, "label_rule": sentiment},
        },
        "model": {"init": "scratch", "scratch": {"layers": 2, "hidden_size": 32, "heads": 2,
                                                  "intermediate_size": 64, "vocab_size": 1000}},
        "tokenize": {"max_length": 64},
        "pretrain": {"max_steps": 6, "eval_steps": 3, "batch_size": 16, "learning_rate": 1e-3},
        "finetune": {"max_steps": 4, "eval_steps": 2, "batch_size": 16, "learning_rate": 1e-3},
        "evaluate": {"target_only": {"max_steps": 4, "eval_steps": 2, "batch_size": 16, "learning_rate": 1e-3}},
    }
    return parse_params(with_overrides(raw, overrides))


@pytest.fixture(scope="session")
def tokenized_workspace(tmp_path_factory, movie_file, amazon_file) -> Path:
    """A workspace with ingested and tokenized 200-row subsets; copy it before writing to it."""
    root = tmp_path_factory.mktemp("tokenized")
    params = tiny_params(movie_file, amazon_file)
    run(params, Paths(root))  # the ingest stage
    tokenize.run(params, Paths(root))
    return root


@pytest.fixture(scope="session")
def pretrained_workspace(tmp_path_factory, tokenized_workspace, movie_file, amazon_file) -> Path:
    root = tmp_path_factory.mktemp("pretrained")
    shutil.copytree(tokenized_workspace, root, dirs_exist_ok=True)
    pretrain.run(tiny_params(movie_file, amazon_file), Paths(root))
    return root


@pytest.fixture
def pretrained_copy(tmp_path, pretrained_workspace) -> Paths:
    """A private copy of the pretrained workspace for one test."""
    shutil.copytree(pretrained_workspace, tmp_path, dirs_exist_ok=True)
    return Paths(tmp_path)


@pytest.fixture
def params(movie_file, amazon_file):
    def make(**overrides) -> Params:
        return tiny_params(movie_file, amazon_file, **overrides)

    return make


# ---------------------------------------------------------------- export: the tiny BERT classifier of
# tests/serving/test_classifier.py, exported once per session (exports cost seconds)


@pytest.fixture
def exported(tmp_path_factory, amazon_file) -> tuple[Paths, dict]:
    """(workspace, the export stage's metrics); shared by every test: read it, never write."""
    from tests.serving.test_classifier import exported_workspace  # a serving test module: only when asked for

    return exported_workspace(tmp_path_factory, amazon_file)


@pytest.fixture
def exported_copy(exported, tmp_path) -> Paths:
    """A private copy of the exported workspace (models/onnx included) for one test."""
    shutil.copytree(exported[0].root, tmp_path, dirs_exist_ok=True)
    return Paths(tmp_path)
