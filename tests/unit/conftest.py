"""Fixtures for the ingest tests: small synthetic corpora in every format, params built with
`parse_params`, and a runner for `python -m tasks.ingest` in a temp workspace."""

from __future__ import annotations

import csv
import functools
import http.server
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

import pytest
import yaml

from tasks.common.paths import Paths
from tasks.ingest import run
from tasks.params import Params, parse_params

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
    """Run `python -m tasks.ingest` in the temp dir with PIPELINE_PARAMS at a params file."""

    def go(params: dict) -> subprocess.CompletedProcess:
        params_file = tmp_path / "params.yaml"
        params_file.write_text(yaml.safe_dump(params), encoding="utf-8")
        env = {**os.environ, "PIPELINE_PARAMS": str(params_file), "PYTHONPATH": str(REPO)}
        return subprocess.run(
            [sys.executable, "-m", "tasks.ingest"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
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


@pytest.fixture
def http_root(tmp_path, monkeypatch):
    """Serve a folder on 127.0.0.1; yields (folder, base URL)."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass
