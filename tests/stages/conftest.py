"""Stage fixtures: 200-row real subsets (movie -> amazon) through the real ingest and tokenize
stages, a 2-layer scratch model and tiny step counts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tasks import ingest, pretrain, tokenize
from tasks.common.paths import Paths
from tasks.params import Params, parse_params


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
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return parse_params(raw)


@pytest.fixture(scope="session")
def tokenized_workspace(tmp_path_factory, movie_file, amazon_file) -> Path:
    """A workspace with ingested and tokenized 200-row subsets; copy it before writing to it."""
    root = tmp_path_factory.mktemp("tokenized")
    params = tiny_params(movie_file, amazon_file)
    ingest.run(params, Paths(root))
    tokenize.run(params, Paths(root))
    return root


@pytest.fixture(scope="session")
def pretrained_workspace(tmp_path_factory, tokenized_workspace, movie_file, amazon_file) -> Path:
    root = tmp_path_factory.mktemp("pretrained")
    shutil.copytree(tokenized_workspace, root, dirs_exist_ok=True)
    pretrain.run(tiny_params(movie_file, amazon_file), Paths(root))
    return root


@pytest.fixture
def workspace(tmp_path, pretrained_workspace) -> Paths:
    """A private copy of the pretrained workspace for one test."""
    shutil.copytree(pretrained_workspace, tmp_path, dirs_exist_ok=True)
    return Paths(tmp_path)


@pytest.fixture
def params(movie_file, amazon_file):
    def make(**overrides) -> Params:
        return tiny_params(movie_file, amazon_file, **overrides)

    return make
