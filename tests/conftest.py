"""Shared fixtures: real data from ../shared/data (a clear failure when it is missing), offline
hubs, a workspace-local Prefect home."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SHARED_DATA", REPO.parent / "shared" / "data")).resolve()
SENTIMENT = SHARED_DATA / "sentiment-domains"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("PREFECT_HOME", str(REPO / ".prefect"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("DO_NOT_TRACK", "1")


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(
            f"real test data missing: {path} (tests read ../shared/data beside the repo; "
            "set SHARED_DATA to its location)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def sentiment_dir() -> Path:
    return _require(SENTIMENT)


@pytest.fixture(scope="session")
def movie_file(sentiment_dir: Path) -> Path:
    return _require(sentiment_dir / "movieReviewSnippets_GroundTruth.txt")


@pytest.fixture(scope="session")
def amazon_file(sentiment_dir: Path) -> Path:
    return _require(sentiment_dir / "amazonReviewSnippets_GroundTruth.txt")


@pytest.fixture(scope="session")
def multi30k_dir() -> Path:
    """Multi30k task 1 raw text: <split>.<lang>.gz for train, val, test_2016_flickr; en, de, fr, cs."""
    return _require(SHARED_DATA / "multi30k")


def with_overrides(raw: dict, overrides: dict) -> dict:
    """`raw` with each {"dotted.key": value} of `overrides` set (missing sections created)."""
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return raw


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


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
