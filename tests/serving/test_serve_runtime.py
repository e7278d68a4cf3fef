"""The packages the pipeline exports (with requirements.txt's onnxruntime) load and give the same
answers under the serve image's onnxruntime (requirements-gpu.txt's onnxruntime-gpu pin, as its CPU
build: `make setup` puts it in .serve-ort/, apart from the venv's).

Why: reorder.onnx and search.onnx were once written as ONNX IR 14, which onnxruntime 1.32 reads and
1.31 / 1.26 refuse. Every test here passed on 1.32; the export stage failed on a GPU machine with
onnxruntime-gpu 1.31.1, and the serve image (1.26.0) could not have loaded such a translator.
Each check runs in a subprocess whose onnxruntime is the serve image's version (it says which).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from serving.classifier import OnnxClassifier
from serving.translator import OnnxTranslator
from tests.serving.conftest import REPO, clean_env

SERVE_ORT = REPO / ".serve-ort"


def serve_image_onnxruntime() -> str:
    pin = re.search(r"^onnxruntime-gpu==([\d.]+)", (REPO / "requirements-gpu.txt").read_text(encoding="utf-8"), re.M)
    assert pin, "requirements-gpu.txt pins no onnxruntime-gpu"
    return pin.group(1)


def run_under_serve_runtime(code: str, *args: str) -> dict:
    """`code` in a fresh interpreter whose onnxruntime comes from .serve-ort/; its last stdout
    line, as JSON."""
    if not (SERVE_ORT / "onnxruntime").is_dir():
        pytest.fail(f"{SERVE_ORT} is missing: `make setup` installs onnxruntime=={serve_image_onnxruntime()} there")
    env = {**clean_env(), "PYTHONPATH": str(SERVE_ORT)}
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


CLASSIFY = """
import json, sys, onnxruntime
from serving.classifier import OnnxClassifier
classifier = OnnxClassifier(sys.argv[1], precision=sys.argv[2], threads=1)
texts = json.loads(sys.argv[3])
print(json.dumps({"onnxruntime": onnxruntime.__version__, "file": onnxruntime.__file__,
                  "logits": classifier.logits(texts).tolist()}))
"""

TRANSLATE = """
import json, sys, onnxruntime
from serving.translator import OnnxTranslator
# kv_cache "device" runs reorder.onnx (on the CPU device here), search "graph" runs search.onnx
translator = OnnxTranslator(sys.argv[1], precision=sys.argv[2], kv_cache="device", search="graph")
texts = json.loads(sys.argv[3])
print(json.dumps({"onnxruntime": onnxruntime.__version__, "ids": translator.generate_ids(texts)}))
"""


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_serve_image_onnxruntime_classifies_as_the_pipeline_does(classification_package, classification_texts, precision):
    import numpy as np

    got = run_under_serve_runtime(CLASSIFY, str(classification_package), precision, json.dumps(classification_texts))
    assert got["onnxruntime"] == serve_image_onnxruntime()
    assert Path(got["file"]).resolve().is_relative_to(SERVE_ORT.resolve())
    expected = OnnxClassifier(classification_package, precision=precision, threads=1).logits(classification_texts)
    logits = np.array(got["logits"])
    if precision == "fp32":
        np.testing.assert_allclose(logits, expected, atol=1e-4)
    else:  # the two versions quantize activations apart: logits 0.008-0.018 apart on this tiny model, seen
        np.testing.assert_allclose(logits, expected, atol=0.1)
        assert (logits.argmax(-1) == expected.argmax(-1)).mean() >= 0.95


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_the_serve_image_onnxruntime_loads_every_translator_graph_and_decodes_the_same(
    translation_package, translation_texts, precision
):
    names = {path.name for path in translation_package.glob("*.onnx")}
    assert {"reorder.onnx", "search.onnx"} <= names, "the package must hold the hand-built graphs this checks"
    got = run_under_serve_runtime(TRANSLATE, str(translation_package), precision, json.dumps(translation_texts))
    assert got["onnxruntime"] == serve_image_onnxruntime()
    expected = OnnxTranslator(translation_package, precision=precision, kv_cache="device", search="graph")
    want = expected.generate_ids(translation_texts)
    if precision == "fp32":
        assert got["ids"] == want
    else:  # INT8 activations are quantized a little apart by the two versions (see the classifier's)
        assert sum(a == b for a, b in zip(got["ids"], want)) >= 0.9 * len(want)

