"""Export models/target (an encoder-decoder translator) to a self-contained ONNX package that
serving.translator.OnnxTranslator runs with onnxruntime + tokenizers + numpy, and prove it
before anything replaces models/onnx: its greedy token ids must EQUAL PyTorch's
`model.generate` ids on the first export.parity_samples target test sentences (gate.py).

Package (models/onnx):
  encoder.onnx            input_ids, attention_mask [batch, source] -> encoder_hidden_states
  decoder.onnx            first step: input_ids [batch, 1] (the decoder start), encoder_attention_mask,
                          encoder_hidden_states -> logits, present.{i}.{self,cross}.{key,value}
  decoder_with_past.onnx  input_ids [batch, 1], encoder_attention_mask, past.{i}.{self,cross}.{key,value}
                          -> logits, present.{i}.self.{key,value} (past + 1 positions)
  *.int8.onnx             the three graphs in dynamic INT8 (export.int8): encoder.int8.onnx, ...
  reorder.onnx            kv.{0..2*layers-1}, index -> taken.{i} = kv.{i}[index]: the beam reorder
                          of the KV cache as a graph, so that a CUDA runtime keeps the cache on
                          the GPU (IO binding) instead of copying it through numpy every step
  search.onnx             logits, running_scores, banned, grid, k -> top_scores, top_index: a beam
                          step's candidate scoring (log-softmax, banned tokens, running scores,
                          top-k) in ONNX Runtime's kernels instead of numpy's
  tokenizer files         what save_pretrained writes; tokenizer.json is what the runtime reads
  manifest.json           languages and tag, special ids, max_length, shapes of the model,
                          graph inputs/outputs, generation defaults, sha256 of every file, the gate,
                          the INT8 gate, serve_precision, and a digest of the manifest itself,
                          which the loader checks
metrics/export.json holds the gate figures and the decode-time comparison with model.generate.

The INT8 gate (gate.score_precisions): the fp32 and INT8 packages translate the gate sentences
with the evaluate stage's decoding; the stage fails when INT8's BLEU is more than
export.max_int8_drop points below fp32's. The graphs are not fused: ONNX Runtime's transformer
optimizer has no rewriter for these hand-written decoder steps (decoder_step.py), and the
encoder of these small models is a small share of decode time.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import torch
from transformers import PreTrainedModel
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from serving.package import FORMAT_VERSION, MANIFEST, SERVE_PRECISION, TOKENIZER_FILE, int8_file, sealed
from serving.translator import (
    DECODER_FILE,
    DECODER_WITH_PAST_FILE,
    ENCODER_FILE,
    GRAPH_FILES,
    REORDER_FILE,
    SEARCH_FILE,
    TASK,
    OnnxTranslator,
    cross_names,
    reorder_names,
    search_names,
    self_names,
)
from tasks.common.errors import ExportError, HandoffError
from tasks.common.io import atomic_dir, write_json_atomic
from tasks.common.onnx_export import (
    checked_graph,
    describe_value,
    dynamo_export,
    file_hashes,
    hand_built_model,
    int8_gate,
    library_versions,
    quantize_graph,
    source_info,
)
from tasks.common.paths import Paths
from tasks.params import Params
from tasks.translation import language_tag
from tasks.translation.decoder_step import FastFirstStep, FastWithPast, lm_logits, supports_fast_step
from tasks.translation.gate import check_gate, gate_references, gate_sentences, load_target, score_precisions, special_ids
# Generation-config settings the runtime reproduces; anything else non-default is refused
# at export (the package would decode differently from the model).
# Dynamic INT8 for the three graphs: the classifier's settings (tasks/classification/export.py
# says why each): MatMuls only (embeddings stay fp32), per-channel scales, 7-bit weights.
QUANTIZATION = {"op_types": ["MatMul", "Attention"], "per_channel": True, "reduce_range": True}
UNSUPPORTED_GENERATION = {
    "no_repeat_ngram_size": (None, 0),
    "repetition_penalty": (None, 1.0),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "forced_bos_token_id": (None,),
    "begin_suppress_tokens": (None, []),
    "encoder_no_repeat_ngram_size": (None, 0),
}


# ---------------------------------------------------------------- graph wrappers
# torch.onnx.export sees plain tensors in and out; transformers' cache objects live inside.
# Marian models use tasks/translation/decoder_step.py instead (same numbers, a faster graph);
# these traced graphs serve every other seq2seq architecture.


class EncoderGraph(torch.nn.Module):
    def __init__(self, model: PreTrainedModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def decode_into(model: PreTrainedModel, input_ids, encoder_attention_mask, encoder_hidden_states, cache) -> torch.Tensor:
    """transformers' decoder on `input_ids`, filling `cache`; returns the logits."""
    out = model.get_decoder()(
        input_ids=input_ids,
        encoder_hidden_states=encoder_hidden_states,
        encoder_attention_mask=encoder_attention_mask,
        cache=cache,
        use_cache=True,
    )
    return lm_logits(model, out.last_hidden_state)


def cached(cache: DynamicCache) -> list[torch.Tensor]:
    """key 0, value 0, key 1, value 1, ...: the order of the graphs' present.* outputs."""
    return [tensor for layer in cache.layers for tensor in (layer.keys, layer.values)]


class FirstStepGraph(torch.nn.Module):
    """The decoder on the start token with an empty cache; returns the cache it filled."""

    def __init__(self, model: PreTrainedModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids, encoder_attention_mask, encoder_hidden_states):
        config = self.model.config
        cache = EncoderDecoderCache(DynamicCache(config=config), DynamicCache(config=config))
        logits = decode_into(self.model, input_ids, encoder_attention_mask, encoder_hidden_states, cache)
        return (logits, *cached(cache.self_attention_cache), *cached(cache.cross_attention_cache))


class WithPastGraph(torch.nn.Module):
    """One new token with the self-attention cache so far and the cross-attention keys and
    values computed at the first step (marked as computed, so they are reused, not rebuilt)."""

    def __init__(self, model: PreTrainedModel):
        super().__init__()
        self.model = model
        self.layers = model.config.decoder_layers

    def forward(self, input_ids, encoder_attention_mask, past_self, past_cross):
        config = self.model.config
        self_cache, cross_cache = DynamicCache(config=config), DynamicCache(config=config)
        for i in range(self.layers):
            self_cache.update(past_self[2 * i], past_self[2 * i + 1], i)
            cross_cache.update(past_cross[2 * i], past_cross[2 * i + 1], i)
        cache = EncoderDecoderCache(self_cache, cross_cache)
        for i in range(self.layers):
            cache.is_updated[i] = True
        # The decoder takes the cross path only when given encoder states; their values are
        # not read (the cached keys/values are), only the shape [batch, source, d_model].
        key = past_cross[0]
        placeholder = key.new_zeros(key.shape[0], key.shape[2], config.d_model)
        logits = decode_into(self.model, input_ids, encoder_attention_mask, placeholder, cache)
        return (logits, *cached(cache.self_attention_cache))


def decoder_graphs(model: PreTrainedModel) -> tuple[torch.nn.Module, torch.nn.Module, str, int]:
    """The first-step and with-past modules to export, the name of that pair, and the axis of
    a cached key that grows with each token (decoder_step caches keys transposed)."""
    if supports_fast_step(model):
        return FastFirstStep(model), FastWithPast(model), "marian_step", 3
    return FirstStepGraph(model), WithPastGraph(model), "traced", 2


def position_axis(name: str, key_axis: int) -> int:
    """The axis of a cached tensor that counts positions (values: 2; keys: key_axis)."""
    return key_axis if name.endswith("key") else 2


@torch.no_grad()
def export_graphs(model: PreTrainedModel, package: Path, pad_id: int, start_id: int, opset: int) -> str:
    """Trace with batch 2, a padded source of 5 and a past of 2 positions: no axis is 0 or 1
    (which torch.export would specialise) and no two axes share a size by accident. Returns
    which decoder graphs were exported ("marian_step" or "traced")."""
    layers = model.config.decoder_layers
    batch, source, past = torch.export.Dim("batch"), torch.export.Dim("source"), torch.export.Dim("past")
    ids = torch.tensor([[5, 6, 7, 8, 1], [5, 9, 1, pad_id, pad_id]])
    mask = (torch.arange(5)[None, :] < torch.tensor([[5], [3]])).long()
    # torch.export keeps batch, source and past symbolic and fails loudly on a specialisation
    dynamo_export(
        EncoderGraph(model).eval(), package / ENCODER_FILE, opset, ["input_ids", "attention_mask"], ["encoder_hidden_states"],
        ({0: batch, 1: source}, {0: batch, 1: source}), args=(ids, mask),
    )
    hidden = EncoderGraph(model)(ids, mask)
    start = torch.full((2, 1), start_id, dtype=torch.long)
    first_step, with_past, kind, key_axis = decoder_graphs(model)
    present_self, present_cross = self_names("present", layers), cross_names("present", layers)
    dynamo_export(
        first_step.eval(), package / DECODER_FILE, opset,
        ["input_ids", "encoder_attention_mask", "encoder_hidden_states"], ["logits", *present_self, *present_cross],
        ({0: batch}, {0: batch, 1: source}, {0: batch, 1: source}), args=(start, mask, hidden),
    )
    first = first_step(start, mask, hidden)
    cross = tuple(first[1 + 2 * layers :])
    grown = zip(present_self, first[1 : 1 + 2 * layers])  # 2 positions
    past_self = tuple(torch.cat([kv, kv], dim=position_axis(name, key_axis)) for name, kv in grown)
    dynamo_export(
        with_past.eval(), package / DECODER_WITH_PAST_FILE, opset,
        ["input_ids", "encoder_attention_mask", *self_names("past", layers), *cross_names("past", layers)],
        ["logits", *present_self],
        ({0: batch}, {0: batch, 1: source}, tuple({0: batch, position_axis(n, key_axis): past} for n in present_self),
         tuple({0: batch, position_axis(n, key_axis): source} for n in present_cross)),
        args=(start + 3, mask, past_self, cross),
    )
    return kind


def write_reorder_graph(package: Path, layers: int, opset: int) -> None:
    """reorder.onnx: Gather along axis 0 of each of the 2 * layers cached tensors by one index
    (self keys and values, or cross ones: both are 2 * layers float tensors of rank 4; each input
    has dims of its own, since keys and values may lay positions out differently)."""
    inputs, index, outputs = reorder_names(layers)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Gather", [name, index], [out], axis=0) for name, out in zip(inputs, outputs)],
        "reorder",
        [*(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, [f"{name}.{d}" for d in range(4)]) for name in inputs),
         onnx.helper.make_tensor_value_info(index, onnx.TensorProto.INT64, ["rows"])],
        [onnx.helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, ["rows", *(f"{name}.{d}" for d in range(1, 4))])
         for name, out in zip(inputs, outputs)],
    )
    onnx.save(hand_built_model(graph, opset), package / REORDER_FILE)


def write_search_graph(package: Path, opset: int) -> None:
    """search.onnx: the beam step's candidate scores, as serving.translator's numpy path computes
    them: LogSoftmax over the vocabulary, -inf at the banned (row, token) pairs (ScatterND; a
    pair given twice writes the same -inf), plus each row's running score, each sentence's rows
    side by side (Reshape to grid), TopK k (best first, ties by lower index, as torch.topk)."""
    (logits, running, banned, grid, k), (top_scores, top_index) = search_names()
    helper, tensor = onnx.helper, onnx.TensorProto
    nodes = [
        helper.make_node("LogSoftmax", [logits], ["log_probs"], axis=-1),
        helper.make_node("Shape", [banned], ["banned_count"], start=0, end=1),
        helper.make_node("Expand", ["minus_infinity", "banned_count"], ["banned_scores"]),
        helper.make_node("ScatterND", ["log_probs", banned, "banned_scores"], ["allowed"]),
        helper.make_node("Add", ["allowed", running], ["total"]),
        helper.make_node("Reshape", ["total", grid], ["per_sentence"]),
        helper.make_node("TopK", ["per_sentence", k], [top_scores, top_index], axis=-1, largest=1, sorted=1),
    ]
    graph = helper.make_graph(
        nodes,
        "search",
        [helper.make_tensor_value_info(logits, tensor.FLOAT, ["rows", "vocab"]),
         helper.make_tensor_value_info(running, tensor.FLOAT, ["rows", 1]),
         helper.make_tensor_value_info(banned, tensor.INT64, ["banned", 2]),
         helper.make_tensor_value_info(grid, tensor.INT64, [2]),
         helper.make_tensor_value_info(k, tensor.INT64, [1])],
        [helper.make_tensor_value_info(top_scores, tensor.FLOAT, ["sentences", "k"]),
         helper.make_tensor_value_info(top_index, tensor.INT64, ["sentences", "k"])],
        [onnx.numpy_helper.from_array(np.array([-np.inf], dtype=np.float32), "minus_infinity")],
    )
    onnx.save(hand_built_model(graph, opset), package / SEARCH_FILE)


def quantize_graphs(package: Path) -> dict:
    """encoder.int8.onnx, decoder.int8.onnx and decoder_with_past.int8.onnx beside the fp32 graphs."""
    settings = {}
    for name in GRAPH_FILES:
        settings = quantize_graph(package / name, package / int8_file(name), **QUANTIZATION)
    return settings


def describe_graph(path: Path, opset: int) -> dict:
    """Inputs and outputs as the file declares them; the requested opset, no external data."""
    model = checked_graph(path, opset)
    return {"inputs": [describe_value(v) for v in model.graph.input], "outputs": [describe_value(v) for v in model.graph.output]}


def generation_spec(model: PreTrainedModel, p: Params) -> dict:
    """What the runtime needs to decode as model.generate does: the model's own processors
    (suppressed tokens, forced </s>) and the run's decoding (evaluate.generation)."""
    config = model.generation_config
    for name, defaults in UNSUPPORTED_GENERATION.items():
        value = getattr(config, name, None)
        if value not in defaults:
            raise ExportError(f"models/target generation_config.{name} = {value!r}: the ONNX runtime does not apply it")
    bad = config.bad_words_ids or []
    if any(len(words) != 1 for words in bad):
        raise ExportError(f"models/target generation_config.bad_words_ids {bad}: only single-token entries are supported")
    g = p.evaluate.generation
    return {
        "max_new_tokens": g.max_new_tokens,
        "num_beams": g.num_beams,
        "length_penalty": g.length_penalty,
        # as tasks.translation.model.generate_ids (evaluate) decodes: beams stop when full
        "early_stopping": True,
        "forced_eos_token_id": config.forced_eos_token_id,
        "suppressed_ids": sorted({w[0] for w in bad} | set(config.suppress_tokens or [])),
        "no_repeat_ngram_size": g.no_repeat_ngram_size,
        "repetition_penalty": g.repetition_penalty,
    }


# ---------------------------------------------------------------- package


def build_manifest(
    p: Params, package: Path, model: PreTrainedModel, tokenizer, ids: dict, model_dir: Path, decoder_kind: str
) -> dict:
    config = model.config
    pair = p.data.target.languages
    tag = language_tag(pair.tgt)
    vocab = tokenizer.get_vocab()
    if tag not in vocab:
        raise HandoffError(f"{model_dir}: tokenizer has no language tag {tag} for target language {pair.tgt!r}: re-run tokenize")
    tokenizer.save_pretrained(str(package))
    if not (package / TOKENIZER_FILE).is_file():
        raise HandoffError(f"{model_dir}: the tokenizer is not a fast one (save_pretrained wrote no {TOKENIZER_FILE})")
    heads = config.decoder_attention_heads
    return {
        "format_version": FORMAT_VERSION,
        "task": TASK,
        "opset": p.export.opset,
        "graphs": {name: describe_graph(package / name, p.export.opset) for name in (ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE)},
        "decoder_graphs": decoder_kind,  # marian_step (tasks/translation/decoder_step.py) or traced
        "languages": {"src": pair.src, "tgt": pair.tgt},
        "language_tag": tag,
        "language_tag_id": vocab[tag],
        "language_tags": {token: i for token, i in sorted(vocab.items()) if token.startswith("<2") and token.endswith(">")},
        "special_tokens": ids,
        "max_length": int(min(tokenizer.model_max_length, p.tokenize.max_length)),
        "num_layers": {"encoder": config.encoder_layers, "decoder": config.decoder_layers},
        "num_heads": heads,
        "head_dim": config.d_model // heads,
        "d_model": config.d_model,
        "vocab_size": int(model.get_output_embeddings().weight.shape[0]),
        "generation": generation_spec(model, p),
        "tokenizer": {"file": TOKENIZER_FILE},
        "files": file_hashes(package),
        SERVE_PRECISION: "int8" if p.export.serve_int8 else "fp32",
        "versions": library_versions(),
        "source": source_info(model_dir),
    }


def run(p: Params, paths: Paths) -> dict:
    """Export, gate, then replace models/onnx and metrics/export.json; on any failure the old
    package stays as it was (atomic_dir) and nothing is written."""
    model_dir = paths.target_model
    model, tokenizer = load_target(model_dir)
    texts = gate_sentences(paths, p.export.parity_samples)
    references = gate_references(paths, len(texts)) if p.export.int8 else []
    ids = special_ids(model, tokenizer)
    started = time.perf_counter()
    with atomic_dir(paths.onnx) as package:
        decoder_kind = export_graphs(model, package, ids["pad_id"], ids["decoder_start_id"], p.export.opset)
        write_reorder_graph(package, model.config.decoder_layers, p.export.opset)
        write_search_graph(package, p.export.opset)
        quantization = quantize_graphs(package) if p.export.int8 else None
        manifest = build_manifest(p, package, model, tokenizer, ids, model_dir, decoder_kind)
        if p.export.int8:
            for name in GRAPH_FILES:
                checked_graph(package / int8_file(name), p.export.opset)
        manifest["fused_nodes"] = {}  # not fused (see the module's docstring)
        write_json_atomic(package / MANIFEST, sealed(manifest))
        translator = OnnxTranslator(package, precision="fp32")  # also proves the hashes verify
        manifest["gate"] = check_gate(model, tokenizer, translator, texts, p, ids)
        if p.export.int8:
            scores = score_precisions(package, texts, references, p.data.target.languages.tgt)
            same = f"identical translations {scores['identical']}/{scores['texts']}"
            manifest["int8"] = int8_gate(scores, p.export, "BLEU", same, quantization)
            manifest["int8"]["bytes"] = {int8_file(name): (package / int8_file(name)).stat().st_size for name in GRAPH_FILES}
        write_json_atomic(package / MANIFEST, sealed(manifest))  # manifest.json is not among the hashed files
    sizes = {name: (paths.onnx / name).stat().st_size for name in (ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE)}
    metrics = {
        "gate": manifest["gate"],
        "onnx_bytes": sizes,
        "opset": p.export.opset,
        "fused_nodes": manifest["fused_nodes"],
        "int8": manifest.get("int8"),
        SERVE_PRECISION: manifest[SERVE_PRECISION],
    }
    write_json_atomic(paths.metrics / "export.json", metrics)
    gate, int8 = manifest["gate"], manifest.get("int8")
    beam = gate.get("beam")
    beam_line = "" if beam is None else f", beam-{beam['num_beams']} ids on {beam['identical']}/{gate['sentences']}"
    int8_line = "" if int8 is None else (
        f"; INT8 BLEU {int8['int8']:.2f} vs fp32 {int8['fp32']:.2f} on {int8['texts']} test sentences "
        f"(drop {int8['drop']:+.2f} <= {int8['max_drop']:g})"
    )
    print(
        f"export: {paths.onnx} ({sum(sizes.values()) / 1e6:.1f} MB, opset {p.export.opset}) in "
        f"{time.perf_counter() - started:.1f}s; greedy ids identical on {gate['identical']}/{gate['sentences']} "
        f"sentences{beam_line}, ORT+KV-cache {gate['speedup']:.1f}x faster than model.generate{int8_line}; "
        f"serving {manifest[SERVE_PRECISION]}"
    )
    return metrics
