"""A text longer than the model's positions is truncated to the manifest's max_length, never
an onnxruntime error: through the Python classes and through `python -m serving`."""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from serving.classifier import OnnxClassifier
from serving.translator import OnnxTranslator
from tests.serving.conftest import LABELS, MAX_LENGTH, TRANSLATION_MAX_LENGTH, json_lines, serve


def long_text(texts: list[str], words: int) -> str:
    """`words` real words: the texts repeated."""
    pool = " ".join(texts).split()
    return " ".join(pool[i % len(pool)] for i in range(words))


def test_a_5000_word_text_is_classified_on_its_first_max_length_tokens(classification_workspace, classification_texts):
    text = long_text(classification_texts, 5000)
    classifier = OnnxClassifier(classification_workspace.onnx)
    assert classifier.max_length == MAX_LENGTH < 5000
    assert classifier.encode([text])["input_ids"].shape == (1, MAX_LENGTH)
    logits = classifier.logits([text, classification_texts[0]])
    assert logits.shape == (2, len(LABELS)) and np.isfinite(logits).all()
    # what PyTorch says of the same text truncated the training side's way
    model = AutoModelForSequenceClassification.from_pretrained(str(classification_workspace.target_model)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(classification_workspace.target_model))
    with torch.no_grad():
        expected = model(**tokenizer([text], truncation=True, max_length=MAX_LENGTH, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(logits[:1], expected, atol=1e-4)


def test_a_5000_word_text_through_the_command_line(classification_package, classification_texts):
    text = long_text(classification_texts, 5000)
    rows = json_lines(serve(classification_package, [classification_texts[1], text]))
    assert [row["text"] for row in rows] == [classification_texts[1], text]
    assert all(row["label"] in LABELS and len(row["logits"]) == len(LABELS) for row in rows)
    expected = OnnxClassifier(classification_package).logits([text])[0]
    np.testing.assert_allclose(rows[1]["logits"], expected, atol=1e-5)


def test_a_2000_word_sentence_is_translated_from_its_first_max_length_tokens(translation_package, translation_texts):
    text = long_text(translation_texts, 2000)
    translator = OnnxTranslator(translation_package)
    ids = translator.encode_ids(text)
    assert len(ids) == translator.max_length == TRANSLATION_MAX_LENGTH
    assert ids[0] == translator.tag_id and ids[-1] == translator.eos_id
    for beams in (1, 3):
        out = translator.translate([text, translation_texts[0]], num_beams=beams)
        assert len(out) == 2 and all(isinstance(t, str) for t in out) and out[0].strip()
    # only the first max_length tokens count: another 1,000 words at the end change nothing
    longer = text + " " + long_text(translation_texts[::-1], 1000)
    assert translator.generate_ids([longer]) == translator.generate_ids([text])


def test_a_2000_word_sentence_through_the_command_line(translation_package, translation_texts):
    text = long_text(translation_texts, 2000)
    rows = json_lines(serve(translation_package, [text]))
    assert len(rows) == 1 and rows[0]["source"] == text and rows[0]["translation"].strip()
