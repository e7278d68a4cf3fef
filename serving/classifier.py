"""Run an exported classification package (models/onnx) with onnxruntime, tokenizers and
numpy only: what deployers use, and what the export stage checks against PyTorch.

No torch or transformers import here (nor anywhere this module imports): a serving image
installs onnxruntime(-gpu), tokenizers and numpy, nothing else.

    classifier = OnnxClassifier("models/onnx")
    classifier.predict(["great value", "broke after a day"])   # -> ["positive", "negative"]
    OnnxClassifier("models/onnx", precision="int8")            # model.int8.onnx (dynamic INT8, CPU)
    OnnxClassifier("models/onnx", threads=2)                   # 2 intra-op threads (default: onnxruntime's)

precision "auto" (the default) loads what the manifest's serve_precision names (export.serve_int8;
fp32 for packages without it), "fp32" model.onnx, "int8" model.int8.onnx, whose macro-F1 drop
the export stage measured and gated (manifest "int8").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional

import numpy as np
from tokenizers import Tokenizer

from serving.package import (
    PackageError, clean_text, default_providers, graph_files, inference_session, intra_op_options, read_manifest,
    serve_precision,
)

TASK = "classification"
MODEL_FILE = "model.onnx"
INT8_MODEL_FILE = "model.int8.onnx"
OUTPUT = "logits"

# Which field of a tokenizers.Encoding feeds which graph input.
ENCODING_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities from logits, row-wise, in float64 (a row sums to 1 within 1e-12)."""
    shifted = np.exp(logits.astype(np.float64) - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def load_tokenizer(path: Path, max_length: int, spec: Mapping) -> Tokenizer:
    """The exported tokenizer set up like the training side: truncate to max_length (special
    tokens included) and pad each batch only to its longest text. Whatever padding or
    truncation tokenizer.json carries is replaced (MiniLM's pads every text to 128 tokens), so
    a text longer than the model's positions is truncated, never an onnxruntime error."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length=max_length, direction=spec.get("truncation_side", "right"))
    tokenizer.enable_padding(
        direction=spec.get("padding_side", "right"), pad_id=spec["pad_token_id"], pad_token=spec["pad_token"]
    )
    return tokenizer


class OnnxClassifier:
    """A models/onnx package, verified against its manifest's hashes when loaded."""

    def __init__(
        self,
        package: str | Path,
        providers: Optional[Sequence] = None,
        verify: bool = True,
        precision: str = "auto",
        threads: Optional[int] = None,
    ):
        self.package = Path(package)
        self.manifest = read_manifest(self.package, TASK, verify)
        self.precision: str = serve_precision(self.manifest, self.package, TASK, precision)
        (self.graph_file,) = graph_files(TASK, self.precision)
        self.labels: list[str] = list(self.manifest["labels"])
        self.max_length: int = int(self.manifest["max_length"])
        spec = self.manifest["tokenizer"]
        self.tokenizer = load_tokenizer(self.package / spec["file"], self.max_length, spec)
        providers = list(providers or default_providers())
        self.session = inference_session(self.package / self.graph_file, providers, intra_op_options(threads))
        self.input_names = [graph_input.name for graph_input in self.session.get_inputs()]
        unknown = set(self.input_names) - set(ENCODING_FIELDS)
        if unknown:
            raise PackageError(f"{self.package / self.graph_file}: graph inputs {sorted(unknown)} are not text inputs")

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """Logits for already-tokenized int64 arrays (only the graph's own inputs are passed)."""
        inputs = {name: np.asarray(feeds[name], dtype=np.int64) for name in self.input_names}
        return self.session.run([OUTPUT], inputs)[0]

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Model inputs for `texts`, each cleaned as ingest cleaned the training texts (clean_text):
        a tokenizer that keeps spaces or control characters would otherwise see text the model never did."""
        encodings = self.tokenizer.encode_batch([clean_text(text) for text in texts])
        return {
            name: np.array([getattr(enc, ENCODING_FIELDS[name]) for enc in encodings], dtype=np.int64)
            for name in self.input_names
        }

    def logits(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Logits in the order of `texts`. Texts are grouped by length so each padded batch
        wastes little compute; padding does not change a text's logits."""
        texts = list(texts)
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        order = np.argsort([len(text) for text in texts], kind="stable")
        for start in range(0, len(texts), batch_size):
            index = order[start : start + batch_size]
            out[index] = self.run(self.encode([texts[i] for i in index]))
        return out

    def predict(self, texts: Sequence[str], batch_size: int = 32) -> list[str]:
        return [self.labels[i] for i in self.logits(texts, batch_size).argmax(axis=-1)]
