"""ONNX export pieces every kind uses: the dynamo exporter call, the checks every graph file
gets, and the package's lineage (file hashes, library versions, the model it came from)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import onnx
import onnxruntime
import torch
import transformers
from transformers import AutoConfig

from serving.package import MANIFEST
from tasks.common.errors import ExportError
from tasks.common.io import sha256_file
from tasks.common.paths import Paths


def dynamo_export(module, out: Path, opset: int, names: list[str], outputs: list[str], shapes,
                  args: tuple = (), kwargs: dict | None = None) -> None:
    """torch.onnx.export with the dynamo exporter (torch.export), one self-contained file (fine
    below protobuf's 2 GB limit).

    Why dynamo and not the legacy TorchScript exporter (dynamo=False, still present in 2.13):
    both gave the same logits on BERT/MiniLM, but the legacy one is deprecated and traces
    Python branches in transformers' masking code as constants (its TracerWarnings say the
    trace "might not generalize to other inputs"), whereas torch.export keeps batch and
    sequence symbolic and fails loudly if the model would specialise either. Dynamo builds at
    opset 18 and converts down when asked for 17 (onnx's version converter); each kind's
    parity gate is what vouches for the result either way.
    """
    with warnings.catch_warnings():
        # Cosmetic: says each axis name "will not be used" because it equals itself.
        warnings.filterwarnings("ignore", message=r".*The axis name: .* will not be used")
        torch.onnx.export(
            module,
            args=args,
            kwargs=kwargs,
            f=str(out),
            dynamo=True,
            opset_version=opset,
            input_names=names,
            output_names=outputs,
            dynamic_shapes=shapes,
            external_data=False,
            optimize=True,
            verbose=False,
        )


def checked_graph(path: Path, opset: int, extra: list[str] | None = None) -> onnx.ModelProto:
    """The ONNX file, after checking what deployers are promised: a valid graph, one
    self-contained file (no external data; `extra`: stray files beside it), the requested opset."""
    onnx.checker.check_model(str(path))
    model = onnx.load(str(path), load_external_data=False)
    if extra or any(onnx.external_data_helper.uses_external_data(t) for t in model.graph.initializer):
        shown = "" if extra is None else f" {extra}"
        raise ExportError(f"{path}: weights were written as external data{shown}, expected one self-contained file")
    # Dynamo builds at opset 18 and keeps 18 if converting down to 17 fails (only a warning).
    actual = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    if actual != opset:
        raise ExportError(f"{path}: exported at opset {actual}, not the requested export.opset {opset} (try 18)")
    return model


def describe_value(value) -> dict:
    """A graph input or output as the file declares it: name, dtype, shape, symbolic axes."""
    tensor = value.type.tensor_type
    shape = [dim.dim_param or dim.dim_value for dim in tensor.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name
    dynamic = {str(i): dim for i, dim in enumerate(shape) if isinstance(dim, str)}
    return {"name": value.name, "dtype": dtype, "shape": shape, "dynamic_axes": dynamic}


def file_hashes(package: Path) -> dict[str, str]:
    return {f.name: sha256_file(f) for f in sorted(package.iterdir()) if f.is_file() and f.name != MANIFEST}


def library_versions() -> dict:
    """The versions a package was exported with (a deployer's first question when numbers differ)."""
    return {
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def source_info(model_dir: Path) -> dict:
    """Lineage: which model this package was built from."""
    config = AutoConfig.from_pretrained(str(model_dir))
    weights = sorted(model_dir.glob("*.safetensors")) or sorted(model_dir.glob("*.bin"))
    return {
        "path": str(model_dir),
        "model_type": config.model_type,
        "architectures": list(config.architectures or []),
        "config_sha256": sha256_file(model_dir / "config.json"),
        "weights_sha256": {f.name: sha256_file(f) for f in weights},
    }


def remove_stale(paths: Paths) -> None:
    """A failed export leaves no package behind, as under `dvc repro` (which deletes a stage's
    outputs before running it): an old package must not pass for one of the current model."""
    shutil.rmtree(paths.onnx, ignore_errors=True)
    (paths.metrics / "export.json").unlink(missing_ok=True)
