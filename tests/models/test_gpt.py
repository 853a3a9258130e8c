"""The GPT model: names, initialisation, gradients, causality, the KV cache, errors, overfitting."""

import math

import numpy as np
import pytest

import npllm.functional as F
from npllm import gradcheck, no_grad
from npllm.models import GPT, GPTConfig
from npllm.optim import AdamW, configure_param_groups

TINY = dict(vocab_size=11, context_length=5, n_layer=2, n_head=2, n_embd=8)


def tiny_gpt(seed=0, **overrides):
    return GPT(GPTConfig(**{**TINY, **overrides}), seed=seed)


def token_ids(B=3, T=5, V=11, seed=0):
    return np.random.default_rng(seed).integers(0, V, size=(B, T))


def test_state_dict_names_are_gpt2s():
    names = list(tiny_gpt().state_dict())
    block = [
        "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
        "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
        "mlp.c_proj.weight", "mlp.c_proj.bias",
    ]
    expected = ["wte.weight", "wpe.weight", *(f"h.{i}.{name}" for i in range(2) for name in block),
                "ln_f.weight", "ln_f.bias"]
    assert names == expected
    shapes = {name: array.shape for name, array in tiny_gpt().state_dict().items()}
    assert shapes["h.0.attn.c_attn.weight"] == (8, 24) and shapes["h.1.mlp.c_proj.weight"] == (32, 8)


def test_parameter_count_counts_the_tied_embedding_once():
    model = tiny_gpt()
    C, V, L = 8, 11, 2
    per_block = 2 * 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + (C * 4 * C + 4 * C) + (4 * C * C + C)
    expected = V * C + 5 * C + L * per_block + 2 * C
    assert model.num_parameters() == expected
    assert model.num_parameters(include_position_embeddings=False) == expected - 5 * C
    assert model.flops_per_token() == 6 * (expected - 5 * C) + 12 * L * C * 5
    assert model.flops_per_token(T=3) == 6 * (expected - 5 * C) + 12 * L * C * 3


def test_gpt2_initialisation():
    model = GPT(GPTConfig(vocab_size=64, context_length=16, n_layer=4, n_head=2, n_embd=64), seed=0)
    state = model.state_dict()
    assert abs(state["wte.weight"].std() - 0.02) < 0.002
    assert abs(state["h.0.attn.c_attn.weight"].std() - 0.02) < 0.002
    residual = 0.02 / math.sqrt(2 * 4)
    assert abs(state["h.3.mlp.c_proj.weight"].std() - residual) < 0.1 * residual
    assert abs(state["h.2.attn.c_proj.weight"].std() - residual) < 0.1 * residual
    assert not state["h.0.mlp.c_fc.bias"].any() and (state["ln_f.weight"] == 1).all()
    assert all(array.dtype == np.float32 for array in state.values())
    same = GPT(GPTConfig(vocab_size=64, context_length=16, n_layer=4, n_head=2, n_embd=64), seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(state.values(), same.state_dict().values()))


def test_forward_shape_and_dtype():
    logits = tiny_gpt()(token_ids())
    assert logits.shape == (3, 5, 11) and logits.dtype == np.float32
    assert tiny_gpt(dtype="float64")(token_ids(T=4)).dtype == np.float64


def test_whole_gpt_gradchecks_in_float64_for_every_parameter():
    model = tiny_gpt(dtype="float64")
    rng = np.random.default_rng(1)
    for p in model.parameters():  # away from the zero biases / unit gains of the initialisation
        p.data += rng.standard_normal(p.shape) * 0.3
    idx = token_ids(B=2, T=5)
    params = model.parameters()
    assert gradcheck(lambda *_: model(idx), params, max_elements=40)


def test_changing_a_future_token_changes_no_earlier_logit():
    model = tiny_gpt()
    idx = token_ids(B=1)
    with no_grad():
        base = model(idx).data
        for t in range(1, 5):
            changed = idx.copy()
            changed[0, t] = (changed[0, t] + 1) % 11
            logits = model(changed).data
            np.testing.assert_array_equal(logits[0, :t], base[0, :t])
            assert not np.allclose(logits[0, t], base[0, t])


def test_kv_cache_forward_equals_full_forward():
    for dtype, tolerance in (("float64", 1e-12), ("float32", 1e-5)):
        model = tiny_gpt(dtype=dtype)
        idx = token_ids(B=2)
        cache = model.new_kv_cache(batch_size=2)
        with no_grad():
            full = model(idx).data
            pieces = [model(idx[:, :3], kv_cache=cache).data]
            pieces += [model(idx[:, t:t + 1], kv_cache=cache).data for t in range(3, 5)]
        np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, rtol=tolerance, atol=tolerance)


def test_errors_name_the_values():
    model = tiny_gpt()
    bad = token_ids()
    bad[1, 2] = 11
    with pytest.raises(ValueError, match=r"token id 11 at \(batch, position\) \(1, 2\).*11 ids"):
        model(bad)
    with pytest.raises(ValueError, match="token id -1"):
        model(np.array([[0, -1]]))
    with pytest.raises(ValueError, match="sequence length 6 exceeds context_length 5"):
        model(token_ids(T=6))
    cache = model.new_kv_cache(batch_size=1)
    model(token_ids(B=1, T=4), kv_cache=cache)
    with pytest.raises(ValueError, match=r"6 \(4 cached \+ 2 new\) exceeds context_length 5"):
        model(token_ids(B=1, T=2), kv_cache=cache)
    with pytest.raises(ValueError, match="`n_embd` 10 is not divisible by `n_head` 3"):
        GPTConfig(n_embd=10, n_head=3)
    with pytest.raises(ValueError, match="integer token ids"):
        model(np.zeros((1, 2)))


def test_state_dict_round_trip_gives_the_same_logits():
    source, target = tiny_gpt(seed=1), tiny_gpt(seed=2)
    idx = token_ids()
    assert not np.allclose(source(idx).data, target(idx).data)
    target.load_state_dict({name: array.copy() for name, array in source.state_dict().items()})
    np.testing.assert_array_equal(source(idx).data, target(idx).data)
    wrong = {name: array.copy() for name, array in tiny_gpt(n_embd=4).state_dict().items()}
    with pytest.raises(KeyError, match=r"wte.weight: checkpoint \(11, 4\) vs model \(11, 8\)"):
        target.load_state_dict(wrong)


def test_overfits_one_batch():
    model = GPT(GPTConfig(vocab_size=16, context_length=8, n_layer=2, n_head=2, n_embd=32), seed=0)
    idx = token_ids(B=4, T=9, V=16, seed=3)
    inputs, targets = idx[:, :-1], idx[:, 1:]
    optimizer = AdamW(configure_param_groups(model, 0.0), lr=3e-3)
    for _ in range(150):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(inputs), targets)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.02, loss.item()


def test_dropout_is_seeded_and_only_active_in_training():
    idx = token_ids()
    first, second = tiny_gpt(dropout=0.2), tiny_gpt(dropout=0.2)
    np.testing.assert_array_equal(first(idx).data, second(idx).data)  # same seed, same masks
    assert not np.allclose(first(idx).data, first(idx).data)  # fresh masks at each call
    first.eval()
    np.testing.assert_array_equal(first(idx).data, tiny_gpt()(idx).data)
