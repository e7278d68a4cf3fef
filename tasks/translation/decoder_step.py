"""Marian's decoder restated for one generated token, written for the ONNX export.

Tracing transformers' decoder gives a correct graph that is slow to run one token at a time:
every step rebuilds the causal and padding masks, re-derives positions, and transposes the
whole key cache (self and cross) before each attention product. On a 3-layer, d_model 256
model that was ~270 nodes and a third of the kernel time in Transpose.

Here the same weights run the same arithmetic (post-norm layers, scaled embeddings plus the
sinusoidal table, scaled dot-product attention, the tied output layer and its bias), with
two differences that change no number:
  - keys are cached transposed, [batch, heads, head_dim, positions], so `query @ keys` needs
    no transpose; the runtime treats the cache as opaque and only picks rows (beam reorder);
  - with one query token, splitting and merging heads are plain reshapes.
The encoder padding mask becomes one additive bias per step. The export stage's gate
(ORT greedy ids == `model.generate` ids) holds this restatement to the original.

Used for `MarianMTModel` (the scratch model and Marian inits); other seq2seq inits are
exported by tracing transformers' decoder (tasks/translation/export.py).
"""

from __future__ import annotations

import torch
from transformers import MarianMTModel, PreTrainedModel


def supports_fast_step(model: PreTrainedModel) -> bool:
    """Marian decoders only: the arithmetic below is theirs (post-norm, no embedding norm)."""
    decoder = model.get_decoder()
    return isinstance(model, MarianMTModel) and not hasattr(decoder, "layernorm_embedding") and not hasattr(decoder, "layer_norm")


def lm_logits(model: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
    logits = model.get_output_embeddings()(hidden)
    bias = getattr(model, "final_logits_bias", None)  # Marian/BART keep a separate output bias
    return logits if bias is None else logits + bias


def padding_bias(encoder_attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[batch, 1, 1, source]: 0 where the source token is real, the dtype's minimum at padding."""
    blocked = (encoder_attention_mask == 0)[:, None, None, :]
    return blocked.to(dtype) * torch.finfo(dtype).min


def query_heads(attention, hidden: torch.Tensor, heads: int) -> torch.Tensor:
    """[batch, 1, d_model] -> scaled queries [batch, heads, 1, head_dim] (one token: a reshape)."""
    return (attention.q_proj(hidden) * attention.scaling).reshape(hidden.shape[0], heads, 1, -1)


def attend(query: torch.Tensor, keys_t: torch.Tensor, values: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """softmax(query @ keys_t + bias) @ values, merged back to [batch, 1, d_model]."""
    scores = torch.matmul(query, keys_t)
    if bias is not None:
        scores = scores + bias
    context = torch.matmul(torch.softmax(scores, dim=-1), values)
    return context.reshape(query.shape[0], 1, -1)


def cross_cache(attention, encoder_hidden_states: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The cross-attention keys [batch, heads, head_dim, source] and values [batch, heads, source, head_dim]."""
    batch, source, _ = encoder_hidden_states.shape
    keys = attention.k_proj(encoder_hidden_states).reshape(batch, source, heads, -1)
    values = attention.v_proj(encoder_hidden_states).reshape(batch, source, heads, -1)
    return keys.permute(0, 2, 3, 1), values.transpose(1, 2)


def layer_step(layer, hidden, past_keys_t, past_values, cross_keys_t, cross_values, bias, heads):
    """One post-norm decoder layer on one token. Returns its output and the grown self cache."""
    attention = layer.self_attn
    batch = hidden.shape[0]
    new_key = attention.k_proj(hidden).reshape(batch, heads, -1, 1)  # [batch, heads, head_dim, 1]
    new_value = attention.v_proj(hidden).reshape(batch, heads, 1, -1)
    keys_t = new_key if past_keys_t is None else torch.cat([past_keys_t, new_key], dim=3)
    values = new_value if past_values is None else torch.cat([past_values, new_value], dim=2)
    mixed = attend(query_heads(attention, hidden, heads), keys_t, values, None)  # a causal step sees all of its past
    hidden = layer.self_attn_layer_norm(hidden + attention.out_proj(mixed))

    cross = layer.encoder_attn
    mixed = attend(query_heads(cross, hidden, heads), cross_keys_t, cross_values, bias)
    hidden = layer.encoder_attn_layer_norm(hidden + cross.out_proj(mixed))

    feed_forward = layer.fc2(layer.activation_fn(layer.fc1(hidden)))
    return layer.final_layer_norm(hidden + feed_forward), keys_t, values


def embed(decoder, input_ids: torch.Tensor, position) -> torch.Tensor:
    """Scaled token embedding plus the sinusoidal row of `position` (the number of past tokens)."""
    return decoder.embed_tokens(input_ids) * decoder.embed_scale + decoder.embed_positions.weight[position]


class MarianStep(torch.nn.Module):
    """A Marian model's decoder, one token per call (the forward is the subclass's)."""

    def __init__(self, model: PreTrainedModel):
        super().__init__()
        self.model = model
        self.heads = model.config.decoder_attention_heads


class FastFirstStep(MarianStep):
    """The decoder-start token: logits, the self cache it starts, the cross cache for all steps."""

    def forward(self, input_ids, encoder_attention_mask, encoder_hidden_states):
        decoder = self.model.get_decoder()
        hidden = embed(decoder, input_ids, 0)
        bias = padding_bias(encoder_attention_mask, hidden.dtype)
        present_self, present_cross = [], []
        for layer in decoder.layers:
            keys_t, values = cross_cache(layer.encoder_attn, encoder_hidden_states, self.heads)
            hidden, own_keys_t, own_values = layer_step(layer, hidden, None, None, keys_t, values, bias, self.heads)
            present_self += [own_keys_t, own_values]
            present_cross += [keys_t, values]
        return (lm_logits(self.model, hidden), *present_self, *present_cross)


class FastWithPast(MarianStep):
    """One more token given the self cache so far and the cross cache of the first step."""

    def forward(self, input_ids, encoder_attention_mask, past_self, past_cross):
        decoder = self.model.get_decoder()
        hidden = embed(decoder, input_ids, past_self[0].shape[3])
        bias = padding_bias(encoder_attention_mask, hidden.dtype)
        present = []
        for i, layer in enumerate(decoder.layers):
            hidden, keys_t, values = layer_step(
                layer, hidden, past_self[2 * i], past_self[2 * i + 1], past_cross[2 * i], past_cross[2 * i + 1], bias, self.heads
            )
            present += [keys_t, values]
        return (lm_logits(self.model, hidden), *present)
