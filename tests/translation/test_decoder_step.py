"""tasks/translation/decoder_step.py restates Marian's decoder for one token at a time (the
export's fast graphs). Its logits must be the model's own, step after step, with a padded
source in the batch; and it must refuse to stand in for other architectures."""

from __future__ import annotations

import pytest
import torch

from tasks.translation.decoder_step import FastFirstStep, FastWithPast, supports_fast_step
from tests.serving.test_translator import multi30k_lines, tiny_translator


@pytest.fixture(scope="module")
def model():
    return tiny_translator(multi30k_lines("train", "en", 32), multi30k_lines("train", "fr", 32), steps=20)[0]


@torch.no_grad()
def test_step_logits_equal_the_full_decoder_at_every_position(model):
    ids = torch.tensor([[4, 40, 41, 42, 43, 1], [4, 50, 1, 0, 0, 0]])  # the second source is padded
    mask = (torch.arange(6)[None, :] < torch.tensor([[6], [3]])).long()
    hidden = model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    decoded = torch.zeros((2, 1), dtype=torch.long)
    out = FastFirstStep(model)(decoded, mask, hidden)
    layers = model.config.decoder_layers
    past, cross = out[1 : 1 + 2 * layers], out[1 + 2 * layers :]
    for token in (7, 8, 9, 10, 11):
        reference = model(input_ids=ids, attention_mask=mask, decoder_input_ids=decoded).logits[:, -1:]
        assert torch.allclose(out[0], reference, atol=1e-5), f"position {decoded.shape[1] - 1}"
        step = torch.full((2, 1), token)
        decoded = torch.cat([decoded, step], dim=1)
        out = FastWithPast(model)(step, mask, tuple(past), tuple(cross))
        past = out[1:]
    assert past[0].shape == (2, model.config.decoder_attention_heads, 16, 6), "keys cached transposed: 6 positions last"


def test_only_marian_models_take_the_restated_step(model):
    from transformers import BartConfig, BartForConditionalGeneration

    bart = BartForConditionalGeneration(BartConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1,
                                                   encoder_attention_heads=2, decoder_attention_heads=2,
                                                   encoder_ffn_dim=32, decoder_ffn_dim=32))
    assert supports_fast_step(model) and not supports_fast_step(bart)
