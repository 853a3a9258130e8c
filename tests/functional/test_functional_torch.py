"""PyTorch parity for npllm.functional: values and gradients vs torch.nn.functional.

float64 is compared tightly (both sides are exact to ~1e-15; only summation
order differs).  float32 tolerances: each side rounds every intermediate to
24 bits (~6e-8 relative), and reductions over up to a few hundred terms in a
different order (BLAS blocking, pairwise sums) grow that to ~1e-6 relative;
gradients pass through a subtraction (p - onehot, dP - rowsum) that can
cancel, so they get an absolute floor as well.  Hence FLOAT32 below.
"""

import numpy as np
import pytest

import npllm.functional as F
from npllm import Tensor

pytestmark = pytest.mark.parity
torch = pytest.importorskip("torch")
TF = torch.nn.functional

FLOAT64 = dict(rtol=1e-10, atol=1e-12)
FLOAT32 = dict(rtol=2e-5, atol=2e-6)
TOLERANCE = {np.float64: FLOAT64, np.float32: FLOAT32}
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}
DTYPES = [np.float64, np.float32]


def pair(shape, dtype, seed):
    """The same random values as an npllm Tensor and a torch tensor, both requiring grad."""
    data = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return Tensor(data.copy(), requires_grad=True), torch.tensor(data, requires_grad=True)


def check(ours, theirs, our_inputs, their_inputs, dtype):
    """Values equal; then, under the same random upstream gradient, every input gradient equal."""
    tolerance = TOLERANCE[dtype]
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), **tolerance)
    upstream = np.random.default_rng(99).standard_normal(ours.shape).astype(dtype)
    ours.backward(upstream)
    theirs.backward(torch.tensor(upstream))
    for mine, reference in zip(our_inputs, their_inputs):
        assert mine.grad.dtype == dtype
        np.testing.assert_allclose(mine.grad, reference.grad.numpy(), **tolerance)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_softmax_and_log_softmax(dtype, axis):
    for ours_fn, theirs_fn in [(F.softmax, TF.softmax), (F.log_softmax, TF.log_softmax)]:
        x, tx = pair((4, 5, 6), dtype, seed=0)
        check(ours_fn(x, axis), theirs_fn(tx, dim=axis), [x], [tx], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(12, 50), (2, 6, 50)])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cross_entropy(dtype, shape, label_smoothing):
    rng = np.random.default_rng(1)
    targets = rng.integers(0, shape[-1], size=shape[:-1])
    targets[rng.random(shape[:-1]) < 0.25] = -100
    x, tx = pair(shape, dtype, seed=2)
    ours = F.cross_entropy(x, targets, label_smoothing=label_smoothing)
    theirs = TF.cross_entropy(tx.reshape(-1, shape[-1]), torch.tensor(targets.reshape(-1)),
                              ignore_index=-100, label_smoothing=label_smoothing)
    check(ours, theirs, [x], [tx], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kl_div_is_torchs_batchmean_kl_times_t_squared(dtype, temperature):
    """PyTorch's convention for distillation: kl_div(log q, log p, log_target=True, "batchmean") * T^2."""
    s, ts = pair((12, 40), dtype, seed=3)
    t, tt = pair((12, 40), dtype, seed=4)
    ours = F.kl_div(s, t, temperature=temperature)
    theirs = TF.kl_div(TF.log_softmax(ts / temperature, dim=-1), TF.log_softmax(tt / temperature, dim=-1),
                       log_target=True, reduction="batchmean") * temperature ** 2
    check(ours, theirs, [s, t], [ts, tt], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cosine_loss_is_torchs_cosine_embedding_loss(dtype):
    """DistilBERT's hidden-state loss: cosine_embedding_loss(s, t, target 1) = mean of 1 - cos over the rows."""
    s, ts = pair((3, 5, 24), dtype, seed=5)
    t, tt = pair((3, 5, 24), dtype, seed=6)
    mask = np.random.default_rng(7).random((3, 5)) > 0.3
    ours = F.cosine_loss(s, t, mask)
    rows = torch.tensor(mask.reshape(-1))
    theirs = TF.cosine_embedding_loss(ts.reshape(-1, 24)[rows], tt.reshape(-1, 24)[rows],
                                      torch.ones(int(mask.sum()), dtype=TORCH_DTYPE[dtype]))
    check(ours, theirs, [s, t], [ts, tt], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm(dtype, affine):
    x, tx = pair((3, 7, 32), dtype, seed=3)
    w, tw = pair((32,), dtype, seed=4)
    b, tb = pair((32,), dtype, seed=5)
    if affine:
        check(F.layer_norm(x, w, b), TF.layer_norm(tx, (32,), tw, tb, eps=1e-5), [x, w, b], [tx, tw, tb], dtype)
    else:
        check(F.layer_norm(x), TF.layer_norm(tx, (32,), eps=1e-5), [x], [tx], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_gelu(dtype, approximate):
    x, tx = pair((5, 40), dtype, seed=6)
    check(F.gelu(x, approximate), TF.gelu(tx, approximate=approximate), [x], [tx], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding(dtype):
    ids = np.random.default_rng(7).integers(0, 10, size=(4, 9))  # 36 lookups into 10 rows: many repeats
    w, tw = pair((10, 8), dtype, seed=8)
    check(F.embedding(ids, w), TF.embedding(torch.tensor(ids), tw), [w], [tw], dtype)
    w, tw = pair((10, 8), dtype, seed=8)
    check(F.embedding(ids, w, padding_idx=4), TF.embedding(torch.tensor(ids), tw, padding_idx=4), [w], [tw], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_linear(dtype):
    x, tx = pair((2, 5, 12), dtype, seed=9)
    w, tw = pair((12, 7), dtype, seed=10)
    b, tb = pair((7,), dtype, seed=11)
    check(F.linear(x, w, b), TF.linear(tx, tw.T, tb), [x, w, b], [tx, tw, tb], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("Tq, Tk, masking", [
    (6, 6, "causal"), (2, 6, "causal"), (6, 6, "mask"), (6, 6, "none"), (3, 5, "mask"),
])
def test_scaled_dot_product_attention(dtype, Tq, Tk, masking):
    q, tq = pair((2, 3, Tq, 8), dtype, seed=12)
    k, tk = pair((2, 3, Tk, 8), dtype, seed=13)
    v, tv = pair((2, 3, Tk, 8), dtype, seed=14)
    mask = np.random.default_rng(15).random((2, 1, Tq, Tk)) > 0.3 if masking == "mask" else None
    if mask is not None:
        mask[..., 0] = True  # every query sees a key (PyTorch's math kernel gives NaN for empty rows)
    ours = F.scaled_dot_product_attention(q, k, v, mask=mask, is_causal=masking == "causal")
    if masking == "causal":  # PyTorch aligns is_causal to the *top-left*; spell out our bottom-right mask
        mask = F.causal_mask(Tq, Tk)
    theirs = TF.scaled_dot_product_attention(tq, tk, tv, attn_mask=None if mask is None else torch.tensor(mask))
    check(ours, theirs, [q, k, v], [tq, tk, tv], dtype)
