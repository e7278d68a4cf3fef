"""Two quality levers of the classifier: model.pooling mean (the head reads the masked mean of
the last hidden states) and finetune.strategy lora (peft adapters merged into the encoder).
Tiny random 2-layer BERTs and the 200-row real subsets of tests/classification/conftest.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertForSequenceClassification

from serving.classifier import OnnxClassifier
from tasks.classification import export, finetune, pretrain
from tasks.classification.model import (
    BertMeanPoolingForSequenceClassification,
    head_input,
    load_classifier,
    load_tokenized,
)
from tasks.classification.train import train_target_only
from tasks.common.errors import HandoffError
from tasks.common.io import read_json
from tests.serving.test_classifier import LABELS, amazon_texts, build_workspace, export_params, tiny_classifier


def tiny_mean_classifier(amazon_file, seed: int = 0):
    """tests/serving's tiny random BERT (wide init, WordPiece from 200 amazon snippets) with
    a mean-pooling head."""
    cls_model, tokenizer = tiny_classifier(amazon_texts(amazon_file, 200))
    config = cls_model.config
    config.classifier_pooling = "mean"
    torch.manual_seed(seed)
    return BertMeanPoolingForSequenceClassification(config).eval(), tokenizer


def weights(directory) -> dict[str, torch.Tensor]:
    with safe_open(str(directory / "model.safetensors"), "pt") as f:
        return {key: f.get_tensor(key) for key in f.keys()}


# ---------------------------------------------------------------- model.pooling mean


@torch.no_grad()
def test_mean_pooling_head_reads_the_masked_mean_of_the_hidden_states(amazon_file):
    model, tokenizer = tiny_mean_classifier(amazon_file)
    texts = ["great", "this blender broke after two days and the seller never answered"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    assert batch["attention_mask"][0].sum() < batch["attention_mask"].shape[1], "the short text must be padded"
    hidden = model.bert(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    by_hand = (hidden * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(head_input(model, batch), by_hand)
    torch.testing.assert_close(model(**batch).logits, model.classifier(by_hand))  # eval: dropout is identity
    # not the [CLS] state, not an unmasked mean
    assert not torch.allclose(model.classifier(hidden[:, 0]), model(**batch).logits)
    assert not torch.allclose(model.classifier(hidden.mean(1)), model(**batch).logits)
    # padding does not change a text's logits
    alone = model(**tokenizer(texts[:1], return_tensors="pt")).logits
    torch.testing.assert_close(alone, model(**batch).logits[:1], atol=1e-5, rtol=1e-5)
    assert not any("pooler" in name for name, _ in model.named_parameters())


def test_pooling_survives_save_and_load(amazon_file, tmp_path):
    model, tokenizer = tiny_mean_classifier(amazon_file)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["classifier_pooling"] == "mean"
    loaded = load_classifier(tmp_path, LABELS).eval()  # pooling None: as the model records it
    assert type(loaded) is BertMeanPoolingForSequenceClassification
    batch = tokenizer(["fine", "not fine at all, it leaked"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits)
    # a trained head with these labels read the mean: asking for cls is a handoff error
    with pytest.raises(HandoffError, match="model.pooling 'mean'.*'cls'"):
        load_classifier(tmp_path, LABELS, pooling="cls")
    # an encoder with a [CLS] pooler and no head (as the MiniLM init) loads under either head
    cls_model, _ = tiny_classifier(amazon_texts(amazon_file, 50))
    cls_model.bert.save_pretrained(tmp_path / "encoder")
    as_mean = load_classifier(tmp_path / "encoder", LABELS, pooling="mean")
    assert type(as_mean) is BertMeanPoolingForSequenceClassification
    torch.testing.assert_close(as_mean.bert.embeddings.word_embeddings.weight, cls_model.bert.embeddings.word_embeddings.weight)
    as_cls = load_classifier(tmp_path / "encoder", LABELS, pooling="cls")
    assert type(as_cls) is BertForSequenceClassification
    torch.testing.assert_close(as_cls.bert.pooler.dense.weight, cls_model.bert.pooler.dense.weight)


def test_mean_pooling_model_exports_with_parity(amazon_file, tmp_path):
    paths = build_workspace(tmp_path, amazon_file)
    model, _ = tiny_mean_classifier(amazon_file, seed=1)
    model.save_pretrained(paths.target_model)  # over the [CLS] model; the tokenizer stays
    metrics = export.run(export_params(), paths)
    assert metrics["parity"]["label_agreement"] == 1.0 and metrics["parity"]["max_abs_logit_diff"] <= 1e-4
    manifest = read_json(paths.onnx / "manifest.json")
    assert manifest["source"]["architectures"] == ["BertMeanPoolingForSequenceClassification"]
    # and by hand: the runtime (onnxruntime + tokenizers) against the model as load_classifier loads it
    texts = amazon_texts(amazon_file, 230)[200:]
    reference = load_classifier(paths.target_model, LABELS).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(paths.target_model))
    with torch.no_grad():
        expected = np.concatenate([reference(**tokenizer([t], truncation=True, max_length=64, return_tensors="pt")).logits.numpy()
                                   for t in texts])
    np.testing.assert_allclose(OnnxClassifier(paths.onnx).logits(texts), expected, atol=1e-4)


# ---------------------------------------------------------------- pooling through the stages


def test_mean_pooling_runs_through_pretrain_finetune_and_the_baseline(pretrained_copy, params):
    two_steps = {f"{run}.{key}": 2 for run in ("pretrain", "finetune", "evaluate.target_only")
                 for key in ("max_steps", "eval_steps")}
    p = params(**{"model.pooling": "mean", **two_steps})
    with pytest.raises(HandoffError, match="re-run pretrain"):
        finetune.run(p, pretrained_copy)  # models/source was pretrained with pooling cls
    pretrain.run(p, pretrained_copy)
    finetune.run(p, pretrained_copy)
    for model_dir in (pretrained_copy.source_model, pretrained_copy.target_model):
        assert json.loads((model_dir / "config.json").read_text())["classifier_pooling"] == "mean"
        assert not any("pooler" in key for key in weights(model_dir))
    assert type(load_classifier(pretrained_copy.target_model, LABELS)) is BertMeanPoolingForSequenceClassification
    splits, tokenizer = load_tokenized(pretrained_copy, "target")
    baseline, _ = train_target_only(p, pretrained_copy, splits, tokenizer, 64, "target_only")
    assert type(baseline) is BertMeanPoolingForSequenceClassification


# ---------------------------------------------------------------- finetune.strategy lora


def test_lora_trains_adapters_and_head_and_saves_a_plain_merged_classifier(pretrained_copy, params):
    p = params(**{"finetune.strategy": "lora", "finetune.lora_rank": 4, "finetune.learning_rate": 1e-2,
                  "finetune.max_steps": 2})
    result = finetune.run(p, pretrained_copy)
    source, target = weights(pretrained_copy.source_model), weights(pretrained_copy.target_model)
    # a plain classifier: the source's keys exactly, no adapter files, loads with nothing missing or unexpected
    assert target.keys() == source.keys()
    assert not [key for key in target if "lora" in key or "base_model" in key or "modules_to_save" in key]
    assert not list(pretrained_copy.target_model.glob("adapter_*"))
    model, info = AutoModelForSequenceClassification.from_pretrained(
        str(pretrained_copy.target_model), output_loading_info=True
    )
    assert type(model) is BertForSequenceClassification
    assert not info["missing_keys"] and not info["unexpected_keys"]
    # only the adapted projections (merged) and the head changed
    changed = {key for key in source if not torch.equal(source[key], target[key])}
    assert {"bert.encoder.layer.0.attention.self.query.weight", "bert.encoder.layer.1.attention.self.value.weight",
            "classifier.weight"} <= changed
    adapted = ("attention.self.query.weight", "attention.self.value.weight")
    assert all(key.endswith(adapted) or key.startswith(("classifier.", "bert.pooler.")) for key in changed), changed
    # trainable: rank-4 A and B on query and value of 2 layers (hidden 32), the classifier and the pooler
    hidden, layers, rank = 32, 2, 4
    adapters = layers * 2 * (rank * hidden + hidden * rank)
    head = (hidden * 2 + 2) + (hidden * hidden + hidden)
    assert result["trainable_parameters"] == adapters + head
    assert result["lora"]["target_modules"] == ["query", "value"] and "classifier" in result["lora"]["modules_to_save"]
    assert result["strategy"] == "lora"
