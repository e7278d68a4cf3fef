"""Files a stage writes through atomic_dir come out readable as the umask allows: some writers
create owner-only files (save_pretrained writes model.safetensors mode 600), which a serving
container's non-root user could not read."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tasks.common.io import atomic_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_owner_only_files_become_readable_and_other_bits_are_kept(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "sub").mkdir()
            for name, bits in (("private.bin", 0o600), ("sub/nested.json", 0o600), ("run.sh", 0o700)):
                (tmp / name).write_text("x")
                os.chmod(tmp / name, bits)
    finally:
        os.umask(old)
    out = tmp_path / "out"
    assert mode(out / "private.bin") == mode(out / "sub" / "nested.json") == 0o644
    assert mode(out / "run.sh") == 0o744  # read bits added, the owner's execute bit kept


def test_a_strict_umask_is_respected(tmp_path):
    old = os.umask(0o077)
    try:
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "private.bin").write_text("x")
            os.chmod(tmp / "private.bin", 0o600)
    finally:
        os.umask(old)
    assert mode(tmp_path / "out" / "private.bin") == 0o600


def test_save_pretrained_weights_are_readable(tmp_path):
    """The case that was found: models/*/model.safetensors came out mode 600."""
    from transformers import BertConfig, BertModel

    from tasks.common.models import save_model

    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    model = BertModel(BertConfig(vocab_size=8, hidden_size=4, num_hidden_layers=1, num_attention_heads=1,
                                 intermediate_size=4, max_position_embeddings=8))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")))
    old = os.umask(0o022)
    try:
        save_model(model, tokenizer, tmp_path / "model")
    finally:
        os.umask(old)
    weights = tmp_path / "model" / "model.safetensors"
    assert mode(weights) == 0o644
    assert all(mode(f) & 0o044 == 0o044 for f in (tmp_path / "model").iterdir())
