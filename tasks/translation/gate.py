"""The translation export gate: before a package replaces models/onnx, ONNX Runtime's greedy
token ids, and its beam-search ids with the manifest's decoding, must EQUAL PyTorch's
`model.generate` ids on the first export.parity_samples target test sentences, decoded in the
very same batches; the encodings must agree and both decode
times are measured. Also what bench/decode_speed.py measures with. And the INT8 figures: BLEU
of the fp32 and INT8 packages on those sentences (score_precisions; export.max_int8_drop)."""

from __future__ import annotations

import time
from pathlib import Path
from collections.abc import Sequence

import numpy as np
import torch
from transformers import PreTrainedModel

from serving.translator import OnnxTranslator, trim
from tasks.common.errors import ExportError, HandoffError
from tasks.common.paths import Paths
from tasks.common.prepared import prepared_split
from tasks.params import Params
from tasks.translation.metrics import translation_scores
from tasks.translation.model import encode_sources, load_translator

# The runtime batches the gate sentences like this; PyTorch gets the very same batches.
GATE_BATCH_SIZE = 16
ARCHITECTURE_FIELDS = ("d_model", "encoder_layers", "decoder_layers", "decoder_attention_heads")


def gate_sentences(paths: Paths, count: int) -> list[str]:
    file = paths.split_file("target", "test")
    rows = prepared_split(paths, "target", "test")[:count]
    if not rows:
        raise HandoffError(f"{file} has no rows: the export gate needs target test sentences")
    for number, row in enumerate(rows, start=1):
        if not isinstance(row.get("src"), str):
            raise HandoffError(f"{file} row {number}: no 'src' text (not a translation row): re-run ingest")
    return [row["src"] for row in rows]


def gate_references(paths: Paths, count: int) -> list[str]:
    """The reference translations of the first `count` target test rows (the gate sentences'),
    which the INT8 gate scores BLEU against."""
    file = paths.split_file("target", "test")
    rows = prepared_split(paths, "target", "test")[:count]
    for number, row in enumerate(rows, start=1):
        if not isinstance(row.get("tgt"), str):
            raise HandoffError(f"{file} row {number}: no 'tgt' text (the INT8 gate's reference): re-run ingest")
    return [row["tgt"] for row in rows]


def score_precisions(package: Path, texts: Sequence[str], references: Sequence[str], tgt_lang: str) -> dict:
    """The fp32 and INT8 packages translate `texts` with the decoding the manifest records
    (evaluate.generation, as deployers run it): sacrebleu BLEU of each against `references`,
    how many translations are identical, and the seconds each took (same machine, same batches)."""
    hypotheses, seconds = {}, {}
    for precision in ("fp32", "int8"):
        translator = OnnxTranslator(package, precision=precision)
        translator.generate_ids(texts[:1], max_new_tokens=2)  # warm-up: session set-up is not decode time
        started = time.perf_counter()
        hypotheses[precision] = translator.translate(texts, **translator.decoding(), batch_size=GATE_BATCH_SIZE)
        seconds[precision] = round(time.perf_counter() - started, 4)
    bleu = {precision: translation_scores(hyps, list(references), tgt_lang) for precision, hyps in hypotheses.items()}
    return {
        "metric": "bleu",
        "split": "target/test",
        "texts": len(texts),
        "fp32": round(bleu["fp32"]["bleu"], 4),
        "int8": round(bleu["int8"]["bleu"], 4),
        "bleu_signature": bleu["fp32"]["bleu_signature"],
        "identical": sum(a == b for a, b in zip(hypotheses["fp32"], hypotheses["int8"])),
        "fp32_seconds": seconds["fp32"],
        "int8_seconds": seconds["int8"],
    }


def load_target(model_dir: Path):
    from transformers import AutoTokenizer

    model = load_translator(model_dir).to(dtype=torch.float32, device="cpu").eval()
    # The graph wrappers drive a Marian/BART-style decoder (its cache layout, final_logits_bias,
    # untied-scale output head); other seq2seq families (T5, ...) need their own wrappers.
    missing = [name for name in ARCHITECTURE_FIELDS if not hasattr(model.config, name)]
    if missing:
        raise HandoffError(
            f"{model_dir}: model_type {model.config.model_type!r} has no config {missing}; "
            "the translation export supports Marian/BART-style encoder-decoders"
        )
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return model, tokenizer


def special_ids(model: PreTrainedModel, tokenizer) -> dict:
    config = model.generation_config
    ids = {
        "pad_id": tokenizer.pad_token_id,
        "eos_id": tokenizer.eos_token_id,
        "unk_id": tokenizer.unk_token_id,
        "decoder_start_id": config.decoder_start_token_id,
    }
    missing = [name for name in ("pad_id", "eos_id", "decoder_start_id") if ids[name] is None]
    if missing:
        raise HandoffError(f"models/target: no {missing} in its tokenizer/generation config (see tasks/translation/__init__.py)")
    return ids


def reference_batches(tokenizer, texts: Sequence[str], batches: list[list[int]], tgt_lang: str, max_length: int, pad_id: int):
    """The training side's encoding (tasks.translation.tokenize) of each runtime batch, padded."""
    encoded = encode_sources(tokenizer, list(texts), tgt_lang, max_length)
    out = []
    for index in batches:
        width = max(len(encoded[i]) for i in index)
        ids = torch.full((len(index), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(index), width), dtype=torch.long)
        for row, i in enumerate(index):
            ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
            mask[row, : len(encoded[i])] = 1
        out.append((index, ids, mask))
    return out


@torch.no_grad()
def torch_generate(model: PreTrainedModel, feeds, count: int, ids: dict, **options) -> tuple[list, float]:
    """model.generate over the runtime's batches (`feeds`), trimmed as the runtime's ids are, and
    its seconds after a warm-up. `options` go to generate (num_beams, max_new_tokens, guards)."""
    out: list[list[int]] = [[] for _ in range(count)]
    device = model.device  # the feeds are built on the host; a benchmark may run the model on a GPU
    _, warm_ids, warm_mask = feeds[0]
    model.generate(input_ids=warm_ids[:1].to(device), attention_mask=warm_mask[:1].to(device), num_beams=1, do_sample=False,
                   max_new_tokens=2)
    started = time.perf_counter()  # after a warm-up, as for the runtime
    for index, input_ids, mask in feeds:
        generated = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), do_sample=False, **options)
        for i, row in zip(index, generated.tolist()):
            out[i] = trim(row[1:], ids["eos_id"], ids["pad_id"])  # row[0] is the decoder start
    return out, time.perf_counter() - started


def greedy_options(max_new_tokens: int) -> dict:
    """Greedy as the evaluate stage decodes it: one beam, no repetition guards."""
    return {"num_beams": 1, "max_new_tokens": max_new_tokens, "no_repeat_ngram_size": 0, "repetition_penalty": 1.0}


def beam_options(translator: OnnxTranslator) -> dict:
    """The package's own decoding (manifest "generation"), as generate takes it."""
    return {**translator.decoding(), "early_stopping": translator.generation.get("early_stopping", False)}


@torch.no_grad()
def first_step_logit_diff(model: PreTrainedModel, translator: OnnxTranslator, feeds, start_id: int) -> float:
    worst = 0.0
    for _, input_ids, mask in feeds:
        start = torch.full((len(input_ids), 1), start_id, dtype=torch.long)
        reference = model(input_ids=input_ids, attention_mask=mask, decoder_input_ids=start).logits[:, -1, :].numpy()
        ids, mask_np = input_ids.numpy(), mask.numpy()
        logits, _, _ = translator.first_step(translator.encode(ids, mask_np), mask_np)
        worst = max(worst, float(np.abs(reference - logits).max()))
    return worst


def compare_decoding(model, translator: OnnxTranslator, texts: Sequence[str], feeds, ids: dict, options: dict) -> dict:
    """ORT's and generate's ids for `texts` decoded with `options` on the same batches: how many
    are identical, the first that differs, and both times (after a warm-up each)."""
    translator.generate_ids(texts[:1], max_new_tokens=2)  # warm-up: session set-up is not decode time
    started = time.perf_counter()
    runtime = translator.generate_ids(texts, batch_size=GATE_BATCH_SIZE, **options)
    ort_seconds = time.perf_counter() - started
    reference, torch_seconds = torch_generate(model, feeds, len(texts), ids, **options)
    differ = [i for i, (a, b) in enumerate(zip(reference, runtime)) if a != b]
    first = None if not differ else (differ[0], reference[differ[0]], runtime[differ[0]])
    return {"identical": len(texts) - len(differ), "first_difference": first,
            "ort_seconds": round(ort_seconds, 4), "torch_seconds": round(torch_seconds, 4)}


def refuse_differences(result: dict, texts: Sequence[str], what: str, logit_diff: float) -> None:
    if result["first_difference"] is None:
        return
    number, reference, runtime = result["first_difference"]
    raise ExportError(
        f"ONNX {what} differs from model.generate on {len(texts) - result['identical']} of {len(texts)} target test "
        f"sentences; first: sentence {number + 1} {texts[number]!r}: torch {reference} vs onnx {runtime} "
        f"(max abs first-step logit diff {logit_diff:.3g})"
    )


def check_gate(model, tokenizer, translator: OnnxTranslator, texts: Sequence[str], p: Params, ids: dict) -> dict:
    """ORT ids == model.generate ids on every sentence, the same batches for both: greedy (as
    evaluate decodes it) and, when the manifest asks for beams, beam search with the manifest's
    settings (what translate() and the CLI run by default). Also: encodings equal, max abs
    first-step logit difference, and the decode times."""
    tgt_lang, max_new = p.data.target.languages.tgt, p.evaluate.generation.max_new_tokens
    batches = translator.plan_batches(texts, GATE_BATCH_SIZE)
    feeds = reference_batches(tokenizer, texts, batches, tgt_lang, translator.max_length, ids["pad_id"])
    for number, text in enumerate(texts, start=1):
        expected = encode_sources(tokenizer, [text], tgt_lang, translator.max_length)[0]
        if translator.encode_ids(text) != expected:
            raise ExportError(f"runtime encodes gate sentence {number} differently from the tokenize stage: {text!r}")

    logit_diff = first_step_logit_diff(model, translator, feeds, ids["decoder_start_id"])
    greedy = compare_decoding(model, translator, texts, feeds, ids, greedy_options(max_new))
    refuse_differences(greedy, texts, "greedy decode", logit_diff)
    beam = None
    if translator.decoding()["num_beams"] > 1:
        options = beam_options(translator)
        beam = compare_decoding(model, translator, texts, feeds, ids, options)
        refuse_differences(beam, texts, f"beam-{options['num_beams']} decode", logit_diff)
        beam = {"num_beams": options["num_beams"], "identical": beam["identical"], "ort_seconds": beam["ort_seconds"],
                "torch_generate_seconds": beam["torch_seconds"],
                "speedup": round(beam["torch_seconds"] / max(beam["ort_seconds"], 1e-9), 3)}
    return {
        "sentences": len(texts),
        "identical": greedy["identical"],
        "max_abs_first_step_logit_diff": logit_diff,
        "batch_size": GATE_BATCH_SIZE,
        "max_new_tokens": max_new,
        "ort_greedy_seconds": greedy["ort_seconds"],
        "torch_generate_seconds": greedy["torch_seconds"],
        "speedup": round(greedy["torch_seconds"] / max(greedy["ort_seconds"], 1e-9), 3),
        "beam": beam,
        "providers": translator.encoder.get_providers(),
    }
