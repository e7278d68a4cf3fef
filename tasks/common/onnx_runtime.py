"""Run an exported classification package (models/onnx) with onnxruntime, tokenizers and
numpy only: what deployers use, and what the export stage checks against PyTorch.

No torch or transformers import here (nor anywhere this module imports): a serving image
installs onnxruntime(-gpu), tokenizers and numpy, nothing else.

    classifier = OnnxClassifier("models/onnx")
    classifier.predict(["great value", "broke after a day"])   # -> ["positive", "negative"]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from tasks.common.errors import PipelineError, user_errors
from tasks.common.io import sha256_file  # stdlib only, like everything this module imports

MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
OUTPUT = "logits"
FORMAT_VERSION = 1

# Which field of a tokenizers.Encoding feeds which graph input.
ENCODING_FIELDS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}


class ModelPackageError(PipelineError):
    """The model package is missing a file, altered since export, or of an unknown format."""




def verify_files(package: Path, expected: Mapping[str, str]) -> None:
    """Every file the manifest lists is present with the hash it had at export time."""
    for name, sha in expected.items():
        path = package / name
        if not path.is_file():
            raise ModelPackageError(f"{path}: listed in {MANIFEST} but missing")
        actual = sha256_file(path)
        if actual != sha:
            raise ModelPackageError(
                f"{path}: sha256 {actual[:12]}... does not match {MANIFEST} ({sha[:12]}...): "
                "the file changed after export; re-export or restore it"
            )


def read_manifest(package: Path) -> dict:
    path = package / MANIFEST
    if not path.is_file():
        raise ModelPackageError(f"{path} not found: not an exported model package (run the export stage)")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format_version") != FORMAT_VERSION or manifest.get("task") != "classification":
        raise ModelPackageError(
            f"{path}: format_version {manifest.get('format_version')!r}, task {manifest.get('task')!r}; "
            f"this runtime reads format_version {FORMAT_VERSION}, task classification"
        )
    return manifest


def default_providers() -> list:
    """CUDA when onnxruntime-gpu has it, else CPU. TF32 is switched off on CUDA: it would
    round matmul inputs to 10 mantissa bits for speed, and the package promises PyTorch's logits."""
    available = ort.get_available_providers()
    providers: list = []
    if "CUDAExecutionProvider" in available:
        providers.append(("CUDAExecutionProvider", {"use_tf32": "0"}))
    providers.append("CPUExecutionProvider")
    return providers


def load_tokenizer(path: Path, max_length: int, spec: Mapping) -> Tokenizer:
    """The exported tokenizer set up like the training side: truncate to max_length (special
    tokens included) and pad each batch only to its longest text. Whatever padding or
    truncation tokenizer.json carries is replaced (MiniLM's pads every text to 128 tokens)."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length=max_length, direction=spec.get("truncation_side", "right"))
    tokenizer.enable_padding(
        direction=spec.get("padding_side", "right"), pad_id=spec["pad_token_id"], pad_token=spec["pad_token"]
    )
    return tokenizer


class OnnxClassifier:
    """A models/onnx package, verified against its manifest's hashes when loaded."""

    def __init__(self, package: str | Path, providers: Optional[Sequence] = None, verify: bool = True):
        self.package = Path(package)
        self.manifest = read_manifest(self.package)
        if verify:
            verify_files(self.package, self.manifest["files"])
        self.labels: list[str] = list(self.manifest["labels"])
        self.max_length: int = int(self.manifest["max_length"])
        spec = self.manifest["tokenizer"]
        self.tokenizer = load_tokenizer(self.package / spec["file"], self.max_length, spec)
        providers = list(providers or default_providers())
        self.session = ort.InferenceSession(str(self.package / MODEL_FILE), providers=providers)
        self.input_names = [graph_input.name for graph_input in self.session.get_inputs()]
        unknown = set(self.input_names) - set(ENCODING_FIELDS)
        if unknown:
            raise ModelPackageError(f"{self.package / MODEL_FILE}: graph inputs {sorted(unknown)} are not text inputs")

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """Logits for already-tokenized int64 arrays (only the graph's own inputs are passed)."""
        inputs = {name: np.asarray(feeds[name], dtype=np.int64) for name in self.input_names}
        return self.session.run([OUTPUT], inputs)[0]

    def encode(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        encodings = self.tokenizer.encode_batch(list(texts))
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


def main() -> None:
    """`python -m tasks.common.onnx_runtime [PACKAGE]`: one text per stdin line -> one JSON line
    {"text", "label", "logits"} on stdout. PACKAGE defaults to $MODEL_DIR or models/onnx."""
    package = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("MODEL_DIR", "models/onnx")
    with user_errors("serve"):
        classifier = OnnxClassifier(package)
        texts = [line.rstrip("\n") for line in sys.stdin if line.strip()]
        for text, row in zip(texts, classifier.logits(texts)):
            label = classifier.labels[int(row.argmax())]
            print(json.dumps({"text": text, "label": label, "logits": [round(float(x), 6) for x in row]}))


if __name__ == "__main__":
    main()
