"""The encoder-decoder model of translation: build (scratch Marian or a pretrained seq2seq init),
load, check the hand-over between stages, and generate (shared by evaluate and export)."""

from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence

import numpy as np
import torch
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    MarianConfig,
    MarianMTModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from tasks.common.errors import HandoffError, PipelineError
from tasks.common.models import SCRATCH, first_line, resolve_init, vocab_fingerprint
from tasks.params import Params
from tasks.translation import language_tag


# ---------------------------------------------------------------- build and load


def tag_id(tokenizer: PreTrainedTokenizerBase, tgt_lang: str) -> int:
    tag = language_tag(tgt_lang)
    if tag not in tokenizer.get_vocab():
        raise HandoffError(f"tokenizer has no language tag {tag}: re-run tokenize with this language pair")
    return tokenizer.convert_tokens_to_ids(tag)


def subword_ids(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Token ids of each text without any special token (the tag and </s> are added here)."""
    # verbose=False: no "longer than the maximum" warning, truncation follows below
    return tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False)["input_ids"]


def encode_sources(tokenizer: PreTrainedTokenizerBase, texts: list[str], tgt_lang: str, max_length: int) -> list[list[int]]:
    """Encoder inputs `<2tgt> words </s>`, truncated to `max_length` (the tag and </s> kept)."""
    tag, eos = tag_id(tokenizer, tgt_lang), tokenizer.eos_token_id
    return [[tag] + ids[: max_length - 2] + [eos] for ids in subword_ids(tokenizer, texts)]


def encode_source(tokenizer: PreTrainedTokenizerBase, text: str, tgt_lang: str, max_length: int) -> list[int]:
    """One raw source sentence exactly as the tokenize stage encodes it (evaluate, export)."""
    return encode_sources(tokenizer, [text], tgt_lang, max_length)[0]


def encode_targets(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> list[list[int]]:
    """Labels `words </s>`, truncated to `max_length` (the </s> kept)."""
    eos = tokenizer.eos_token_id
    return [ids[: max_length - 1] + [eos] for ids in subword_ids(tokenizer, texts)]


def scratch_config(p: Params, tokenizer: PreTrainedTokenizerBase) -> MarianConfig:
    s = p.model.scratch
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    return MarianConfig(
        vocab_size=len(tokenizer),
        decoder_vocab_size=len(tokenizer),
        d_model=s.hidden_size,
        encoder_layers=s.layers,
        decoder_layers=s.decoder_layers or s.layers,
        encoder_attention_heads=s.heads,
        decoder_attention_heads=s.heads,
        encoder_ffn_dim=s.intermediate_size,
        decoder_ffn_dim=s.intermediate_size,
        dropout=s.dropout,
        # sinusoidal positions (a position's vector does not depend on the table's size)
        max_position_embeddings=s.max_positions,
        pad_token_id=pad,
        eos_token_id=eos,
        bos_token_id=None,
        decoder_start_token_id=pad,  # Marian convention; the contract's decoder start
        # No forced </s> at the length limit: generation stays the plain argmax/beam that the
        # ONNX runtime reproduces step by step.
        forced_eos_token_id=None,
        scale_embedding=True,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
    )


def set_generation_defaults(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, p: Params) -> None:
    """The saved generation_config says how this model decodes by default (greedy, no forcing)."""
    config = model.generation_config
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.decoder_start_token_id = model.config.decoder_start_token_id
    config.forced_eos_token_id = None
    config.bos_token_id = None
    config.max_length = None  # every generate call passes evaluate.generation.max_new_tokens
    config.num_beams = 1


def new_translator(p: Params, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """A fresh Marian from `model.scratch`, or the seq2seq `model.init` with its embeddings
    grown to the tokenizer (the added language tags)."""
    if p.model.init == SCRATCH:
        torch.manual_seed(p.seed)  # same seed, same initial weights
        model = MarianMTModel(scratch_config(p, tokenizer))
    else:
        model = load_init_model(p.model.init)
        if len(tokenizer) > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(len(tokenizer))
    set_generation_defaults(model, tokenizer, p)
    return model


def load_init_model(init: str) -> PreTrainedModel:
    try:
        return freeze_fixed_positions(AutoModelForSeq2SeqLM.from_pretrained(resolve_init(init)))
    except (OSError, ValueError) as err:
        raise PipelineError(f"model.init: cannot load a seq2seq model from '{init}': {first_line(err)}") from None


def load_translator(model_dir: Path) -> PreTrainedModel:
    """A saved translation model (models/source or models/target); HandoffError if absent."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists():
        raise HandoffError(f"{model_dir} has no model (config.json missing): run the previous stage first")
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(str(model_dir))
    except (OSError, ValueError) as err:
        raise HandoffError(f"cannot load a translation model from {model_dir}: {first_line(err)}") from None
    return freeze_fixed_positions(model)


def freeze_fixed_positions(model: PreTrainedModel) -> PreTrainedModel:
    """Keep sinusoidal position tables out of training.

    transformers 5 loads Marian's sinusoidal tables as trainable parameters, yet never saves
    them (they are recomputed on load): training them would make the saved model differ from
    the trained one. A fresh model has them frozen already; a loaded one needs this."""
    for module in model.modules():
        if "Sinusoidal" in type(module).__name__:
            module.requires_grad_(False)
    return model


def check_translation_handoff(model_dir: Path, tokenizer: PreTrainedTokenizerBase, tgt_lang: str) -> None:
    """The model must read the token ids the data was tokenized with and know the language tag."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").exists():
        raise HandoffError(f"{model_dir} has no model (config.json missing): run the previous stage first")
    try:
        model_tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    except (OSError, ValueError) as err:
        raise HandoffError(f"{model_dir}: cannot load its tokenizer: {first_line(err)}") from None
    if vocab_fingerprint(model_tokenizer) != vocab_fingerprint(tokenizer):
        raise HandoffError(
            f"{model_dir}: its tokenizer differs from data/tokenized/tokenizer "
            f"(vocab {len(model_tokenizer)} vs {len(tokenizer)}): re-run tokenize and pretrain together"
        )
    tag = language_tag(tgt_lang)
    if tag not in tokenizer.get_vocab():
        raise HandoffError(f"{model_dir}: tokenizer has no language tag {tag} for target language {tgt_lang!r}: re-run tokenize")


# ---------------------------------------------------------------- generation


def strip_generated(sequence: Sequence[int], decoder_start: int, eos: int, pad: int) -> list[int]:
    """Generated ids without the decoder start, ending before the first </s>, without pads."""
    ids = list(sequence)
    if ids and ids[0] == decoder_start:
        ids = ids[1:]
    if eos in ids:
        ids = ids[: ids.index(eos)]
    return [i for i in ids if i != pad]


def pad_batch(rows: list[list[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest row of this batch (dynamic padding)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def generate_ids(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    src_texts: Sequence[str],
    tgt_lang: str,
    *,
    num_beams: int,
    max_new_tokens: int,
    batch_size: int,
    device,
    no_repeat_ngram_size: int = 0,
    repetition_penalty: float = 1.0,
    length_penalty: float = 1.0,
    max_length: int | None = None,
) -> list[list[int]]:
    """Output token ids for each source text, in the order given.

    Sources are sorted by length so each batch pads little, then put back in order. `max_length`
    (the source truncation) defaults to the tokenizer's model_max_length (tokenize.max_length).
    """
    limit = max_length or tokenizer.model_max_length
    encoded = encode_sources(tokenizer, list(src_texts), tgt_lang, limit)
    model.eval().to(device)
    config = model.generation_config
    start, eos, pad = config.decoder_start_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    order = np.argsort([len(ids) for ids in encoded], kind="stable")
    outputs: list[list[int]] = [[] for _ in encoded]
    for begin in range(0, len(order), batch_size):
        index = order[begin : begin + batch_size]
        input_ids, attention_mask = pad_batch([encoded[i] for i in index], pad, device)
        generated = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            do_sample=False,
            num_beams=num_beams,
            max_new_tokens=max_new_tokens,
            no_repeat_ngram_size=no_repeat_ngram_size,
            repetition_penalty=repetition_penalty,
            length_penalty=length_penalty,
            early_stopping=True if num_beams > 1 else False,
        )
        for row, sequence in zip(index, generated.tolist()):
            outputs[row] = strip_generated(sequence, start, eos, pad)
    return outputs


def translate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    src_texts: Sequence[str],
    tgt_lang: str,
    **generation,
) -> list[str]:
    """Translations of `src_texts` into `tgt_lang` (generate_ids, then decoded without specials)."""
    ids = generate_ids(model, tokenizer, src_texts, tgt_lang, **generation)
    return [tokenizer.decode(row, skip_special_tokens=True, clean_up_tokenization_spaces=False).strip() for row in ids]
