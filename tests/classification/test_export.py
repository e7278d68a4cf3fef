"""The export stage on a tiny random BERT classifier (WordPiece vocabulary from 200 real amazon
snippets): one self-contained ONNX file with dynamic axes, a manifest whose hashes verify,
parity with PyTorch, and failures that leave no package behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tasks.classification import export
from tasks.common.errors import ExportError, HandoffError
from tasks.common.io import read_json
from serving.classifier import OnnxClassifier
from tasks.common.io import sha256_file
from tasks.common.paths import Paths
from tests.serving.test_classifier import LABELS, MAX_LENGTH, PARITY_SAMPLES, build_workspace, export_params, val_texts

REPO = Path(__file__).resolve().parents[2]


def torch_target(paths: Paths):
    model = AutoModelForSequenceClassification.from_pretrained(str(paths.target_model)).eval()
    return model, AutoTokenizer.from_pretrained(str(paths.target_model))


# ---------------------------------------------------------------- the package


def test_package_is_one_onnx_file_plus_tokenizer_and_manifest(exported):
    paths, _ = exported
    names = {f.name for f in paths.onnx.iterdir()}
    assert {"model.onnx", "tokenizer.json", "tokenizer_config.json", "manifest.json"} <= names
    assert not [name for name in names if name.endswith(".data") or name.startswith(".")]
    assert not list(paths.onnx.parent.glob(".onnx.*")), "temp dirs must not be left beside the package"


def test_manifest_hashes_match_the_files_and_cover_all_of_them(exported):
    paths, _ = exported
    manifest = read_json(paths.onnx / "manifest.json")
    on_disk = {f.name for f in paths.onnx.iterdir()} - {"manifest.json"}
    assert set(manifest["files"]) == on_disk
    assert manifest["files"] == {name: sha256_file(paths.onnx / name) for name in on_disk}


def test_manifest_describes_the_graph(exported):
    paths, _ = exported
    manifest = read_json(paths.onnx / "manifest.json")
    assert manifest["format_version"] == 1 and manifest["task"] == "classification"
    assert manifest["opset"] == 17 and manifest["labels"] == LABELS
    assert manifest["max_length"] == MAX_LENGTH  # tokenizer 64 < max_position_embeddings 128
    assert [i["name"] for i in manifest["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(i["dtype"] == "int64" and i["shape"] == ["batch", "sequence"] for i in manifest["inputs"])
    assert manifest["outputs"] == [
        {"name": "logits", "dtype": "float32", "shape": ["batch", 2], "dynamic_axes": {"0": "batch"}}
    ]
    assert set(manifest["versions"]) == {"onnxruntime", "onnx", "torch", "transformers"}
    assert manifest["source"]["model_type"] == "bert"
    assert manifest["source"]["config_sha256"] == sha256_file(paths.target_model / "config.json")


def test_parity_figures_are_under_tolerance_in_manifest_and_metrics(exported):
    paths, result = exported
    parity = read_json(paths.onnx / "manifest.json")["parity"]
    assert parity["samples"] == PARITY_SAMPLES and parity["tolerance"] == 1e-4
    assert parity["max_abs_logit_diff"] < 1e-4 and parity["label_agreement"] == 1.0
    assert parity["runtime"]["max_abs_logit_diff"] < 1e-4  # the deployers' tokenization path
    metrics = read_json(paths.metrics / "export.json")
    assert metrics == result and metrics["parity"] == parity
    assert metrics["onnx_bytes"] == (paths.onnx / "model.onnx").stat().st_size


@pytest.mark.parametrize("batch,length", [(1, 3), (1, MAX_LENGTH), (7, 5), (7, 41)])
def test_model_onnx_runs_any_batch_and_sequence_length_like_torch(exported, batch, length):
    paths, _ = exported
    model, tokenizer = torch_target(paths)
    generator = torch.Generator().manual_seed(batch * 100 + length)
    ids = torch.randint(5, len(tokenizer), (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[-1, max(1, length // 2) :] = 0  # the last row is padded (all rows when batch is 1)
    types = torch.zeros_like(ids)
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits.numpy()
    session = ort.InferenceSession(str(paths.onnx / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids.numpy(), "attention_mask": mask.numpy(), "token_type_ids": types.numpy()}
    (logits,) = session.run(["logits"], feeds)
    assert logits.shape == (batch, 2)
    np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_onnx_classifier_predicts_what_torch_predicts(exported, amazon_file):
    paths, _ = exported
    texts = val_texts(amazon_file)
    model, tokenizer = torch_target(paths)
    with torch.no_grad():  # one text at a time: no padding on the torch side
        encoded = [tokenizer([text], truncation=True, max_length=MAX_LENGTH, return_tensors="pt") for text in texts]
        expected = [LABELS[int(model(**batch).logits.argmax())] for batch in encoded]
    assert OnnxClassifier(paths.onnx).predict(texts) == expected
    assert set(expected) == set(LABELS), "a one-class model would make this comparison weak"


def test_a_model_without_token_type_ids_exports_without_that_input(tmp_path, amazon_file):
    paths = build_workspace(tmp_path, amazon_file, token_type_ids=False)
    export.run(export_params(), paths)
    manifest = read_json(paths.onnx / "manifest.json")
    assert [i["name"] for i in manifest["inputs"]] == ["input_ids", "attention_mask"]
    assert manifest["parity"]["max_abs_logit_diff"] < 1e-4


# ---------------------------------------------------------------- failures


def test_parity_failure_raises_and_leaves_no_package(exported_copy, monkeypatch, tmp_path):
    # The graph is the one already exported (this test is about the check, not the exporter:
    # it saves an export), and every onnxruntime result is off by 1.0: labels still agree,
    # the logits do not.
    graph = Path(shutil.copy(exported_copy.onnx / "model.onnx", tmp_path / "graph.onnx"))
    monkeypatch.setattr(export, "export_graph", lambda model, sample, out, opset: shutil.copy(graph, out))
    real_run = ort.InferenceSession.run
    monkeypatch.setattr(ort.InferenceSession, "run", lambda self, *a, **k: [y + 1.0 for y in real_run(self, *a, **k)])
    assert exported_copy.onnx.exists()  # a package from an earlier export ...
    with pytest.raises(ExportError) as failure:
        export.run(export_params(), exported_copy)
    message = str(failure.value)
    assert "\n" not in message
    assert f"failed on {PARITY_SAMPLES} validation texts: max abs logit diff 1 " in message
    assert "tolerance 0.0001" in message and "label agreement 1.0000" in message
    assert not exported_copy.onnx.exists()  # ... must not pass for this one
    assert not (exported_copy.metrics / "export.json").exists()
    assert not list(exported_copy.onnx.parent.glob(".onnx.*"))


def test_label_mismatch_is_a_handoff_error_naming_both_lists(exported_copy):
    expected = r"model labels \['negative', 'positive'\] differ from task.labels \['bad', 'good'\]"
    with pytest.raises(HandoffError, match=expected):
        export.run(export_params(labels=["bad", "good"]), exported_copy)


def test_missing_target_model_is_a_handoff_error(tmp_path):
    with pytest.raises(HandoffError, match="models/target not found: run the finetune stage first"):
        export.run(export_params(), Paths(tmp_path))


def test_cli_without_target_model_exits_1_with_one_line(tmp_path):
    params_file = tmp_path / "params.yaml"
    params_file.write_text("data:\n  source: {path: s.tsv}\n  target: {path: t.tsv}\n", encoding="utf-8")
    env = {**os.environ, "PIPELINE_PARAMS": str(params_file), "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "tasks", "export"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    expected = "error: export: models/target not found: run the finetune stage first"
    assert result.stderr.strip().splitlines() == [expected]
