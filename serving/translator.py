"""Run an exported translation package (models/onnx, task "translation") with onnxruntime,
tokenizers and numpy only: what deployers use, and what the export stage checks against
PyTorch's `model.generate`.

No torch or transformers import here (nor anywhere this module imports).

The package holds three graphs (see tasks/translation/export.py):
  encoder.onnx            input_ids, attention_mask -> encoder_hidden_states
  decoder.onnx            first step: the decoder-start token + the encoder's output ->
                          logits, present.{i}.self.{key,value}, present.{i}.cross.{key,value}
  decoder_with_past.onnx  one new token + past.{i}.self.* + past.{i}.cross.* ->
                          logits, present.{i}.self.{key,value} (one position longer)
so each generated token costs one decoder position, not a re-run over the whole prefix (the
KV cache), and the cross-attention keys/values are computed once per sentence. A fourth,
reorder.onnx, gathers the cached tensors by beam (or by the rows still decoding) where they
live: on CUDA the cache stays on the GPU between steps (ONNX Runtime IO binding, kv_cache
"device"); only the logits come back to numpy. On CPU plain `run` calls pass numpy arrays
(kv_cache "host"; IO binding measured no faster there). A fifth, search.onnx, scores a beam
step's candidates on the CPU: log-softmax of the logits, the banned tokens at -inf, plus each
hypothesis's running score, top 2 * beams per sentence (search "graph"); the same numpy
operations (search "numpy", and packages exported before it) cost about twice as much, most of
it numpy's exp over beams x vocab logits.

Greedy and beam search follow transformers' `generate` step for step (same logits
processors, same beam bookkeeping and length-penalised scores), so the exported package
gives the very token ids PyTorch gives; the export stage refuses to ship a package that does not.

    translator = OnnxTranslator("models/onnx")
    translator.translate(["A man rides a bike."])   # -> ["Un homme fait du vélo."], decoded as evaluated
    translator.translate(["A man rides a bike."], num_beams=1)  # greedy; the other settings stay

precision "auto" (the default) loads what the manifest's serve_precision names (export.serve_int8;
fp32 for packages without it), "fp32" the three graphs above, "int8" their dynamic-INT8 twins
(encoder.int8.onnx, ...), whose BLEU drop the export stage measured and gated (manifest "int8").
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from serving.package import (
    PackageError, clean_text, default_providers, graph_files, inference_session, intra_op_options, read_manifest,
    serve_precision,
)

TASK = "translation"
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
DECODER_WITH_PAST_FILE = "decoder_with_past.onnx"
GRAPH_FILES = (ENCODER_FILE, DECODER_FILE, DECODER_WITH_PAST_FILE)
REORDER_FILE = "reorder.onnx"  # packages exported before it have none: their cache stays on the host
KV_CACHE_CHOICES = ("auto", "host", "device")
SEARCH_FILE = "search.onnx"  # packages exported before it have none: their beam step is numpy's
SEARCH_CHOICES = ("auto", "graph", "numpy")
# search "auto" scores a step in search.onnx from this many sentences up. Measured on the en->fr
# demo's vocabulary (8,000) on 2 cores, one thread (bench.decode_speed, two runs): batches of 32
# spent 8-20 % less time in the search with the graph; single sentences none (3-8 % more), the
# graph's fixed cost outweighing numpy's on 4 x 8,000 scores. Only those two sizes were measured.
SEARCH_GRAPH_MIN_SENTENCES = 8
NEG = np.float32(-1.0e9)  # transformers' "never pick this beam" offset, in float32 like it
SMALL_ROW = 256  # top_k: rows this narrow are sorted outright
TOP_K_GROUPS = 64  # top_k: a wide row is read as this many rows of columns


def self_names(prefix: str, layers: int) -> list[str]:
    return [f"{prefix}.{i}.self.{kv}" for i in range(layers) for kv in ("key", "value")]


def cross_names(prefix: str, layers: int) -> list[str]:
    return [f"{prefix}.{i}.cross.{kv}" for i in range(layers) for kv in ("key", "value")]


def reorder_names(layers: int) -> tuple[list[str], str, list[str]]:
    """reorder.onnx's inputs (the 2 * layers cached tensors, self or cross), index, outputs."""
    count = 2 * layers
    return [f"kv.{i}" for i in range(count)], "index", [f"taken.{i}" for i in range(count)]


def search_names() -> tuple[list[str], list[str]]:
    """search.onnx's inputs and outputs: logits (rows, vocab), running_scores (rows, 1), banned
    (n, 2) (row, token) pairs, grid [sentences, -1] (int64), k [1] (int64) -> top_scores,
    top_index (sentences, k), flat indices over beams x vocab."""
    return ["logits", "running_scores", "banned", "grid", "k"], ["top_scores", "top_index"]


def trim(ids: Sequence[int], eos_id: int, pad_id: int) -> list[int]:
    """A generated row as both runtimes are compared: up to and including its first </s>,
    without trailing padding (transformers pads finished rows, and fills unused beam slots
    with </s>)."""
    ids = [int(i) for i in ids]
    if eos_id in ids:
        ids = ids[: ids.index(eos_id) + 1]
    while ids and ids[-1] == pad_id:
        ids.pop()
    return ids


def block_repeated_ngrams(scores: np.ndarray, sequences: np.ndarray, size: int) -> None:
    """NoRepeatNGramLogitsProcessor over every row at once: a token that would complete an
    n-gram of `size` already in its row's `sequences` gets -inf in `scores` (in place)."""
    rows, tokens = repeated_ngrams(sequences, size)
    scores[rows, tokens] = -np.inf


def repeated_ngrams(sequences: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, tokens): each token that would complete an n-gram of `size` already in its row of
    `sequences` (a pair may come more than once)."""
    length = sequences.shape[1]
    if size < 1 or length < size:  # no complete n-gram yet
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = length - size + 1  # n-grams in each row; the last size-1 tokens are the prefix to match
    match = np.ones((sequences.shape[0], starts), dtype=bool)
    for offset in range(size - 1):  # n-gram positions compared one at a time: no window views
        match &= sequences[:, offset : offset + starts] == sequences[:, starts + offset, None]
    rows, first = np.nonzero(match)
    return rows, sequences[rows, first + size - 1]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Over the last axis, in float32; in place when `logits` is float32 already (a step's
    logits are a fresh array that nothing else reads: no copy of batch x beams x vocab)."""
    scores = logits.astype(np.float32, copy=False)
    scores -= scores.max(axis=-1, keepdims=True)
    scores -= np.log(np.exp(scores).sum(axis=-1, keepdims=True))
    return scores


def sorted_top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    index = np.argsort(-scores, axis=-1, kind="stable")[:, :k]
    return scores[np.arange(len(scores))[:, None], index], index


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Like torch.topk along the last axis of a 2-D array: the k largest, best first, ties by lower
    index. Narrow rows (the 2 x beams candidates) are sorted outright. A wide row (beams x vocab
    scores) is cut down first, as a grid of `groups` rows: its k-th largest column maximum is a
    value at least k scores reach, so only columns reaching it can hold the top k, and of their
    scores only those reaching it; those few are sorted in full. Every step is whole-array work
    over all rows; a partition of the whole row was most of a beam step at batch 32."""
    rows, width = scores.shape
    if width <= max(4 * k, SMALL_ROW):
        return sorted_top_k(scores, k)
    groups = min(TOP_K_GROUPS, width // k)  # at least k columns
    stride = -(-width // groups)
    grid = scores
    if stride * groups != width:  # pad to a full grid with scores that never win
        grid = np.full((rows, stride * groups), -np.inf, dtype=scores.dtype)
        grid[:, :width] = scores
    grid = grid.reshape(rows, groups, stride)
    column_max = grid.max(axis=1)
    if np.isnan(column_max).any():  # a NaN hides its column's other scores from the compare
        return sorted_top_k(scores, k)
    floor = -np.partition(-column_max, k - 1, axis=-1)[:, k - 1]
    row, column = np.nonzero(column_max >= floor[:, None])
    values = grid[row, :, column]  # (candidate columns, groups)
    index = column[:, None] + stride * np.arange(groups)
    row = np.broadcast_to(row[:, None], values.shape)
    keep = (values >= floor[row]) & (index < width)
    values, index, row = values[keep], index[keep], row[keep]
    order = np.lexsort((index, -values, row))  # by row, best first, ties by lower index
    starts = np.searchsorted(row[order], np.arange(rows))
    picked = order[starts[:, None] + np.arange(k)]
    return values[picked], index[picked]


def gather_beams(tensor: np.ndarray, index: np.ndarray) -> np.ndarray:
    """tensor (batch, beams, ...) picked along beams by index (batch, k)."""
    return tensor[np.arange(index.shape[0])[:, None], index]


@dataclass
class BeamState:
    """Beam search's per-sentence arrays (sentences still decoding x beams): running
    hypotheses and their scores, the kept finished ones, and `rows`, each sentence's input row."""

    rows: np.ndarray
    running: np.ndarray
    running_scores: np.ndarray
    sequences: np.ndarray
    scores: np.ndarray
    finished: np.ndarray
    improvable: np.ndarray

    @classmethod
    def start(cls, batch: int, beams: int, max_length: int, start_id: int, fill: int) -> BeamState:
        """Every beam holds the decoder start; only the first scores 0 (the others -1e9, so the
        first step does not pick one token `beams` times); `fill` pads as transformers does."""
        running = np.full((batch, beams, max_length), fill, dtype=np.int64)
        running[:, :, 0] = start_id
        running_scores = np.zeros((batch, beams), dtype=np.float32)
        running_scores[:, 1:] = NEG
        return cls(
            rows=np.arange(batch),
            running=running,
            running_scores=running_scores,
            sequences=running.copy(),
            scores=np.full((batch, beams), NEG, dtype=np.float32),
            finished=np.zeros((batch, beams), dtype=bool),
            improvable=np.ones((batch, 1), dtype=bool),
        )

    def subset(self, keep: np.ndarray) -> BeamState:
        return BeamState(**{name: value[keep] for name, value in vars(self).items()})


def session_options(threads: Optional[int]) -> ort.SessionOptions:
    """`threads` intra-op threads per session; None: TRANSLATOR_THREADS from the environment,
    else 1. One token at a time is a chain of small kernels: on the 2-core machine of the
    README's figures a second thread made one sentence at a time 1.2-1.8x slower and batches
    of 32 1.1-1.4x faster with beam 4 (128 hypotheses a step), greedy no faster
    (bench/decode_speed.py --threads 1 2). One thread suits a server, which scales by running
    more workers; a batch job on an otherwise idle machine sets TRANSLATOR_THREADS to its cores."""
    value = threads if threads is not None else os.environ.get("TRANSLATOR_THREADS") or 1
    if not str(value).isdigit() or int(value) < 1:
        raise PackageError(f"threads (or TRANSLATOR_THREADS) must be a whole number >= 1, got {value!r}")
    return intra_op_options(int(value))


class OnnxTranslator:
    """A models/onnx translation package, verified against its manifest's hashes when loaded."""

    def __init__(
        self,
        package: str | Path,
        providers: Optional[Sequence] = None,
        verify: bool = True,
        threads: Optional[int] = None,
        precision: str = "auto",
        kv_cache: str = "auto",
        search: str = "auto",
    ):
        self.package = Path(package)
        self.manifest = read_manifest(self.package, TASK, verify)
        self.precision: str = serve_precision(self.manifest, self.package, TASK, precision)
        self.graph_files = graph_files(TASK, self.precision)
        special = self.manifest["special_tokens"]
        self.pad_id, self.eos_id = int(special["pad_id"]), int(special["eos_id"])
        self.start_id = int(special["decoder_start_id"])
        self.tag_id = int(self.manifest["language_tag_id"])
        self.max_length = int(self.manifest["max_length"])
        self.layers = int(self.manifest["num_layers"]["decoder"])
        self.generation = dict(self.manifest["generation"])
        self.tokenizer = Tokenizer.from_file(str(self.package / self.manifest["tokenizer"]["file"]))
        self.tokenizer.no_padding()  # padding and truncation are done here, per the contract
        self.tokenizer.no_truncation()
        providers = list(providers or default_providers())
        options = session_options(threads)
        self.encoder, self.decoder, self.decoder_with_past = (
            inference_session(self.package / name, providers, options) for name in self.graph_files
        )
        self.present_self = self_names("present", self.layers)
        self.present_cross = cross_names("present", self.layers)
        self.reorder: Optional[ort.InferenceSession] = None
        self.device = self.cache_device(kv_cache, providers, options)
        self.search = self.search_session(search, options)
        self.search_min_sentences = 1 if search == "graph" else SEARCH_GRAPH_MIN_SENTENCES

    def cache_device(self, kv_cache: str, providers: list, options) -> Optional[tuple[str, int]]:
        """Where the KV cache lives between steps: None for numpy on the host (plain `run`), or
        the (device type, id) its OrtValues stay on, every graph run through IO binding and the
        reorders through reorder.onnx. "auto": the device when the decoder runs on CUDA and the
        package has reorder.onnx; "device" also works on CPU (what the tests check it with)."""
        if kv_cache not in KV_CACHE_CHOICES:
            raise PackageError(f"kv_cache {kv_cache!r} is not one of {list(KV_CACHE_CHOICES)}")
        on_cuda = self.decoder_with_past.get_providers()[0] == "CUDAExecutionProvider"
        has_reorder = REORDER_FILE in self.manifest["files"]
        if kv_cache == "host" or (kv_cache == "auto" and not (on_cuda and has_reorder)):
            return None
        if not has_reorder:
            raise PackageError(f"{self.package}: kv_cache 'device' needs {REORDER_FILE}, which this package (exported "
                               "before it) does not list: re-export it, or use kv_cache 'host'")
        self.reorder = inference_session(self.package / REORDER_FILE, providers, options)
        return ("cuda", 0) if on_cuda else ("cpu", 0)

    def search_session(self, search: str, options) -> Optional[ort.InferenceSession]:
        """The session that scores beam candidates (search.onnx), or None for numpy. "auto": the
        graph when the package has it, for steps of SEARCH_GRAPH_MIN_SENTENCES sentences or more;
        "graph": for every step it can score. On the CPU always: the logits come back to the host for
        the search anyway, and the graph's work is a few passes over beams x vocab floats."""
        if search not in SEARCH_CHOICES:
            raise PackageError(f"search {search!r} is not one of {list(SEARCH_CHOICES)}")
        has_graph = SEARCH_FILE in self.manifest["files"]
        if search == "numpy" or (search == "auto" and not has_graph):
            return None
        if not has_graph:
            raise PackageError(f"{self.package}: search 'graph' needs {SEARCH_FILE}, which this package (exported "
                               "before it) does not list: re-export it, or use search 'numpy'")
        return inference_session(self.package / SEARCH_FILE, ["CPUExecutionProvider"], options)

    # ------------------------------------------------------------ encoding

    def encode_ids(self, text: str) -> list[int]:
        """The contract's encoder input: <2tgt> + subword ids + </s>, at most max_length ids, of
        the text cleaned as ingest cleaned the training texts (clean_text)."""
        words = self.tokenizer.encode(clean_text(text), add_special_tokens=False).ids[: self.max_length - 2]
        return [self.tag_id, *words, self.eos_id]

    def pad(self, rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
        """Right-pad to the batch's longest row: input_ids and attention_mask (int64)."""
        width = max(len(row) for row in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)], mask[i, : len(row)] = row, 1
        return ids, mask

    def plan_batches(self, texts: Sequence[str], batch_size: int) -> list[list[int]]:
        """Indices of `texts` in batches of similar length (little padding): the batching
        generate_ids uses, exposed so a reference run can use the very same batches."""
        lengths = [len(self.encode_ids(text)) for text in texts]
        order = [int(i) for i in np.argsort(lengths, kind="stable")]
        return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]

    # ------------------------------------------------------------ graphs

    def bound(self, session, host_inputs: dict, device_inputs: dict, host_outputs: list[str], device_outputs: list[str]) -> list:
        """One run through IO binding: numpy inputs copied in, OrtValues read where they are;
        `host_outputs` come back as numpy arrays, `device_outputs` stay on self.device."""
        binding = session.io_binding()
        for name, value in host_inputs.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        for name, value in device_inputs.items():
            binding.bind_ortvalue_input(name, value)
        for name in host_outputs:
            binding.bind_output(name, "cpu")
        for name in device_outputs:
            binding.bind_output(name, *self.device)
        session.run_with_iobinding(binding)
        outputs = binding.get_outputs()
        return [value.numpy() for value in outputs[: len(host_outputs)]] + list(outputs[len(host_outputs) :])

    def take(self, tensors: list, index: np.ndarray) -> list:
        """Each cached tensor's rows `index` (beams picked, or the rows still decoding)."""
        if self.device is None:
            return [tensor[index] for tensor in tensors]
        inputs, index_name, outputs = reorder_names(self.layers)
        return self.bound(self.reorder, {index_name: index.astype(np.int64)}, dict(zip(inputs, tensors)), [], outputs)

    def encode(self, ids: np.ndarray, mask: np.ndarray):
        feeds = {"input_ids": ids, "attention_mask": mask}
        if self.device is None:
            return self.encoder.run(None, feeds)[0]
        return self.bound(self.encoder, feeds, {}, [], ["encoder_hidden_states"])[0]

    def first_step(self, hidden: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, list, list]:
        """The decoder-start token through decoder.onnx: last logits, self k/v, cross k/v."""
        start = np.full((mask.shape[0], 1), self.start_id, dtype=np.int64)
        feeds = {"input_ids": start, "encoder_attention_mask": mask}
        if self.device is None:
            out = self.decoder.run(["logits", *self.present_self, *self.present_cross], {**feeds, "encoder_hidden_states": hidden})
        else:
            out = self.bound(self.decoder, feeds, {"encoder_hidden_states": hidden}, ["logits"], [*self.present_self, *self.present_cross])
        n = len(self.present_self)
        return out[0][:, -1, :], out[1 : 1 + n], out[1 + n :]

    def next_step(self, tokens: np.ndarray, mask: np.ndarray, past_self: list, cross: list) -> tuple[np.ndarray, list]:
        feeds = {"input_ids": tokens.reshape(-1, 1).astype(np.int64), "encoder_attention_mask": mask}
        cached = dict(zip(self_names("past", self.layers), past_self))
        cached.update(zip(cross_names("past", self.layers), cross))
        if self.device is None:
            out = self.decoder_with_past.run(["logits", *self.present_self], {**feeds, **cached})
        else:
            out = self.bound(self.decoder_with_past, feeds, cached, ["logits"], self.present_self)
        return out[0][:, -1, :], out[1:]

    # ------------------------------------------------------------ logits processors

    def process(self, scores: np.ndarray, sequences: np.ndarray, max_length: int, options: dict) -> np.ndarray:
        """transformers' logits processors, in its order: repetition penalty, no-repeat n-grams,
        suppressed tokens (single-token bad_words_ids, suppress_tokens), forced_eos_token_id at
        the last position. `sequences` are the decoder ids so far, the start token included.
        In place when `scores` is float32: each step's scores are a fresh array."""
        scores = scores.astype(np.float32, copy=False)
        cur_len = sequences.shape[1]
        penalty = options.get("repetition_penalty", 1.0)
        if penalty != 1.0:
            seen = np.take_along_axis(scores, sequences, axis=1)
            np.put_along_axis(scores, sequences, np.where(seen < 0, seen * penalty, seen / penalty), axis=1)
        block_repeated_ngrams(scores, sequences, options.get("no_repeat_ngram_size", 0))
        suppressed = self.generation.get("suppressed_ids") or []
        if suppressed:
            scores[:, suppressed] = -np.inf
        if self.forces_eos(cur_len, max_length):
            scores[:] = -np.inf
            scores[:, self.generation["forced_eos_token_id"]] = 0.0
        return scores

    def forces_eos(self, cur_len: int, max_length: int) -> bool:
        return self.generation.get("forced_eos_token_id") is not None and cur_len == max_length - 1

    def banned(self, sequences: np.ndarray, options: dict) -> np.ndarray:
        """The (row, token) pairs `process` sets to -inf when only banning applies (no-repeat
        n-grams, suppressed tokens), as an (n, 2) int64 array."""
        rows, tokens = repeated_ngrams(sequences, options.get("no_repeat_ngram_size", 0))
        suppressed = self.generation.get("suppressed_ids") or []
        if suppressed:
            rows = np.concatenate([rows, np.repeat(np.arange(len(sequences)), len(suppressed))])
            tokens = np.concatenate([tokens, np.tile(np.asarray(suppressed, dtype=np.int64), len(sequences))])
        return np.stack([rows, tokens], axis=1).astype(np.int64, copy=False)

    def best_candidates(self, logits: np.ndarray, so_far: np.ndarray, running_scores: np.ndarray, max_length: int,
                        options: dict, keep: int) -> tuple[np.ndarray, np.ndarray]:
        """A beam step's `keep` best continuations per sentence: their scores (the log-softmax of
        the logits after the logits processors, plus the running score of the hypothesis they
        extend) and flat indices over beams x vocab, best first, ties by lower index (torch.topk's
        order). search.onnx computes it for steps of enough sentences that only ban tokens (a
        repetition penalty rescales scores, the last step forces </s>: those go through `process`),
        and unless a score comes out NaN, which the numpy path orders as generate does."""
        batch = running_scores.shape[0]
        penalised = options.get("repetition_penalty", 1.0) != 1.0
        graph = self.search is not None and batch >= self.search_min_sentences
        if graph and not penalised and not self.forces_eos(so_far.shape[1], max_length):
            feeds = {
                "logits": logits.astype(np.float32, copy=False),
                "running_scores": running_scores.reshape(-1, 1),
                "banned": self.banned(so_far, options),
                "grid": np.array([batch, -1], dtype=np.int64),
                "k": np.array([keep], dtype=np.int64),
            }
            top_scores, top_index = self.search.run(None, feeds)
            if not np.isnan(top_scores).any():
                return top_scores, top_index
        log_probs = self.process(log_softmax(logits), so_far, max_length, options)
        vocab = log_probs.shape[-1]
        return top_k((log_probs.reshape(batch, -1, vocab) + running_scores[:, :, None]).reshape(batch, -1), keep)

    # ------------------------------------------------------------ search

    def greedy(self, ids: np.ndarray, mask: np.ndarray, max_new_tokens: int, options: dict) -> list[list[int]]:
        """Argmax decoding. A row leaves the batch at its </s>: its cache rows are dropped, so
        the next steps run on the unfinished rows only (generate keeps padding finished rows,
        which changes nothing in the ids: they are trimmed at </s>)."""
        hidden = self.encode(ids, mask)
        logits, past_self, cross = self.first_step(hidden, mask)
        max_length = 1 + max_new_tokens
        rows = np.arange(len(ids))  # the input row of each row still decoding
        history = np.full((len(ids), 1), self.start_id, dtype=np.int64)
        out: list[list[int]] = [[] for _ in range(len(ids))]
        for step in range(max_new_tokens):
            tokens = self.process(logits, history, max_length, options).argmax(axis=-1)
            history = np.concatenate([history, tokens[:, None]], axis=1)
            done = (tokens == self.eos_id) | (step == max_new_tokens - 1)
            for row, generated in zip(rows[done], history[done]):
                out[row] = trim(generated[1:], self.eos_id, self.pad_id)
            if done.all():
                break
            if done.any():
                going = ~done
                rows, history, mask, tokens = rows[going], history[going], mask[going], tokens[going]
                past_self, cross = self.take(past_self, np.flatnonzero(going)), self.take(cross, np.flatnonzero(going))
            logits, past_self = self.next_step(tokens, mask, past_self, cross)
        return out

    def beam(self, ids: np.ndarray, mask: np.ndarray, beams: int, max_new_tokens: int, options: dict) -> list[list[int]]:
        """transformers' vectorised beam search (GenerationMixin._beam_search), in numpy:
        keep 2*beams candidates a step, finished hypotheses scored sum(logprobs) / length**lp,
        the same early-stop heuristic, the KV cache reordered by the chosen beams. Every step is
        whole-array work over all sentences' hypotheses; a sentence whose kept hypotheses can no
        longer change (generate's early-stop heuristic, or all beams finished under
        early_stopping=True) leaves the batch, cache and all, as greedy rows do at </s>."""
        early_stopping, length_penalty = options["early_stopping"], options["length_penalty"]
        max_length, cur_len = 1 + max_new_tokens, 1
        keep = 2 * beams  # max(2, 1 + number of eos ids) * beams, with one eos id
        top_mask = np.arange(keep) < beams

        # The encoder and the first decoder step once per sentence: every beam starts from the
        # same token, so their first logits and caches are copies (generate computes them per beam).
        logits, past_self, cross = self.first_step(self.encode(ids, mask), mask)
        spread = np.repeat(np.arange(len(ids)), beams)  # each sentence's row, once per beam
        logits, mask = logits[spread], mask[spread]
        past_self, cross = self.take(past_self, spread), self.take(cross, spread)

        s = BeamState.start(len(ids), beams, max_length, self.start_id, self.pad_id or self.eos_id)
        out: list[list[int]] = [[] for _ in range(len(ids))]
        while True:
            batch = len(s.rows)
            so_far = s.running[:, :, :cur_len].reshape(batch * beams, cur_len)
            vocab = logits.shape[-1]
            top_scores, top_index = self.best_candidates(logits, so_far, s.running_scores, max_length, options, keep)
            from_beam, tokens = top_index // vocab, top_index % vocab
            candidates = gather_beams(s.running, from_beam)
            candidates[:, :, cur_len] = tokens
            hits = (tokens == self.eos_id) | (cur_len + 1 >= max_length)

            # the best `beams` unfinished candidates go on
            alive = top_scores + hits.astype(np.float32) * NEG
            _, pick = top_k(alive, beams)
            s.running, s.running_scores = gather_beams(candidates, pick), gather_beams(alive, pick)
            parent = gather_beams(from_beam, pick)  # the beam each survivor came from

            # finished candidates among the top `beams` may enter the kept hypotheses; on most
            # steps none finished, and the merge would keep the kept ones as they are (every
            # other candidate scores NEG or less and loses the tie to them: they come first)
            just_done = hits & top_mask[None, :]
            if just_done.any():
                self.keep_finished(s, candidates, top_scores, just_done, cur_len ** length_penalty, early_stopping)

            cur_len += 1
            length = max_length - 1 if early_stopping == "never" and length_penalty > 0.0 else cur_len - 1
            best_running = s.running_scores[:, :1] / np.float32(length ** length_penalty)
            worst_final = np.where(s.finished, s.scores.min(axis=1, keepdims=True), NEG)
            s.improvable = s.improvable & (best_running > worst_final).any(axis=-1, keepdims=True)
            settled = ~s.improvable[:, 0] | (s.finished.all(axis=-1) & (early_stopping is True))
            if hits.all():  # the length limit: every sentence ends here
                settled[:] = True
            for row, best_sequence in zip(s.rows[settled], s.sequences[settled, 0]):
                out[row] = trim(best_sequence[1:], self.eos_id, self.pad_id)
            if settled.all():
                break
            going = ~settled
            reorder = (parent + (np.arange(batch) * beams)[:, None])[going].reshape(-1)
            if len(reorder) < batch * beams or (reorder != np.arange(batch * beams)).any():  # often every beam extends itself
                past_self = self.take(past_self, reorder)
            if settled.any():
                s = s.subset(going)
                going_beams = np.flatnonzero(np.repeat(going, beams))
                mask, cross = mask[going_beams], self.take(cross, going_beams)
            logits, past_self = self.next_step(s.running[:, :, cur_len - 1].reshape(-1), mask, past_self, cross)
        return out

    @staticmethod
    def keep_finished(s: BeamState, candidates: np.ndarray, top_scores: np.ndarray, just_done: np.ndarray,
                      length_norm: float, early_stopping: bool | str) -> None:
        """Merge the candidates that just finished (scored sum(logprobs) / length**lp) into each
        sentence's kept hypotheses: the best `beams` of both stay, best first (in place)."""
        beams = s.scores.shape[1]
        final = top_scores / np.float32(length_norm)
        full = s.finished.all(axis=-1, keepdims=True) & (early_stopping is True)
        final = final + full.astype(np.float32) * NEG
        final = final + (~s.improvable).astype(np.float32) * NEG
        final = final + (~just_done).astype(np.float32) * NEG
        merged_scores = np.concatenate([s.scores, final], axis=1)
        _, best = top_k(merged_scores, beams)
        s.sequences = gather_beams(np.concatenate([s.sequences, candidates], axis=1), best)
        s.scores = gather_beams(merged_scores, best)
        s.finished = gather_beams(np.concatenate([s.finished, just_done], axis=1), best)

    # ------------------------------------------------------------ public

    def generate_ids(
        self,
        texts: Sequence[str],
        num_beams: Optional[int] = None,
        max_new_tokens: Optional[int] = None,
        length_penalty: Optional[float] = None,
        batch_size: int = 32,
        early_stopping: Optional[bool | str] = None,
        no_repeat_ngram_size: Optional[int] = None,
        repetition_penalty: Optional[float] = None,
    ) -> list[list[int]]:
        """Generated ids per text, in input order, without the decoder-start token, ending at
        the first </s> (included) when there is one. Texts are batched by length. Decoding is
        the manifest's (as the evaluate stage scored it and the export gate checked it); each
        argument given overrides that one setting and means what it means to transformers'
        generate (num_beams=1: greedy, with the manifest's repetition guards still on)."""
        options = self.decoding(
            num_beams=num_beams, max_new_tokens=max_new_tokens, length_penalty=length_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size, repetition_penalty=repetition_penalty,
        )
        beams, max_new = int(options.pop("num_beams")), int(options.pop("max_new_tokens"))
        if beams < 1:
            raise ValueError(f"num_beams must be at least 1, got {beams}")
        options["early_stopping"] = self.generation.get("early_stopping", False) if early_stopping is None else early_stopping
        out: list[list[int]] = [[] for _ in texts]
        for index in self.plan_batches(texts, batch_size):
            ids, mask = self.pad([self.encode_ids(texts[i]) for i in index])
            if beams == 1:
                rows = self.greedy(ids, mask, max_new, options)
            else:
                rows = self.beam(ids, mask, beams, max_new, options)
            for i, row in zip(index, rows):
                out[i] = row
        return out

    def decoding(self, **overrides) -> dict:
        """Decoding options as the package was evaluated (manifest "generation"), with
        `overrides` that are not None on top: what generate_ids uses."""
        g = self.generation
        options = {
            "num_beams": g.get("num_beams", 1),
            "max_new_tokens": g.get("max_new_tokens"),
            "length_penalty": g.get("length_penalty", 1.0),
            "no_repeat_ngram_size": g.get("no_repeat_ngram_size", 0),
            "repetition_penalty": g.get("repetition_penalty", 1.0),
        }
        options.update({name: value for name, value in overrides.items() if value is not None})
        return options

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def translate(self, texts: Sequence[str], **generation) -> list[str]:
        """Translations into the package's target language, decoded as the manifest says unless
        an argument overrides a setting (arguments as generate_ids)."""
        return [self.decode(ids) for ids in self.generate_ids(texts, **generation)]
