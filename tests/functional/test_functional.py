"""Fused ops of npllm.functional: gradchecks, fused == composed, dtypes, dropout, errors."""

import numpy as np
import pytest

from types import SimpleNamespace

import npllm.functional as F
from npllm.functional import (_kernels, activations, attention, distillation, lookup, losses, normalization,
                              probabilities, projection, regularization)
from npllm import ShapeError, Tensor, gradcheck, ops
from npllm.nn import KVCache

# Every composed reference (``softmax_composed``, ...), from the file of its fused op.
R = SimpleNamespace(**{name: getattr(module, name)
                       for module in (activations, attention, distillation, lookup, losses, normalization,
                                      probabilities, projection, regularization)
                       for name in dir(module) if name.endswith("_composed")})


def randn(*shape, dtype=np.float64, seed=0, requires_grad=True):
    data = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return Tensor(data, requires_grad=requires_grad)


def random_targets(shape, V, ignored_fraction=0.0, seed=1):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, V, size=shape)
    targets[rng.random(shape) < ignored_fraction] = -100
    return targets


def attention_mask(shape, seed=2):
    return np.random.default_rng(seed).random(shape) > 0.3


# (name, fused call, composed call, input shapes) -- one row per case, shared by the gradcheck
# and the fused == composed tests below.
TARGETS_NV = random_targets((6,), 5, ignored_fraction=0.3)
TARGETS_BTV = random_targets((2, 3), 7, ignored_fraction=0.3)
IDS = np.array([[1, 3, 1], [0, 3, 3]])  # repeated ids must accumulate
MASK = attention_mask((2, 1, 3, 5))
MASK[0, 0, 1] = False  # a query that sees no key at all
SELF_MASK = attention_mask((2, 1, 3, 3))
SELF_MASK[1, 0, 2] = False
PREFIX = np.random.default_rng(4).standard_normal((2, 3, 12))  # q | k | v of 3 earlier positions, 2 heads


def with_cached_prefix(qkv):
    """Self-attention of qkv after PREFIX's keys and values, held in a fresh KV cache."""
    cache = KVCache(2, 2, 2, capacity=6, dtype=qkv.dtype)
    F.self_attention(Tensor(PREFIX.astype(qkv.dtype)), 2, is_causal=True, kv_cache=cache)
    return F.self_attention(qkv, 2, is_causal=True, kv_cache=cache)


def with_prefix_composed(qkv):
    """The same: attention over PREFIX and qkv together, keeping the rows of qkv's positions."""
    full = ops.concatenate([Tensor(PREFIX.astype(qkv.dtype)), qkv], axis=1)  # (2, 3 + T, 12)
    return R.self_attention_composed(full, 2, is_causal=True)[:, PREFIX.shape[1]:]


CASES = [
    ("softmax last", lambda x: F.softmax(x), lambda x: R.softmax_composed(x), [(4, 6)]),
    ("softmax axis 0", lambda x: F.softmax(x, 0), lambda x: R.softmax_composed(x, 0), [(4, 6)]),
    ("softmax 3-d middle", lambda x: F.softmax(x, 1), lambda x: R.softmax_composed(x, 1), [(2, 3, 4)]),
    ("log_softmax last", lambda x: F.log_softmax(x), lambda x: R.log_softmax_composed(x), [(4, 6)]),
    ("log_softmax axis 0", lambda x: F.log_softmax(x, 0), lambda x: R.log_softmax_composed(x, 0), [(2, 3, 4)]),
    ("cross_entropy (N, V)",
     lambda x: F.cross_entropy(x, TARGETS_NV), lambda x: R.cross_entropy_composed(x, TARGETS_NV), [(6, 5)]),
    ("cross_entropy (B, T, V) ignore + smoothing",
     lambda x: F.cross_entropy(x, TARGETS_BTV, label_smoothing=0.1),
     lambda x: R.cross_entropy_composed(x, TARGETS_BTV, label_smoothing=0.1), [(2, 3, 7)]),
    ("cross_entropy custom ignore_index",
     lambda x: F.cross_entropy(x, np.array([0, 2, 2, 1]), ignore_index=2),
     lambda x: R.cross_entropy_composed(x, np.array([0, 2, 2, 1]), ignore_index=2), [(4, 3)]),
    ("kl_div student and teacher", F.kl_div, R.kl_div_composed, [(5, 6), (5, 6)]),
    ("kl_div at T = 2.5 (B, T, V) with ignored rows",
     lambda s, t: F.kl_div(s, t, temperature=2.5, targets=TARGETS_BTV),
     lambda s, t: R.kl_div_composed(s, t, temperature=2.5, targets=TARGETS_BTV), [(2, 3, 7), (2, 3, 7)]),
    ("cosine_loss", F.cosine_loss, R.cosine_loss_composed, [(5, 6), (5, 6)]),
    ("cosine_loss (B, T, C) with padded rows",
     lambda s, t: F.cosine_loss(s, t, TARGETS_BTV != -100),
     lambda s, t: R.cosine_loss_composed(s, t, TARGETS_BTV != -100), [(2, 3, 4), (2, 3, 4)]),
    ("layer_norm", F.layer_norm, R.layer_norm_composed, [(3, 5), (5,), (5,)]),
    ("layer_norm 3-d", F.layer_norm, R.layer_norm_composed, [(2, 3, 4), (4,), (4,)]),
    ("layer_norm no bias", lambda x, w: F.layer_norm(x, w, None), lambda x, w: R.layer_norm_composed(x, w),
     [(3, 5), (5,)]),
    ("layer_norm no affine", F.layer_norm, R.layer_norm_composed, [(3, 5)]),
    ("gelu", F.gelu, R.gelu_composed, [(3, 7)]),
    ("gelu erf form", lambda x: F.gelu(x, "none"), lambda x: R.gelu_composed(x, "none"), [(3, 7)]),
    ("linear_gelu", F.linear_gelu, R.linear_gelu_composed, [(2, 3, 4), (4, 6), (6,)]),
    ("linear_add_layer_norm", F.linear_add_layer_norm, R.linear_add_layer_norm_composed,
     [(2, 3, 4), (4, 5), (5,), (2, 3, 5), (5,), (5,)]),
    ("linear_add_layer_norm no biases", lambda x, w, r, g: F.linear_add_layer_norm(x, w, None, r, g, None),
     lambda x, w, r, g: R.linear_add_layer_norm_composed(x, w, None, r, g, None), [(3, 4), (4, 5), (3, 5), (5,)]),
    ("linear_gelu erf form no bias", lambda x, w: F.linear_gelu(x, w, None, "none"),
     lambda x, w: R.linear_gelu_composed(x, w, None, "none"), [(3, 4), (4, 5)]),
    ("lora_linear", lambda x, w, b, a, u: F.lora_linear(x, w, b, a, u, 0.5),
     lambda x, w, b, a, u: R.lora_linear_composed(x, w, b, a, u, 0.5), [(2, 3, 4), (4, 5), (5,), (4, 2), (2, 5)]),
    ("lora_linear with dropout's x apart", lambda x, w, a, u, d: F.lora_linear(x, w, None, a, u, 2.0, d),
     lambda x, w, a, u, d: R.lora_linear_composed(x, w, None, a, u, 2.0, d), [(3, 4), (4, 5), (4, 3), (3, 5), (3, 4)]),
    ("embedding repeated ids", lambda w: F.embedding(IDS, w), lambda w: R.embedding_composed(IDS, w), [(4, 5)]),
    ("embedding with a padding row", lambda w: F.embedding(IDS, w, padding_idx=3),
     lambda w: R.embedding_composed(IDS, w, padding_idx=3), [(4, 5)]),
    ("attention", F.scaled_dot_product_attention, R.attention_composed, [(2, 2, 4, 3)] * 3),
    ("attention causal",
     lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
     lambda q, k, v: R.attention_composed(q, k, v, is_causal=True), [(2, 2, 4, 3)] * 3),
    ("attention causal Tq < Tk",
     lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
     lambda q, k, v: R.attention_composed(q, k, v, is_causal=True), [(1, 2, 2, 3), (1, 2, 5, 3), (1, 2, 5, 3)]),
    ("attention mask with an empty row",
     lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask=MASK),
     lambda q, k, v: R.attention_composed(q, k, v, mask=MASK), [(2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 4)]),
    ("attention dropout",
     lambda q, k, v: F.scaled_dot_product_attention(q, k, v, dropout_p=0.3, rng=np.random.default_rng(5)),
     lambda q, k, v: R.attention_composed(q, k, v, dropout_p=0.3, rng=np.random.default_rng(5)),
     [(1, 2, 3, 4)] * 3),
    ("self_attention causal",
     lambda qkv: F.self_attention(qkv, 2, is_causal=True),
     lambda qkv: R.self_attention_composed(qkv, 2, is_causal=True), [(2, 4, 12)]),
    ("self_attention mask with an empty row",
     lambda qkv: F.self_attention(qkv, 2, mask=SELF_MASK),
     lambda qkv: R.self_attention_composed(qkv, 2, mask=SELF_MASK), [(2, 3, 12)]),
    ("self_attention dropout",
     lambda qkv: F.self_attention(qkv, 3, dropout_p=0.3, rng=np.random.default_rng(5)),
     lambda qkv: R.self_attention_composed(qkv, 3, dropout_p=0.3, rng=np.random.default_rng(5)), [(1, 3, 18)]),
    ("self_attention after a KV cache", with_cached_prefix, with_prefix_composed, [(2, 2, 12)]),
    ("dropout",
     lambda x: F.dropout(x, 0.4, True, np.random.default_rng(3)),
     lambda x: R.dropout_composed(x, 0.4, True, np.random.default_rng(3)), [(4, 6)]),
    ("linear 3-d", F.linear, R.linear_composed, [(2, 3, 4), (4, 5), (5,)]),
    ("linear no bias", F.linear, R.linear_composed, [(3, 4), (4, 5)]),
    ("linear by a transposed weight (tied logits)",
     lambda x, w: F.linear(x, w.T), lambda x, w: R.linear_composed(x, w.T), [(2, 3, 4), (5, 4)]),
]
IDS_OF_CASES = [case[0] for case in CASES]
# cases whose gradient is by definition not the derivative (padding_idx stops the padding row's): no gradcheck
STOPPED_GRADIENTS = {"embedding with a padding row"}
DERIVATIVE_CASES = [case for case in CASES if case[0] not in STOPPED_GRADIENTS]


def inputs_for(shapes, dtype=np.float64):
    return [randn(*shape, dtype=dtype, seed=i) for i, shape in enumerate(shapes)]


@pytest.mark.parametrize("name, fused, composed, shapes", DERIVATIVE_CASES, ids=[c[0] for c in DERIVATIVE_CASES])
def test_gradcheck(name, fused, composed, shapes):
    assert gradcheck(fused, inputs_for(shapes), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name, fused, composed, shapes", CASES, ids=IDS_OF_CASES)
def test_fused_equals_composed(name, fused, composed, shapes):
    fused_inputs, composed_inputs = inputs_for(shapes), inputs_for(shapes)
    seed = np.random.default_rng(9)
    fused_out = fused(*fused_inputs)
    with np.errstate(invalid="ignore"):  # the composed attention computes -inf - -inf on empty rows
        composed_out = composed(*composed_inputs)
    np.testing.assert_allclose(fused_out.data, composed_out.data, rtol=1e-12, atol=1e-12)
    upstream = seed.standard_normal(fused_out.shape)
    fused_out.backward(upstream)
    with np.errstate(invalid="ignore"):
        composed_out.backward(upstream)
    for a, b in zip(fused_inputs, composed_inputs):
        np.testing.assert_allclose(a.grad, b.grad, rtol=1e-10, atol=1e-12)


CAUSAL_CASES = [case for case in CASES if "causal" in case[0] or "KV cache" in case[0]]


@pytest.mark.parametrize("blocks", [1, 3, 8])
@pytest.mark.parametrize("name, fused, composed, shapes", CAUSAL_CASES, ids=[case[0] for case in CAUSAL_CASES])
def test_causal_attention_in_blocks_of_queries(name, fused, composed, shapes, blocks, monkeypatch):
    """Causal attention skips the scores right of each block of queries: the same values and gradients."""
    monkeypatch.setattr(attention, "CAUSAL_BLOCKS", blocks)
    test_gradcheck(name, fused, composed, shapes)
    test_fused_equals_composed(name, fused, composed, shapes)


# Larger shapes: softmax rows and GELU elements in several pieces on the thread pool (map_rows),
# too many elements for a numerical gradcheck, so checked against the oracle.
LARGE_MASK = attention_mask((2, 1, 48, 40), seed=6)
LARGE_CASES = [
    ("linear_add_layer_norm", F.linear_add_layer_norm, R.linear_add_layer_norm_composed,
     [(2, 400, 96), (96, 384), (384,), (2, 400, 384), (384,), (384,)]),
    ("linear_gelu", F.linear_gelu, R.linear_gelu_composed, [(2, 160, 96), (96, 384), (384,)]),
    ("lora_linear", lambda x, w, b, a, u: F.lora_linear(x, w, b, a, u, 2.0),
     lambda x, w, b, a, u: R.lora_linear_composed(x, w, b, a, u, 2.0), [(2, 160, 96), (96, 384), (384,), (96, 8), (8, 384)]),
    ("linear_gelu erf form", lambda x, w, b: F.linear_gelu(x, w, b, "none"),
     lambda x, w, b: R.linear_gelu_composed(x, w, b, "none"), [(2, 160, 96), (96, 384), (384,)]),
    ("linear by a transposed weight", lambda x, w: F.linear(x, w.T), lambda x, w: R.linear_composed(x, w.T),
     [(64, 96), (160, 96)]),
    ("self_attention causal",
     lambda qkv: F.self_attention(qkv, 4, is_causal=True),
     lambda qkv: R.self_attention_composed(qkv, 4, is_causal=True), [(2, 160, 3 * 96)]),
    ("attention mask and dropout",
     lambda q, k, v: F.scaled_dot_product_attention(q, k, v, mask=LARGE_MASK, dropout_p=0.2,
                                                    rng=np.random.default_rng(5)),
     lambda q, k, v: R.attention_composed(q, k, v, mask=LARGE_MASK, dropout_p=0.2, rng=np.random.default_rng(5)),
     [(2, 5, 48, 64), (2, 5, 40, 64), (2, 5, 40, 64)]),
]


@pytest.mark.parametrize("name, fused, composed, shapes", LARGE_CASES, ids=[case[0] for case in LARGE_CASES])
def test_fused_equals_composed_at_larger_sizes(name, fused, composed, shapes):
    test_fused_equals_composed(name, fused, composed, shapes)


@pytest.mark.parametrize("name, fused, composed, shapes", CASES, ids=IDS_OF_CASES)
def test_float32_stays_float32(name, fused, composed, shapes):
    inputs = inputs_for(shapes, dtype=np.float32)
    out = fused(*inputs)
    assert out.dtype == np.float32
    out.backward(np.ones(out.shape, dtype=np.float32))
    for x in inputs:
        assert x.grad.dtype == np.float32, name


def test_gradcheck_catches_a_wrong_backward(monkeypatch):
    """Negative control: break softmax's backward and the gradcheck must notice."""
    true_backward = probabilities.FusedSoftmax.backward
    monkeypatch.setattr(probabilities.FusedSoftmax, "backward", staticmethod(lambda ctx, grad: 1.01 * true_backward(ctx, grad)))
    with pytest.raises(AssertionError):
        gradcheck(F.softmax, [randn(3, 4)])


# --- values --------------------------------------------------------------
def test_softmax_is_stable_for_huge_logits():
    x = Tensor(np.array([[1000.0, 1000.0, -1000.0]], dtype=np.float32))
    np.testing.assert_allclose(F.softmax(x).data, [[0.5, 0.5, 0.0]])
    np.testing.assert_allclose(F.log_softmax(x).data[0, :2], [-np.log(2)] * 2, rtol=1e-6)


def test_exp_needs_no_shift_only_inside_the_safe_range():
    n = 100
    high = np.float32(20.0 - np.log(n))
    inside = np.linspace(-39.9, high - 0.01, n, dtype=np.float32)[None]
    assert _kernels.exp_needs_no_shift(inside)
    for outside in (high, -40.0, np.nan, np.inf, -np.inf):  # too high, too low, not numbers
        edge = inside.copy()
        edge[0, 0] = outside
        assert edge.dtype == np.float32 and not _kernels.exp_needs_no_shift(edge)
    assert _kernels.exp_needs_no_shift(np.empty((0, 5), dtype=np.float32))


def largest_unshifted_score(n):
    """The largest score that rows of n entries may hold and still skip the shift (found by bisection)."""
    low, high = 0.0, 1000.0
    for _ in range(50):
        middle = (low + high) / 2
        low, high = (middle, high) if _kernels.exp_needs_no_shift(np.full((1, n), middle, np.float32)) else (low, middle)
    return low


def test_cross_entropy_near_the_no_shift_bound_is_float32_exact():
    """Logits just inside the bound, float32, a small upstream gradient: as exact as the shifted path."""
    n = 50
    data = (largest_unshifted_score(n) - np.random.default_rng(0).random((40, n))).astype(np.float32)
    assert _kernels.exp_needs_no_shift(data)
    targets = np.arange(40) % n
    logits = Tensor(data, requires_grad=True)
    loss = F.cross_entropy(logits, targets)
    loss.backward(np.float32(1e-6))  # e.g. a loss scaled down for gradient accumulation
    exact = Tensor(data.astype(np.float64), requires_grad=True)
    exact_loss = R.cross_entropy_composed(exact, targets)
    exact_loss.backward(1e-6)
    assert loss.item() == pytest.approx(exact_loss.item(), rel=1e-6)
    np.testing.assert_allclose(logits.grad, exact.grad, rtol=1e-5, atol=0)


def test_attention_near_the_no_shift_bound_is_float32_exact():
    """Scores q.k / sqrt(D) just inside the bound: float32 equals the float64 oracle."""
    T, D = 30, 4
    rng = np.random.default_rng(1)
    top = largest_unshifted_score(T) - 0.5
    q = np.full((1, T, D), top / np.sqrt(D)) + 0.02 * rng.standard_normal((1, T, D))  # q.k / sqrt(D) ~ top
    k = np.ones((1, T, D)) - 0.01 * rng.random((1, T, D))
    qkv = np.concatenate([q, k, rng.standard_normal((1, T, D))], axis=2)
    scores = qkv[0, :, :D] @ qkv[0, :, D:2 * D].T / np.sqrt(D)
    assert _kernels.exp_needs_no_shift(scores.astype(np.float32)) and scores.max() > top - 1
    fused_input = Tensor(qkv.astype(np.float32), requires_grad=True)
    exact_input = Tensor(qkv, requires_grad=True)
    fused = F.self_attention(fused_input, 1, is_causal=True)
    exact = R.self_attention_composed(exact_input, 1, is_causal=True)
    np.testing.assert_allclose(fused.data, exact.data, rtol=1e-5, atol=1e-5)
    upstream = 1e-6 * rng.standard_normal(fused.shape)
    fused.backward(upstream.astype(np.float32))
    exact.backward(upstream)
    np.testing.assert_allclose(fused_input.grad, exact_input.grad, rtol=1e-3, atol=1e-10)


def test_empty_batches_pass_through_softmax_users():
    assert np.isnan(F.cross_entropy(Tensor(np.zeros((0, 7), dtype=np.float32)), np.zeros(0, dtype=int)).item())
    assert F.self_attention(Tensor(np.zeros((0, 4, 12), dtype=np.float32)), 1, is_causal=True).shape == (0, 4, 4)


SHIFT_MASK = LARGE_MASK[0, 0, :40].copy()
SHIFT_MASK[[3, 17]] = False  # two queries that see no key: their outputs are zeros on both paths
SHIFT_CASES = [
    ("self_attention causal", lambda qkv: F.self_attention(qkv, 2, is_causal=True),
     lambda qkv: R.self_attention_composed(qkv, 2, is_causal=True), (2, 40, 3 * 8)),
    ("self_attention masked", lambda qkv: F.self_attention(qkv, 2, mask=SHIFT_MASK),
     lambda qkv: R.self_attention_composed(qkv, 2, mask=SHIFT_MASK), (2, 40, 3 * 8)),
    ("cross_entropy", lambda x: F.cross_entropy(x, np.arange(40) % 7),
     lambda x: R.cross_entropy_composed(x, np.arange(40) % 7), (40, 7)),
]


@pytest.mark.parametrize("scale, shifted", [(1.0, False), (300.0, True)], ids=["no shift", "row max shift"])
@pytest.mark.parametrize("name, fused, composed, shape", SHIFT_CASES, ids=[case[0] for case in SHIFT_CASES])
def test_softmax_with_and_without_the_row_max_shift(name, fused, composed, shape, scale, shifted, monkeypatch):
    """Scores in the safe range skip the shift by the row max, large ones take it: both equal the oracle."""
    decisions = []
    check = _kernels.exp_needs_no_shift
    monkeypatch.setattr(_kernels, "exp_needs_no_shift", lambda x: decisions.append(check(x)) or decisions[-1])
    data = np.random.default_rng(3).standard_normal(shape) * scale
    fused_input, composed_input = Tensor(data, requires_grad=True), Tensor(data.copy(), requires_grad=True)
    fused_out = fused(fused_input)
    with np.errstate(invalid="ignore"):  # the composed attention computes -inf - -inf on the empty rows
        composed_out = composed(composed_input)
    assert decisions and set(decisions) == {not shifted}
    np.testing.assert_allclose(fused_out.data, composed_out.data, rtol=1e-10, atol=1e-12)
    upstream = np.random.default_rng(4).standard_normal(fused_out.shape)
    fused_out.backward(upstream)
    with np.errstate(invalid="ignore"):
        composed_out.backward(upstream)
    np.testing.assert_allclose(fused_input.grad, composed_input.grad, rtol=1e-8, atol=1e-10)
    if "masked" in name:
        np.testing.assert_array_equal(fused_out.data[:, [3, 17]], 0.0)


def test_cross_entropy_accepts_tensor_targets_and_matches_manual_value():
    logits = randn(4, 3)
    targets = np.array([0, 2, 1, 2])
    log_probs = logits.data - np.log(np.exp(logits.data).sum(1, keepdims=True))
    expected = -log_probs[np.arange(4), targets].mean()
    assert F.cross_entropy(logits, Tensor(targets)).item() == pytest.approx(expected, rel=1e-12)


def test_cross_entropy_all_ignored_is_nan_with_zero_gradient():
    logits = randn(3, 4)
    loss = F.cross_entropy(logits, np.full(3, -100))
    assert np.isnan(loss.item())
    loss.backward()
    np.testing.assert_array_equal(logits.grad, np.zeros((3, 4)))


def test_attention_row_without_keys_outputs_zeros():
    q, k, v = randn(1, 1, 2, 3), randn(1, 1, 2, 3, seed=1), randn(1, 1, 2, 3, seed=2)
    mask = np.array([[True, True], [False, False]])
    out = F.scaled_dot_product_attention(q, k, v, mask=mask)
    np.testing.assert_array_equal(out.data[0, 0, 1], 0.0)
    out.sum().backward()
    assert np.isfinite(q.grad).all() and np.isfinite(k.grad).all()


def test_causal_mask_aligns_to_the_last_keys():
    np.testing.assert_array_equal(F.causal_mask(2, 4), [[1, 1, 1, 0], [1, 1, 1, 1]])
    np.testing.assert_array_equal(F.causal_mask(3, 3), np.tril(np.ones((3, 3), bool)))


def test_tensor_methods_and_reprs_name_the_fused_ops():
    x = Tensor(np.linspace(-3, 3, 12).reshape(3, 4), requires_grad=True)
    y = x.gelu()
    assert y._ctx.function is activations.FusedGELU
    np.testing.assert_allclose(y.data, R.gelu_composed(x).data, rtol=1e-6)
    assert "op=FusedLayerNorm" in repr(F.layer_norm(x))  # not mistaken for the nn.LayerNorm layer


def test_gelu_none_is_the_exact_form():
    x = Tensor(np.array([-1.0, 0.5, 2.0]))
    from math import erf, sqrt
    expected = [xi * 0.5 * (1 + erf(xi / sqrt(2))) for xi in x.data]
    np.testing.assert_allclose(F.gelu(x, approximate="none").data, expected, rtol=1e-12)


def test_functions_work_without_grad_tracking():
    x = Tensor(np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32))
    assert F.softmax(x).shape == (2, 3, 4)
    assert F.layer_norm(x, None, None).shape == (2, 3, 4)


# --- dropout -------------------------------------------------------------
def test_dropout_statistics_and_scaling():
    x = Tensor(np.ones((400, 500), dtype=np.float32))
    out = F.dropout(x, 0.25, True, np.random.default_rng(0)).data
    kept = out != 0
    assert abs(kept.mean() - 0.75) < 0.005  # 200,000 draws: std of the fraction ~0.001
    np.testing.assert_allclose(out[kept], 1 / 0.75, rtol=1e-6)
    assert abs(out.mean() - 1.0) < 0.01  # inverted dropout keeps the expectation


def test_dropout_is_deterministic_given_the_seed():
    x = randn(8, 9)
    a = F.dropout(x, 0.5, True, np.random.default_rng(42)).data
    b = F.dropout(x, 0.5, True, np.random.default_rng(42)).data
    c = F.dropout(x, 0.5, True, np.random.default_rng(43)).data
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_dropout_is_identity_in_eval_or_with_p_zero():
    x = randn(3, 4)
    assert F.dropout(x, 0.5, False, np.random.default_rng(0)) is x
    assert F.dropout(x, 0.0, True) is x


def test_dropout_gradient_is_mask_over_keep_probability():
    x = randn(6, 7)
    out = F.dropout(x, 0.3, True, np.random.default_rng(1))
    out.sum().backward()
    mask = out.data != 0
    np.testing.assert_allclose(x.grad, mask / 0.7, rtol=1e-12)


# --- errors --------------------------------------------------------------
@pytest.mark.parametrize("call, error, words", [
    (lambda: F.cross_entropy(randn(4, 5), np.array([0, 1, 5, 2])), ValueError, ["cross_entropy", "5", "V = 5"]),
    (lambda: F.cross_entropy(randn(4, 5), np.array([0, -3, 1, 2])), ValueError, ["cross_entropy", "-3"]),
    (lambda: F.cross_entropy(randn(4, 5), np.array([0, 1, 2])), ShapeError, ["cross_entropy", "(4, 5)", "(3,)"]),
    (lambda: F.cross_entropy(randn(4, 5), np.zeros(4)), TypeError, ["cross_entropy", "float64"]),
    (lambda: F.cross_entropy(randn(4, 5), np.zeros(4, int), label_smoothing=2.0), ValueError, ["label_smoothing"]),
    (lambda: F.layer_norm(randn(3, 4), randn(5)), ShapeError, ["layer_norm", "(4,)", "(5,)"]),
    (lambda: F.embedding(np.array([0, 7]), randn(4, 3)), ValueError, ["embedding", "7", "V = 4"]),
    (lambda: F.embedding(np.array([0.0]), randn(4, 3)), TypeError, ["embedding", "float64"]),
    (lambda: F.dropout(randn(3), 1.5, True, np.random.default_rng(0)), ValueError, ["dropout", "1.5"]),
    (lambda: F.dropout(randn(3), 0.5, True), TypeError, ["dropout", "rng"]),
    (lambda: F.scaled_dot_product_attention(randn(1, 2, 3, 4), randn(1, 2, 3, 5), randn(1, 2, 3, 5)),
     ShapeError, ["scaled_dot_product_attention", "(1, 2, 3, 4)", "(1, 2, 3, 5)"]),
    (lambda: F.scaled_dot_product_attention(randn(1, 1, 3, 4), randn(1, 1, 3, 4), randn(1, 1, 3, 4),
                                            mask=np.ones((2, 3), bool)), ShapeError, ["mask", "(2, 3)"]),
    (lambda: F.scaled_dot_product_attention(randn(1, 1, 3, 4), randn(1, 1, 3, 4), randn(1, 1, 3, 4),
                                            mask=np.ones((3, 3)), ), TypeError, ["boolean"]),
    (lambda: F.scaled_dot_product_attention(randn(1, 1, 3, 4), randn(1, 1, 3, 4), randn(1, 1, 3, 4),
                                            mask=np.ones((3, 3), bool), is_causal=True), ValueError, ["not both"]),
    (lambda: F.self_attention(randn(1, 3, 10), 2), ShapeError, ["self_attention", "(1, 3, 10)", "n_head = 2"]),
    (lambda: F.self_attention(randn(1, 3, 12), 2, kv_cache=KVCache(1, 2, 2, 4)), ValueError, ["causal"]),
    (lambda: F.linear(randn(2, 3), randn(4, 5)), ShapeError, ["linear", "(2, 3)", "(4, 5)"]),
    (lambda: F.gelu(randn(2), approximate="fast"), ValueError, ["gelu", "fast"]),
    (lambda: F.linear_gelu(randn(2, 3), randn(3, 4), approximate="fast"), ValueError, ["linear_gelu", "fast"]),
    (lambda: F.linear_gelu(randn(2, 3), randn(4, 4)), ShapeError, ["linear_gelu", "(2, 3)", "(4, 4)"]),
    (lambda: F.linear_add_layer_norm(randn(2, 3), randn(3, 4), None, randn(2, 5), None, None), ShapeError,
     ["linear_add_layer_norm", "(2, 4)", "(2, 5)"]),
    (lambda: F.lora_linear(randn(2, 3), randn(3, 4), None, randn(3, 2), randn(3, 4), 1.0), ShapeError,
     ["lora_linear", "lora_B (3, 4)", "(r, 4)"]),
])
def test_clear_errors(call, error, words):
    with pytest.raises(error) as info:
        call()
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_cross_entropy_backward_twice_with_retain_graph():
    # the last backward computes the gradient in the saved array's place; a retained graph must not
    logits = randn(6, 5)
    loss = F.cross_entropy(logits, TARGETS_NV)
    loss.backward(retain_graph=True)
    first = logits.grad.copy()
    loss.backward()
    np.testing.assert_allclose(logits.grad, 2 * first, rtol=1e-12)


def test_kl_div_is_zero_for_a_student_equal_to_its_teacher_and_refuses_bad_input():
    logits = Tensor(np.random.default_rng(0).standard_normal((4, 9)), requires_grad=True)
    loss = F.kl_div(logits, logits.detach(), temperature=3.0)
    assert abs(loss.item()) < 1e-15
    loss.backward()
    np.testing.assert_allclose(logits.grad, 0.0, atol=1e-15)
    with pytest.raises(ShapeError, match="one shape"):
        F.kl_div(logits, logits[:, :4])
    with pytest.raises(ValueError, match="temperature must be a positive number, got 0"):
        F.kl_div(logits, logits, temperature=0)


def test_kl_div_of_float32_stays_float32():
    s = Tensor(np.random.default_rng(1).standard_normal((3, 5)).astype(np.float32), requires_grad=True)
    loss = F.kl_div(s, s.detach() * 2, temperature=2.0)
    loss.backward()
    assert loss.dtype == np.float32 and s.grad.dtype == np.float32


def test_cosine_loss_is_zero_for_parallel_rows_whatever_their_lengths_and_refuses_bad_input():
    hidden = Tensor(np.random.default_rng(0).standard_normal((2, 3, 8)), requires_grad=True)
    lengths = np.random.default_rng(1).uniform(0.5, 3.0, size=(2, 3, 1))
    loss = F.cosine_loss(hidden, Tensor(hidden.data * lengths))
    assert abs(loss.item()) < 1e-12  # (eps = 1e-12 in each squared length keeps cos a hair below 1)
    loss.backward()
    np.testing.assert_allclose(hidden.grad, 0.0, atol=1e-12)
    assert F.cosine_loss(hidden, Tensor(-hidden.data)).item() == pytest.approx(2.0)
    with pytest.raises(ShapeError, match="one shape"):
        F.cosine_loss(hidden, hidden[..., :4])
    with pytest.raises(ShapeError, match="need a mask of shape"):
        F.cosine_loss(hidden, hidden, np.ones((2, 4), dtype=bool))
