"""`serving` installed on its own, as a deployer installs it: `pip install ./serving[cpu]` into a
fresh virtual environment (one install per session) that has no torch, no transformers and no
`tasks`; its `python -m serving` then gives, on real texts, what the pipeline's PyTorch models
give: the same labels and logits (classification), the same translations as the evaluate
stage's decoding (translation)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.serving.conftest import LABELS, MAX_LENGTH, REPO, clean_env, json_lines, read_manifest_json, serve

pytestmark = pytest.mark.slow

NOT_INSTALLED = ("torch", "transformers", "datasets", "tasks")


def run(python: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-c", code], cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(python of a fresh venv with serving[cpu] installed, a working directory outside the
    repo). pip builds from a copy of serving/, so no build/ or egg-info lands in the work tree;
    pip's own cache may serve the wheels."""
    root = tmp_path_factory.mktemp("installed")
    source = Path(shutil.copytree(REPO / "serving", root / "src" / "serving",
                                  ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", f"{source}[cpu]",
         # the HTTP server's transitive packages (starlette, pydantic, ...) at the project's pins, as the image installs them
         "-c", str(REPO / "constraints.txt")],
        env=clean_env(), capture_output=True, text=True, timeout=900,
    )
    assert install.returncode == 0, f"pip install {source}[cpu] failed:\n{install.stdout}\n{install.stderr}"
    work = root / "work"
    work.mkdir()
    return python, work


def test_the_fresh_venv_has_serving_and_its_runtime_but_no_torch_transformers_or_pipeline(installed):
    python, work = installed
    for module in NOT_INSTALLED:
        result = run(python, f"import {module}", work)
        assert result.returncode != 0 and f"No module named '{module}'" in result.stderr, (module, result.stderr)
    where = run(python, "import serving, serving.classifier, serving.translator; print(serving.__file__)", work)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(python.parent.parent), "serving must come from the venv, not the repo"
    code = "import importlib.metadata as m, json; print(json.dumps([d.metadata['Name'].lower() for d in m.distributions()]))"
    listed = run(python, code, work)
    names = json.loads(listed.stdout)
    assert {"transfer-serving", "onnxruntime", "tokenizers", "numpy"} <= set(names)
    assert "onnxruntime-gpu" not in names and "torch" not in names


def test_installed_cli_gives_pytorchs_labels_and_logits(installed, classification_workspace, classification_texts):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    python, work = installed
    rows = json_lines(serve(classification_workspace.onnx, classification_texts, python=str(python), cwd=work))
    assert [row["text"] for row in rows] == classification_texts
    model = AutoModelForSequenceClassification.from_pretrained(str(classification_workspace.target_model)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(classification_workspace.target_model))
    with torch.no_grad():  # one text at a time, truncated as in training: no padding on this side
        expected = np.concatenate([
            model(**tokenizer([text], truncation=True, max_length=MAX_LENGTH, return_tensors="pt")).logits.numpy()
            for text in classification_texts
        ])
    np.testing.assert_allclose(np.array([row["logits"] for row in rows]), expected, atol=1e-3)
    assert [row["label"] for row in rows] == [LABELS[i] for i in expected.argmax(axis=1)]
    assert {row["label"] for row in rows} == set(LABELS), "a one-class model would make this comparison weak"


def test_installed_console_script_runs_the_same_cli(installed, classification_package, classification_texts):
    python, work = installed
    script = python.parent / "transfer-serve"
    result = subprocess.run([str(script), str(classification_package)], input=classification_texts[0] + "\n",
                            cwd=work, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert json_lines(result)[0] == json_lines(serve(classification_package, classification_texts[:1]))[0]


@pytest.mark.parametrize("mode", ["manifest", "greedy"])
def test_installed_cli_translates_as_the_evaluate_stage_does(installed, translation_workspace, translation_texts, mode):
    """The manifest's decoding (beam search as evaluated) and greedy (--beams 1), each against
    tasks.translation.model.translate, the evaluate stage's PyTorch decoding, with the same options."""
    from tasks.translation.gate import load_target
    from tasks.translation.model import translate

    python, work = installed
    package = translation_workspace.onnx
    manifest = read_manifest_json(package)
    g = manifest["generation"]
    options = {"num_beams": g["num_beams"], "max_new_tokens": g["max_new_tokens"], "length_penalty": g["length_penalty"],
               "no_repeat_ngram_size": g["no_repeat_ngram_size"], "repetition_penalty": g["repetition_penalty"]}
    args: list[str] = []
    if mode == "greedy":
        options.update(num_beams=1, no_repeat_ngram_size=0, repetition_penalty=1.0, length_penalty=1.0)
        args = ["--beams", "1"]
    assert options["num_beams"] == (1 if mode == "greedy" else 3)
    rows = json_lines(serve(package, translation_texts, args=args, python=str(python), cwd=work))
    assert [row["source"] for row in rows] == translation_texts
    model, tokenizer = load_target(translation_workspace.target_model)
    expected = translate(model, tokenizer, translation_texts, manifest["languages"]["tgt"], batch_size=32, device="cpu",
                         max_length=manifest["max_length"], **options)
    assert [row["translation"] for row in rows] == expected
    assert len(set(expected)) > 3, "outputs must depend on the input for this comparison to mean much"
