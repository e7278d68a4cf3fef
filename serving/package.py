"""Read and verify an exported model package (models/onnx) before anything runs it.

A package is a folder: the ONNX graph(s), tokenizer.json and manifest.json. The manifest lists
every other file with its sha256 and carries a digest of its own content, written by the export
stage, so a file changed or a manifest edited after export (labels swapped, say) is refused
with one line instead of giving wrong answers. Standard library only (plus onnxruntime for the
providers): `serving` never imports torch, transformers or anything from `tasks`.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

MANIFEST = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
FORMAT_VERSION = 1
DIGEST_FIELD = "manifest_sha256"
# What every package's manifest holds, and what each task adds.
REQUIRED = ("format_version", "task", "opset", "files", "tokenizer", DIGEST_FIELD)
TASK_REQUIRED = {
    "classification": ("labels", "max_length", "inputs", "outputs"),
    "translation": ("graphs", "special_tokens", "language_tag_id", "generation", "max_length", "num_layers"),
}
GRAPH_FILES = {
    "classification": ("model.onnx",),
    "translation": ("encoder.onnx", "decoder.onnx", "decoder_with_past.onnx"),
}
# Each fp32 graph may have a dynamic-INT8 twin (export.int8): model.onnx -> model.int8.onnx.
# Optional (packages exported before INT8 have none), verified like every file when listed.
PRECISIONS = ("fp32", "int8")
PRECISION_CHOICES = ("auto", *PRECISIONS)
SERVE_PRECISION = "serve_precision"  # the manifest's choice for precision="auto" (absent: fp32)


class PackageError(Exception):
    """The package is missing a file, altered since export, or not one this runtime reads."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    # A copy of tasks.common.io.sha256_file: serving installs without the pipeline.
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_digest(manifest: Mapping[str, Any]) -> str:
    """sha256 of the manifest's canonical JSON, its own digest field left out."""
    content = {key: value for key, value in manifest.items() if key != DIGEST_FIELD}
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def sealed(manifest: Mapping[str, Any]) -> dict:
    """The manifest with its digest: what the export stage writes."""
    return {**manifest, DIGEST_FIELD: manifest_digest(manifest)}


def load_manifest(package: Path) -> dict:
    path = package / MANIFEST
    if not path.is_file():
        raise PackageError(f"{path} not found: not an exported model package (run the export stage)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise PackageError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict):
        raise PackageError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    return manifest


def package_task(package: str | Path) -> str:
    """The task a package was exported for ("classification" or "translation")."""
    package = Path(package)
    task = load_manifest(package).get("task")
    if task not in TASK_REQUIRED:
        raise PackageError(f"{package / MANIFEST}: task {task!r} is not one of {sorted(TASK_REQUIRED)}")
    return task


def check_fields(manifest: dict, path: Path, task: str) -> None:
    if "format_version" not in manifest:
        raise PackageError(f"{path}: required field format_version missing")
    if manifest["format_version"] != FORMAT_VERSION:
        raise PackageError(
            f"{path}: format_version {manifest.get('format_version')!r}; this runtime reads format_version {FORMAT_VERSION}"
        )
    if manifest.get("task") != task:
        raise PackageError(f"{path}: a {manifest.get('task')!r} package, not a {task} one")
    missing = [name for name in REQUIRED + TASK_REQUIRED[task] if name not in manifest]
    if missing:
        raise PackageError(f"{path}: required field(s) {', '.join(missing)} missing")
    if manifest[DIGEST_FIELD] != manifest_digest(manifest):
        raise PackageError(f"{path}: edited after export (its {DIGEST_FIELD} does not match its content); re-export")


def check_files_listed(manifest: dict, path: Path, task: str) -> None:
    files = manifest["files"]
    if not isinstance(files, dict) or not files:
        raise PackageError(f"{path}: files is empty: the package's files cannot be verified")
    needed = [*GRAPH_FILES[task], manifest["tokenizer"].get("file", TOKENIZER_FILE)]
    unlisted = [name for name in needed if name not in files]
    if unlisted:
        raise PackageError(f"{path}: files does not list {', '.join(unlisted)}: the package cannot be verified")


def int8_file(graph_file: str) -> str:
    """The INT8 twin of an fp32 graph file: model.onnx -> model.int8.onnx."""
    return graph_file.removesuffix(".onnx") + ".int8.onnx"


def graph_files(task: str, precision: str) -> tuple[str, ...]:
    """The graph files a runtime of `task` loads at `precision` ("fp32" or "int8")."""
    if precision == "int8":
        return tuple(int8_file(name) for name in GRAPH_FILES[task])
    return GRAPH_FILES[task]


def serve_precision(manifest: Mapping[str, Any], path: Path, task: str, requested: str = "auto") -> str:
    """The precision to load: `requested`, or for "auto" the manifest's serve_precision (fp32
    when absent: packages exported before INT8). INT8 needs every INT8 graph listed in files
    (so that its hash is checked): otherwise a PackageError naming what is missing."""
    if requested not in PRECISION_CHOICES:
        raise PackageError(f"precision {requested!r} is not one of {list(PRECISION_CHOICES)}")
    precision = manifest.get(SERVE_PRECISION, "fp32") if requested == "auto" else requested
    if precision not in PRECISIONS:
        raise PackageError(f"{path}: {SERVE_PRECISION} {precision!r} is not one of {list(PRECISIONS)}")
    if precision == "int8":
        unlisted = [name for name in graph_files(task, "int8") if name not in manifest["files"]]
        if unlisted:
            how = f"its {SERVE_PRECISION} says int8" if requested == "auto" else "precision int8 was asked for"
            raise PackageError(
                f"{path}: no INT8 graph ({', '.join(unlisted)} not in files) but {how}: "
                "re-export with export.int8: true, or load precision fp32"
            )
    return precision


def verify_files(package: Path, expected: Mapping[str, str]) -> None:
    """Every file the manifest lists is present with the hash it had at export time."""
    for name, sha in expected.items():
        path = package / name
        if not path.is_file():
            raise PackageError(f"{path}: listed in {MANIFEST} but missing")
        actual = sha256_file(path)
        if actual != sha:
            raise PackageError(
                f"{path}: sha256 {actual[:12]}... does not match {MANIFEST} ({sha[:12]}...): "
                "the file changed after export; re-export or restore it"
            )


def read_manifest(package: str | Path, task: str, verify: bool = True) -> dict:
    """The manifest of a `task` package, after every check: its fields, its digest, that it
    lists every graph and the tokenizer, and (with `verify`) every file's hash."""
    package = Path(package)
    manifest = load_manifest(package)
    path = package / MANIFEST
    check_fields(manifest, path, task)
    check_files_listed(manifest, path, task)
    if verify:
        verify_files(package, manifest["files"])
    return manifest


# CUDA with TF32 off (see default_providers).
CUDA_PROVIDER = ("CUDAExecutionProvider", {"use_tf32": "0"})


def default_providers() -> list:
    """CUDA when onnxruntime-gpu has it, else CPU. TF32 is switched off on CUDA: it would
    round matmul inputs to 10 mantissa bits for speed, and the package promises PyTorch's logits."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    providers: list = []
    if "CUDAExecutionProvider" in available:
        providers.append(CUDA_PROVIDER)
    providers.append("CPUExecutionProvider")
    return providers


def precision_warning(providers: Sequence[str], precision: str) -> Optional[str]:
    """A warning for INT8 graphs on CUDA, else None: dynamic INT8 (DynamicQuantizeLinear,
    MatMulInteger) is a CPU format. On an H200 (onnxruntime-gpu 1.31.1, 2026-12-04) the demo
    translator's INT8 graphs decoded 200 sentences in 2.14 s against fp32's 1.51 s."""
    if precision != "int8" or "CUDAExecutionProvider" not in providers:
        return None
    return ("INT8 graphs on CUDA: dynamic INT8 is a CPU format, slower than fp32 on a GPU "
            "(measured 1.4x slower on an H200); serve fp32 there (--precision fp32)")


def intra_op_options(threads: Optional[int]):
    """Session options with `threads` intra-op threads; None when not given, so onnxruntime
    keeps its own default (one thread per physical core)."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a whole number >= 1, got {threads!r}")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return options


# ONNX Runtime fusions left out of CPU sessions. SkipLayerNormalization (residual Add +
# LayerNormalization in one contrib kernel) is 3-5x slower on CPU in onnxruntime 1.32 than the two
# nodes it replaces (one thread, 2026-12-03: 99 vs 14 us at 22 x 384, the classifier's batch 1;
# 2.3 vs 0.5 ms at 704 x 384; 12.8 vs 7.9 us at 4 x 256, a translator's beam step): twelve of them
# were a quarter of the INT8 classifier's time. GPU sessions keep it.
SLOW_ON_CPU = ["SkipLayerNormFusion"]


def provider_names(providers) -> list[str]:
    """Provider names from onnxruntime's `providers` argument (names or (name, options) pairs)."""
    return [provider if isinstance(provider, str) else provider[0] for provider in providers]


def inference_session(path: Path, providers, options=None):
    """An onnxruntime session over one graph; a truncated or unparsable file is a PackageError."""
    import onnxruntime as ort

    providers = list(providers)
    disabled = SLOW_ON_CPU if provider_names(providers) == ["CPUExecutionProvider"] else None
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers, disabled_optimizers=disabled)
    except Exception as err:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PackageError(f"{path}: onnxruntime cannot load the graph: {first}") from None


# Characters that show nothing: controls (Cc) and format characters (Cf: zero-width space and
# joiners, the byte-order mark, soft hyphen), besides whitespace.
INVISIBLE_CATEGORIES = ("Cc", "Cf")


# C0/C1 control characters other than whitespace (which clean_text turns into spaces). The one
# definition of a clean text: ingest cleans every training and test text with clean_text
# (tasks/common/sources.py calls it), the runtimes every text they are sent.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")


def clean_text(text: str) -> str:
    """A text as ingest cleaned the model's training and test texts: controls removed,
    whitespace normalised (none at either end), and a leading byte-order mark dropped (ingest
    drops a file's). A byte-level BPE tokenizer sees every space: " A  dog.\t" would otherwise
    get tokens the model never saw in training."""
    return " ".join(CONTROL_CHARACTERS.sub("", text).split()).removeprefix("\ufeff").strip()


def is_blank(text: str) -> bool:
    """A text with nothing to read: empty, whitespace, or only invisible characters (a zero-width
    space alone tokenizes to no word at all, and would get a confident label or translation)."""
    return all(char.isspace() or unicodedata.category(char) in INVISIBLE_CATEGORIES for char in text)
