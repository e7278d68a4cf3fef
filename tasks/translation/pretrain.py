"""Pretrain a translator on the source language pair (e.g. en->de): writes models/source/."""

from __future__ import annotations

from transformers import set_seed

from tasks.common.models import save_model
from tasks.common.paths import Paths
from tasks.params import Params
from tasks.translation.model import new_translator
from tasks.translation.train import load_pairs, train_translator


def run(p: Params, paths: Paths) -> dict:
    set_seed(p.seed)  # a scratch translator starts from the seed, whatever the process drew before
    splits, tokenizer = load_pairs(paths, "source")
    model = new_translator(p, tokenizer)
    model, result = train_translator(model, splits, tokenizer, p.pretrain, p, paths, "pretrain", None)
    pair = p.data.source.languages
    log = {"init": p.model.init, "languages": {"src": pair.src, "tgt": pair.tgt}, "source_train_rows": len(splits["train"]), **result}
    save_model(model, tokenizer, paths.source_model, {"pretrain.json": log})
    return log
