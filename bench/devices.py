"""The execution providers a benchmark's --device asks for, and the check that a session really
got them: onnxruntime without CUDA quietly falls back to the CPU, and the figures would be the CPU's."""

from __future__ import annotations

import onnxruntime as ort

from serving.package import CUDA_PROVIDER

PROVIDERS = {  # the device's providers only, whatever onnxruntime build is installed
    "cpu": ["CPUExecutionProvider"],
    "cuda": [CUDA_PROVIDER, "CPUExecutionProvider"],
}


def require_device(session: ort.InferenceSession, device: str) -> None:
    """Exit with one line when `device` is cuda and `session` does not run on it."""
    if device == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
        raise SystemExit(f"--device cuda: onnxruntime {ort.__version__} has no working CUDAExecutionProvider "
                         f"(available: {ort.get_available_providers()}); install requirements-gpu.txt")
