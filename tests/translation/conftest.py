"""Translation fixtures: Multi30k subsets (en->de source, en->fr target) through the real
ingest and tokenize stages, a 2-layer d_model-32 scratch Marian and tiny step counts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tasks.common.paths import Paths
from tasks.params import Params, parse_params
from tasks.translation import finetune, ingest, pretrain, tokenize
from tests.conftest import SHARED_DATA, _require, with_overrides


MULTI30K = SHARED_DATA / "multi30k"
MULTI30K_SPLITS = {"train": "train", "val": "val", "test": "test_2016_flickr"}
# Train pairs per language pair in the tiny translation workspaces (val and test stay whole:
# ingest caps only the train split of predefined splits).
TRANSLATION_TRAIN_ROWS = 300
# ... then the fixture keeps the first rows of val and test: evaluating 1,000 pairs at every
# eval step costs more than the training itself on 2 shared cores.
TRANSLATION_EVAL_ROWS = 100


def trim_eval_splits(paths: Paths, rows: int) -> None:
    from tasks.common.io import read_jsonl, write_jsonl_atomic

    for domain in ("source", "target"):
        for split in ("val", "test"):
            file = paths.split_file(domain, split)
            write_jsonl_atomic(file, read_jsonl(file)[:rows])


def tiny_translation_params(**overrides) -> Params:
    """Multi30k en->de (source) and en->fr (target) with a 2-layer d_model-32 scratch Marian."""
    multi30k = str(_require(MULTI30K))
    splits = dict(MULTI30K_SPLITS)
    raw = {
        "seed": 7,
        "device": "cpu",
        "task": {"kind": "translation"},
        "data": {
            "source": {"path": multi30k, "format": "text", "max_rows": TRANSLATION_TRAIN_ROWS,
                       "languages": {"src": "en", "tgt": "de"}, "splits": splits},
            "target": {"path": multi30k, "format": "text", "max_rows": TRANSLATION_TRAIN_ROWS,
                       "languages": {"src": "en", "tgt": "fr"}, "splits": splits},
        },
        "model": {"init": "scratch", "scratch": {"layers": 2, "hidden_size": 32, "heads": 2,
                                                  "intermediate_size": 64, "vocab_size": 1000}},
        "tokenize": {"max_length": 64},
        # 30 steps at 3e-3 take seconds and leave a model that has learned something (max_steps
        # caps epochs: 2 epochs of the 300 pairs are 38 steps)
        "pretrain": {"mode": "supervised", "epochs": 2.0, "max_steps": 30, "eval_steps": 15, "batch_size": 16,
                     "learning_rate": 3e-3, "early_stopping_patience": 0},
        "finetune": {"strategy": "full", "max_steps": 10, "eval_steps": 5, "batch_size": 16, "learning_rate": 1e-3},
        "evaluate": {"baselines": ["target_only", "zero_shot"], "test_rows": 20, "samples": 5,
                     "generation": {"max_new_tokens": 16, "num_beams": 2},
                     "target_only": {"max_steps": 10, "eval_steps": 5, "batch_size": 16, "learning_rate": 1e-3}},
        "export": {"parity_samples": 8},
    }
    return parse_params(with_overrides(raw, overrides))


@pytest.fixture(scope="session")
def translation_params():
    """Factory: `translation_params(**{"finetune.strategy": "freeze_encoder"}) -> Params`."""
    return tiny_translation_params


@pytest.fixture(scope="session")
def translation_tokenized(tmp_path_factory) -> Path:
    """Workspace root with Multi30k ingested (300 train pairs each, val/test trimmed to 100) and
    tokenized; copy it before writing."""
    root = tmp_path_factory.mktemp("translation-tokenized")
    params = tiny_translation_params()
    ingest.run(params, Paths(root))
    trim_eval_splits(Paths(root), TRANSLATION_EVAL_ROWS)
    tokenize.run(params, Paths(root))
    return root


@pytest.fixture(scope="session")
def translation_pretrained(tmp_path_factory, translation_tokenized) -> Path:
    """+ models/source (en->de, 30 steps)."""
    root = tmp_path_factory.mktemp("translation-pretrained")
    shutil.copytree(translation_tokenized, root, dirs_exist_ok=True)
    pretrain.run(tiny_translation_params(), Paths(root))
    return root


@pytest.fixture(scope="session")
def translation_finetuned(tmp_path_factory, translation_pretrained) -> Path:
    """+ models/target (en->fr, full fine-tuning, 10 steps)."""
    root = tmp_path_factory.mktemp("translation-finetuned")
    shutil.copytree(translation_pretrained, root, dirs_exist_ok=True)
    finetune.run(tiny_translation_params(), Paths(root))
    return root
