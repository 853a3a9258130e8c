"""recording_attention: the weights an attention layer records equal a softmax computed by hand, and recording
changes nothing the model computes."""

import numpy as np

from npllm import Tensor, no_grad
from npllm.models import BERT, GPT, BERTConfig, GPTConfig
from npllm.nn import MultiHeadAttention, QKVSelfAttention, recording_attention

F64 = np.float64


def softmax_by_hand(q, k, keep):
    """exp(q k^T / sqrt(D)) over the visible keys, each row divided by its sum: (B, H, Tq, Tk), in float64 loops."""
    B, H, Tq, D = q.shape
    weights = np.zeros((B, H, Tq, k.shape[2]))
    for b, h, i in np.ndindex(B, H, Tq):
        seen = [j for j in range(k.shape[2]) if keep[b, h, i, j]]
        scores = np.array([q[b, h, i] @ k[b, h, j] / np.sqrt(D) for j in seen])
        weights[b, h, i, seen] = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    return weights


def heads(x, n_head):
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)  # (B, H, T, D)


def randomized(layer, seed=1):
    rng = np.random.default_rng(seed)
    for p in layer.parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.5
    return layer


def test_causal_weights_equal_the_hand_softmax_and_reproduce_the_layer_output():
    layer = randomized(MultiHeadAttention(6, 3, dtype=F64, rng=np.random.default_rng(0)))
    x = np.random.default_rng(2).standard_normal((2, 5, 6))
    with no_grad():
        plain = layer(Tensor(x)).data
        with recording_attention(layer) as weights:
            recorded = layer(Tensor(x)).data
    np.testing.assert_array_equal(recorded, plain)  # recording changes nothing the layer computes
    q, k, v = (heads(piece, 3) for piece in np.split(layer.c_attn(Tensor(x)).data, 3, axis=-1))
    keep = np.broadcast_to(np.tri(5, 5, dtype=bool), (2, 3, 5, 5))
    np.testing.assert_allclose(weights[""], softmax_by_hand(q, k, keep), rtol=1e-12, atol=1e-15)
    merged = (weights[""] @ v).transpose(0, 2, 1, 3).reshape(2, 5, 6)  # the weights mix the values ...
    np.testing.assert_allclose(layer.c_proj(Tensor(merged)).data, plain, rtol=1e-12)  # ... into the layer's output
    assert layer.record_weights is None  # the block leaves the layer as it found it


def test_bidirectional_weights_hide_padding_as_the_mask_says():
    layer = randomized(QKVSelfAttention(6, 2, dtype=F64, rng=np.random.default_rng(0)))
    x = np.random.default_rng(3).standard_normal((2, 4, 6))
    mask = np.array([[True, True, True, True], [True, True, False, False]])[:, None, None, :]  # (B, 1, 1, T)
    with no_grad(), recording_attention(layer) as weights:
        layer(Tensor(x), mask=mask)
    q, k = (heads(layer_projection(Tensor(x)).data, 2) for layer_projection in (layer.query, layer.key))
    np.testing.assert_allclose(weights[""], softmax_by_hand(q, k, np.broadcast_to(mask, (2, 2, 4, 4))), rtol=1e-12)
    assert np.all(weights[""][1, :, :, 2:] == 0)


def test_a_gpt_records_every_block_and_the_kv_cache_path_agrees():
    model = GPT(GPTConfig(vocab_size=20, context_length=8, n_layer=2, n_head=2, n_embd=8, dtype="float64"))
    idx = np.array([[3, 1, 4, 1, 5]])
    with no_grad(), recording_attention(model) as full:
        model(idx)
    assert list(full) == ["h.0.attn", "h.1.attn"] and full["h.1.attn"].shape == (1, 2, 5, 5)
    np.testing.assert_allclose(full["h.0.attn"].sum(axis=-1), 1.0)
    cache = model.new_kv_cache(batch_size=1)
    with no_grad(), recording_attention(model) as stepwise:
        model(idx[:, :4], kv_cache=cache)
        model(idx[:, 4:], kv_cache=cache)  # the last token's query against all five cached keys
    np.testing.assert_allclose(stepwise["h.1.attn"], full["h.1.attn"][:, :, 4:], rtol=1e-10)


def test_a_bert_records_its_layers_by_their_checkpoint_names():
    config = BERTConfig(vocab_size=30, context_length=8, n_layer=2, n_head=2, n_embd=8, n_inner=16, dtype="float64")
    model = BERT(config, pooler=False)
    model.eval()
    with no_grad(), recording_attention(model) as weights:
        model(np.array([[2, 5, 7, 3, 0]]), attention_mask=np.array([[1, 1, 1, 1, 0]]))
    assert list(weights) == ["encoder.layer.0.attention.self", "encoder.layer.1.attention.self"]
    assert np.all(weights["encoder.layer.0.attention.self"][..., 4] == 0)  # nobody looks at the padding
