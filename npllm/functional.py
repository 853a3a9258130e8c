"""Fused ops: the transformer's building blocks, each one forward and one hand-derived backward.

Every op here could be written with the primitives of ``npllm.ops`` (and is,
in ``functional_reference.py``, which the tests use as the oracle).  Fusing
them into one ``Function`` buys three things:

1. **Numerical stability.**  Softmax subtracts each row's maximum before
   ``exp`` whenever the inputs are large enough to need it (the result is
   unchanged, since softmax(x) = softmax(x - c), but no ``exp`` overflows;
   see ``_exp_needs_no_shift``), and cross-entropy works with log-probabilities
   ``x - logsumexp(x)`` instead of taking the log of a probability that may
   have underflowed to 0.
2. **Speed.**  A composed softmax records five ops and keeps five arrays; the
   fused one keeps only its output and its backward is one short formula.
   Work happens in place on arrays the op itself allocated (``out=``,
   ``-=``), matrix products go to BLAS as few large 2-D calls, and float32 in
   means float32 throughout (a float64 array or ``np.float64`` scalar would
   silently promote; Python floats do not).
3. **Memory.**  Only what backward needs is saved.

Each docstring derives the backward in a few lines; each backward quotes the
forward line it inverts.  Conventions: the gradient arriving in backward is
``grad`` and is never modified in place (it may be shared with another op);
gradients are named with a ``d`` prefix; B, T, C, H, D, V are batch, time,
channels, heads, head size and vocabulary size.

Left out on purpose: reductions other than the mean in cross-entropy,
class weights, and attention variants (ALiBi, sliding windows).
"""

import math
from functools import partial

import numpy as np

from npllm import ops
from npllm.ops.elementwise import GELU_CUBIC, SQRT_2_OVER_PI
from npllm.ops.parallel import flat, map_rows
from npllm.tensor import Function, ShapeError, Tensor

__all__ = [
    "softmax", "log_softmax", "cross_entropy", "layer_norm", "gelu", "embedding", "dropout",
    "scaled_dot_product_attention", "self_attention", "linear", "IGNORE_INDEX",
]


def _array(x):
    return x.data if isinstance(x, Tensor) else np.asarray(x)


def _softmax_forward(x, axis):
    """exp(x - max) / sum(exp(x - max)) along ``axis``, in a freshly allocated array."""
    probs = x - x.max(axis=axis, keepdims=True)
    np.exp(probs, out=probs)
    probs /= probs.sum(axis=axis, keepdims=True)
    return probs


def _dot_along(a, b, axis):
    """sum(a * b, axis, keepdims=True) without the temporary a * b (einsum: ~5x faster here)."""
    if axis in (-1, a.ndim - 1):  # the common case, without moveaxis's Python overhead
        return np.einsum("...i,...i->...", a, b)[..., None]
    dot = np.einsum("...i,...i->...", np.moveaxis(a, axis, -1), np.moveaxis(b, axis, -1))
    return np.expand_dims(dot, axis)


def _softmax_backward(dprobs, probs, axis):
    """dx = p * (dp - sum(dp * p)); ``dprobs`` must be an array this op owns (it is overwritten)."""
    dprobs -= _dot_along(dprobs, probs, axis)
    dprobs *= probs
    return dprobs


def _softmax_rows_backward(dprobs, probs):
    """``_softmax_backward`` along the last axis, for ``map_rows``."""
    _softmax_backward(dprobs, probs, axis=-1)


def _row_sums(x, out=None):
    """Sums along the last axis, shape x.shape[:-1] (into ``out`` if given): a product with a vector of ones.

    BLAS (gemv) streams the rows once; NumPy's ``x.sum(axis=-1)`` was ~4x
    slower here on rows of 64-1024 entries (a reduction has a cost per row).
    """
    return np.matmul(x, np.ones(x.shape[-1], dtype=x.dtype), out=out)


def _column_sums(rows):
    """Sums over the rows of a 2-D array, shape (columns,): the bias gradients, as ones^T @ rows (gemv).

    BLAS streams the rows once; ``rows.sum(axis=0)`` was ~4x slower here.
    """
    return np.ones(len(rows), dtype=rows.dtype) @ rows


def _exp_needs_no_shift(x) -> bool:
    """True when softmax along the last axis of ``x`` may take e^x as it is, without subtracting the row max.

    softmax(x) = softmax(x - c) for any c per row.  The usual shift c = the
    row's max keeps e^x from overflowing and puts each row sum S in [1, n]
    (n entries per row), but it costs a max along every row and a
    subtraction pass, the two slowest of softmax's passes on short rows (a
    reduction has a cost per row).  c = 0 is as good when every entry lies
    in (-40, 20 - ln n): then e^-40 < S < e^20, so S, 1/S, and a gradient
    divided by S (cross-entropy's g / (n S)) stay ordinary float32 numbers
    as they do with the shift, at most e^40 larger or e^20 smaller (float32
    spans e^-87 to e^88), and every term e^x is a normal number, as
    precise as e^(x - c).  Two flat reductions (one pass each, no cost per
    row) check it; attention scores and the logits of a model in training
    are nearly always in range.  Outside it the callers shift by the row
    max as usual.  NaN and +-inf fail the comparisons, so they take the
    usual path too; an empty ``x`` needs nothing.
    """
    if x.size == 0:
        return True
    return bool(x.min() > -40.0) and bool(x.max() < 20.0 - math.log(x.shape[-1]))


def _masked_softmax(scores, bias=None):
    """Softmax along the last axis in place, after adding ``bias`` (0 / -inf) to the last columns; for ``map_rows``.

    ``bias`` covers the last ``bias.shape[-1]`` columns of ``scores`` (in a
    causal block of queries, every masked key is among the last ones).  The
    shift is the row max only when ``_exp_needs_no_shift`` says the scores
    need one (checked before masking: the -inf are not scores).  A row whose
    every entry is masked becomes zeros rather than 0/0.
    """
    shift = not _exp_needs_no_shift(scores)
    if bias is not None:
        scores[..., scores.shape[-1] - bias.shape[-1]:] += bias
    if shift:
        row_max = scores.max(axis=-1, keepdims=True)
        if bias is not None:
            row_max[row_max == -np.inf] = 0.0  # a row with no visible key: exp(-inf) = 0 everywhere
        scores -= row_max
    np.exp(scores, out=scores)
    row_sum = _row_sums(scores)[..., None]
    if bias is not None:
        row_sum[row_sum == 0.0] = 1.0  # ... and 0 / 1 = 0 instead of 0 / 0
    scores *= np.reciprocal(row_sum, out=row_sum)


# --- softmax and log-softmax ---------------------------------------------
class Softmax(Function):
    """p_i = e^(x_i) / sum_j e^(x_j)  along one axis.

        dp_i/dx_k = p_i (delta_ik - p_k)
        dL/dx_k = sum_i g_i p_i (delta_ik - p_k) = p_k (g_k - sum_i g_i p_i)
    """

    @staticmethod
    def forward(ctx, x, axis=-1):
        probs = _softmax_forward(x, axis)
        ctx.save_for_backward(probs)
        ctx.axis = axis
        return probs

    @staticmethod
    def backward(ctx, grad):
        (probs,) = ctx.saved
        # forward: probs = exp(x - max) / sum(exp(x - max))
        return _softmax_backward(grad.copy(), probs, ctx.axis)


class LogSoftmax(Function):
    """y_i = x_i - log sum_j e^(x_j)  along one axis.

        dy_i/dx_k = delta_ik - p_k,   p = softmax(x) = e^y
        dL/dx_k = g_k - p_k sum_i g_i
    """

    @staticmethod
    def forward(ctx, x, axis=-1):
        shifted = x - x.max(axis=axis, keepdims=True)
        log_sum_exp = np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
        shifted -= log_sum_exp
        ctx.save_for_backward(shifted)
        ctx.axis = axis
        return shifted

    @staticmethod
    def backward(ctx, grad):
        (log_probs,) = ctx.saved
        # forward: log_probs = (x - max) - log(sum(exp(x - max)))
        dx = np.exp(log_probs)
        dx *= grad.sum(axis=ctx.axis, keepdims=True)
        np.subtract(grad, dx, out=dx)
        return dx


def softmax(x, axis=-1):
    """Softmax along ``axis`` (max-subtracted, so large inputs do not overflow)."""
    return Softmax.apply(x, axis=axis)


def log_softmax(x, axis=-1):
    """log(softmax(x)) along ``axis``, computed as x - logsumexp(x) (never log of 0)."""
    return LogSoftmax.apply(x, axis=axis)


# --- cross-entropy -------------------------------------------------------
IGNORE_INDEX = -100  # a target with this value is not learned from (padding, prompts): PyTorch's convention


class CrossEntropy(Function):
    """Mean negative log-likelihood of the targets, with optional label smoothing.

    For one row of logits x (length V) with target t, let p = softmax(x) and
    lse = log sum_j e^(x_j), so log p_j = x_j - lse.  With smoothing eps the
    target distribution is q = (1 - eps) onehot(t) + eps / V, and

        loss_row = -sum_j q_j log p_j = lse - (1 - eps) x_t - (eps / V) sum_j x_j
        d loss_row / dx_j = p_j - q_j = p_j - (1 - eps) [j = t] - eps / V.

    The loss is the mean over the n rows whose target is not ``ignore_index``;
    ignored rows get zero gradient, the others (p - q) / n.  Forward keeps
    e^(x - c) (unnormalised; c the row max, or 0 when that is safe, see
    ``_exp_needs_no_shift``) and the row sums; backward divides by the sums
    while scaling, so p is never stored separately, and the one-hot is never
    built: (1 - eps) is subtracted at the n target positions only.  The
    forward's passes over the (N, V) logits (two, or four with the shift) run
    over cache-sized blocks of rows on all cores (``map_rows``).
    """

    @staticmethod
    def forward(ctx, logits, targets, ignore_index=IGNORE_INDEX, label_smoothing=0.0):
        V = logits.shape[-1]
        rows = logits.reshape(-1, V)  # (N, V)
        targets = targets.reshape(-1)  # (N,)
        keep = targets != ignore_index
        count = int(np.count_nonzero(keep))
        safe_targets = np.where(keep, targets, 0)
        exp_shifted = np.empty_like(rows)
        row_shift, row_sum = np.empty((2, len(rows), 1), dtype=rows.dtype)  # (N, 1) each
        map_rows(_exp_shifted_rows, rows, exp_shifted, row_shift, row_sum)
        log_sum_exp = (np.log(row_sum) + row_shift)[:, 0]  # (N,)
        target_logit = rows[np.arange(len(rows)), safe_targets]
        loss_rows = log_sum_exp - (1.0 - label_smoothing) * target_logit
        if label_smoothing:
            loss_rows -= label_smoothing * rows.mean(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):  # all ignored: 0/0 = NaN, as PyTorch
            loss = np.divide(loss_rows @ keep.astype(logits.dtype), count, dtype=logits.dtype)
        ctx.save_for_backward(exp_shifted, row_sum, keep, safe_targets)
        ctx.shape, ctx.count, ctx.label_smoothing = logits.shape, count, label_smoothing
        return loss

    @staticmethod
    def backward(ctx, grad):
        exp_shifted, row_sum, keep, safe_targets = ctx.saved
        if ctx.count == 0:
            return np.zeros(ctx.shape, dtype=grad.dtype), None
        eps, V = ctx.label_smoothing, exp_shifted.shape[1]
        # forward: loss = sum over kept rows of (lse - (1 - eps) x_t - eps/V sum_j x_j) / n
        row_weight = keep * (grad / ctx.count)  # (N,): g/n on kept rows, 0 on ignored ones
        dlogits = exp_shifted if ctx.last_backward else exp_shifted.copy()  # in place: no new (N, V) array
        dlogits *= row_weight[:, None] / row_sum  # p g/n
        kept_rows = np.flatnonzero(keep)
        dlogits[kept_rows, safe_targets[kept_rows]] -= (1.0 - eps) * row_weight[kept_rows]
        if eps:
            dlogits -= (eps / V) * row_weight[:, None]
        return dlogits.reshape(ctx.shape), None


def _exp_shifted_rows(rows, exp_shifted, row_shift, row_sum):
    """For a block of rows: exp_shifted = e^(rows - row_shift) and row_sum = its row sums (in place).

    row_shift is each row's max, or 0 where ``_exp_needs_no_shift`` allows (two passes fewer).
    """
    if _exp_needs_no_shift(rows):
        row_shift[...] = 0.0
        np.exp(rows, out=exp_shifted)
    else:
        np.max(rows, axis=1, keepdims=True, out=row_shift)
        np.subtract(rows, row_shift, out=exp_shifted)
        np.exp(exp_shifted, out=exp_shifted)
    _row_sums(exp_shifted, out=row_sum[:, 0])


def cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, label_smoothing=0.0):
    """Mean cross-entropy of integer ``targets`` under ``logits``.

    ``logits``: (N, V) or (B, T, V) (any (..., V)); ``targets``: integer ids of
    shape (N,) or (B, T), an ndarray or a Tensor.  Rows whose target equals
    ``ignore_index`` are left out of the mean.  When every row is ignored the
    loss is NaN (0/0) and the gradient zero, exactly as in PyTorch.
    """
    logits_shape = _array(logits).shape
    targets = _array(targets)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integer class ids, got dtype {targets.dtype}")
    if len(logits_shape) < 2 or targets.shape != logits_shape[:-1]:
        raise ShapeError(
            f"cross_entropy: logits of shape {logits_shape} need targets of shape {logits_shape[:-1]}"
            f" (one id per row of V = {logits_shape[-1] if logits_shape else '?'} logits),"
            f" got targets of shape {targets.shape}"
        )
    V = logits_shape[-1]
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= V))
    if bad.any():
        raise ValueError(
            f"cross_entropy: target id {int(targets[bad][0])} is out of range for V = {V} classes"
            f" (valid ids are 0..{V - 1}, or ignore_index = {ignore_index})"
        )
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    return CrossEntropy.apply(logits, targets, ignore_index=ignore_index, label_smoothing=float(label_smoothing))


# --- layer norm ----------------------------------------------------------
class LayerNorm(Function):
    """y = xhat * w + b,  xhat = (x - mean) * rstd,  rstd = 1 / sqrt(var + eps), over the last axis (C).

    With g = dL/dy and gx = g * w (the gradient reaching xhat):
        dw = sum over rows of g * xhat,   db = sum over rows of g
        dx = rstd * (gx - mean(gx) - xhat * mean(gx * xhat))
    (the two means are the paths through the row's mean and through its variance).
    Both directions run over cache-sized blocks of rows on all cores (``map_rows``).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps=1e-5):
        C = x.shape[-1]
        rows = x.reshape(-1, C)  # (N, C)
        xhat, out = np.empty_like(rows), np.empty_like(rows)
        rstd = np.empty((len(rows), 1), dtype=rows.dtype)  # (N, 1)
        map_rows(partial(_layer_norm_forward, weight=weight, bias=bias, eps=eps), rows, xhat, rstd, out)
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.shape = x.shape
        return out.reshape(x.shape)

    @staticmethod
    def backward(ctx, grad):
        xhat, rstd, weight = ctx.saved
        need_x, need_weight, need_bias = ctx.needs_input_grad
        C = xhat.shape[1]
        grad_rows = grad.reshape(-1, C)  # (N, C)
        dweight = np.einsum("ij,ij->j", grad_rows, xhat) if need_weight else None
        dbias = _column_sums(grad_rows) if need_bias else None
        dx = None
        if need_x:
            dx = np.empty_like(xhat)
            map_rows(partial(_layer_norm_backward, weight=weight), grad_rows, xhat, rstd, dx)
            dx = dx.reshape(ctx.shape)
        return dx, dweight, dbias


def _layer_norm_forward(rows, xhat, rstd, out, weight, bias, eps):
    """One block of rows of LayerNorm.forward, written into xhat, rstd and out."""
    C = rows.shape[1]
    mean = _row_sums(rows)[:, None]
    mean *= 1.0 / C
    np.subtract(rows, mean, out=xhat)
    np.divide(_dot_along(xhat, xhat, axis=1), C, out=rstd)  # the variance
    rstd += eps
    np.sqrt(rstd, out=rstd)
    np.reciprocal(rstd, out=rstd)
    xhat *= rstd
    if weight is not None:
        np.multiply(xhat, weight, out=out)
    else:
        out[...] = xhat
    if bias is not None:
        out += bias


def _layer_norm_backward(grad_rows, xhat, rstd, dx, weight):
    """One block of rows of LayerNorm.backward's dx, written into dx."""
    C = xhat.shape[1]
    # forward: out = xhat * weight + bias;  xhat = (x - mean) * rstd
    if weight is not None:
        np.multiply(grad_rows, weight, out=dx)  # dxhat
    else:
        dx[...] = grad_rows
    mean_dxhat = _row_sums(dx)[:, None]
    mean_dxhat *= 1.0 / C
    mean_dxhat_xhat = _dot_along(dx, xhat, axis=1)
    mean_dxhat_xhat *= 1.0 / C
    dx -= mean_dxhat
    dx -= xhat * mean_dxhat_xhat
    dx *= rstd


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    """Normalise the last axis to zero mean and unit variance, then scale by ``weight`` and shift by ``bias``."""
    C = _array(x).shape[-1]
    for name, param in (("weight", weight), ("bias", bias)):
        if param is not None and _array(param).shape != (C,):
            raise ShapeError(
                f"layer_norm: {name} must have shape ({C},) to match the last axis of x {_array(x).shape},"
                f" got {_array(param).shape}"
            )
    return LayerNorm.apply(x, weight, bias, eps=eps)


# --- GELU ----------------------------------------------------------------
class GELU(Function):
    """GPT-2's GELU: y = x/2 (1 + t),  t = tanh(u),  u = s x (1 + c x^2),  s = sqrt(2/pi), c = 0.044715.

        dy/dx = (1 + t)/2 + x/2 (1 - t^2) du/dx,   du/dx = s (1 + 3 c x^2)

    The same function as ``ops.gelu``; this version folds the constants and
    works in place (x^3 is never formed: float32 ``x ** 3`` is ~70x slower
    than multiplies here), 8 passes forward and 11 back, each made over
    cache-sized pieces on all cores (``map_rows``), so that the passes
    read L2 cache rather than memory.
    """

    @staticmethod
    def forward(ctx, x):
        x = np.ascontiguousarray(x)
        tanh_u, out = np.empty_like(x), np.empty_like(x)
        map_rows(_gelu_forward, flat(x), flat(tanh_u), flat(out))
        ctx.save_for_backward(x, tanh_u)
        return out

    @staticmethod
    def backward(ctx, grad):
        x, tanh_u = ctx.saved
        dx = np.empty_like(x)
        map_rows(_gelu_backward, flat(x), flat(tanh_u), flat(np.ascontiguousarray(grad)), flat(dx))
        return dx


def _gelu_forward(x, tanh_u, out):
    """One piece of GELU.forward: tanh_u = tanh(u) and out = x/2 (1 + tanh_u), written in place."""
    np.square(x, out=tanh_u)
    tanh_u *= SQRT_2_OVER_PI * GELU_CUBIC
    tanh_u += SQRT_2_OVER_PI
    tanh_u *= x  # u = s x (1 + c x^2)
    np.tanh(tanh_u, out=tanh_u)
    np.add(tanh_u, 1.0, out=out)
    out *= x
    out *= 0.5


def _gelu_backward(x, tanh_u, grad, dx):
    """One piece of GELU.backward: dx = grad * dy/dx, written in place."""
    # forward: out = x/2 * (1 + tanh(s x (1 + c x^2)))
    np.square(x, out=dx)
    dx *= 1.5 * SQRT_2_OVER_PI * GELU_CUBIC
    dx += 0.5 * SQRT_2_OVER_PI
    dx *= x  # x/2 du/dx
    scratch = np.square(tanh_u)
    np.subtract(1.0, scratch, out=scratch)
    dx *= scratch  # x/2 (1 - t^2) du/dx
    dx += 0.5
    np.multiply(tanh_u, 0.5, out=scratch)
    dx += scratch  # + (1 + t)/2
    dx *= grad


def gelu(x, approximate="tanh"):
    """GELU: ``approximate="tanh"`` is GPT-2's form (fused here), ``"none"`` the exact erf form (ops.gelu's)."""
    return GELU.apply(x) if approximate == "tanh" else ops.gelu(x, approximate)


# --- embedding -----------------------------------------------------------
class Embedding(Function):
    """y[n] = W[ids[n]]: a row lookup.   dW[v] = sum of g[n] over all n with ids[n] = v.

    The backward is a scatter-add, and repeated ids must accumulate.
    ``np.add.at(dW, ids, g)`` does it but is slow on rows (~7-14 ms for
    2048 x 384 here).  Measured alternatives (V=4096, C=384, N=2048):
    a one-hot matmul costs 2 V N C flops (~40 ms); sort + ``np.add.reduceat``
    ~4-12 ms; np.bincount per column ~20 ms.  What is fast: sort the ids, *assign*
    the first occurrence of each id (no conflicts, one fancy-index copy), and
    add only the repeats with ``np.add.at`` on a flat element index, NumPy's
    fast 1-D path: ~2 ms for uniform ids, ~3.5 ms for text-like (Zipf) ids.
    """

    @staticmethod
    def forward(ctx, ids, weight):
        ctx.ids, ctx.weight_shape = ids, weight.shape
        return weight[ids]

    @staticmethod
    def backward(ctx, grad):
        V, C = ctx.weight_shape
        ids = ctx.ids.reshape(-1)  # (N,)
        grad_rows = grad.reshape(-1, C)  # (N, C)
        # forward: out = weight[ids]
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        first = np.empty(len(ids), dtype=bool)
        first[:1] = True
        np.not_equal(sorted_ids[1:], sorted_ids[:-1], out=first[1:])
        dweight = np.zeros((V, C), dtype=grad.dtype)
        dweight[sorted_ids[first]] = grad_rows[order[first]]
        repeats = order[~first]
        if len(repeats):
            flat_index = (ids[repeats][:, None] * C + np.arange(C)).reshape(-1)  # (R * C,)
            np.add.at(dweight.reshape(-1), flat_index, grad_rows[repeats].reshape(-1))
        return None, dweight


def embedding(ids, weight):
    """Rows of ``weight`` (V, C) picked by integer ``ids`` of any shape: output (*ids.shape, C)."""
    ids = _array(ids)
    V = _array(weight).shape[0]
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be integers, got dtype {ids.dtype}")
    if _array(weight).ndim != 2:
        raise ShapeError(f"embedding: weight must be a (V, C) matrix, got shape {_array(weight).shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= V):
        bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
        raise ValueError(f"embedding: id {bad} is out of range for a table of V = {V} rows (valid ids are 0..{V - 1})")
    return Embedding.apply(ids, weight)


# --- dropout -------------------------------------------------------------
class Dropout(Function):
    """Inverted dropout: y = x * m / (1 - p), each m ~ Bernoulli(1 - p).   dx = g * m / (1 - p).

    Dividing by 1 - p during training keeps E[y] = x, so evaluation needs no
    rescaling.  The scaled mask m / (1 - p) is drawn once and saved.
    """

    @staticmethod
    def forward(ctx, x, p, rng):
        scaled_mask = (rng.random(x.shape, dtype=np.float32) >= p).astype(x.dtype)
        scaled_mask *= 1.0 / (1.0 - p)
        ctx.save_for_backward(scaled_mask)
        return x * scaled_mask

    @staticmethod
    def backward(ctx, grad):
        (scaled_mask,) = ctx.saved
        # forward: out = x * scaled_mask
        return grad * scaled_mask, None, None


def dropout(x, p, training, rng=None):
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p), when ``training``.

    ``rng`` is an explicit ``np.random.Generator`` so runs are reproducible.
    Identity when not training or p == 0; p == 1 zeroes everything.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"dropout: training with p={p} needs rng, a np.random.Generator, got {type(rng).__name__}")
    return Dropout.apply(x, p, rng)


# --- attention -----------------------------------------------------------
def causal_mask(Tq, Tk):
    """Boolean (Tq, Tk), True = may attend: query i sees key j when j <= i + (Tk - Tq).

    With Tq == Tk this is the lower triangle; with fewer queries than keys (a
    KV cache holding the past) the queries are the *last* Tq positions.
    """
    return np.tri(Tq, Tk, k=Tk - Tq, dtype=bool)


CAUSAL_BLOCKS = 2  # blocks of queries in causal attention (see _query_blocks)


def _query_blocks(Tq, Tk, causal):
    """Blocks of queries with the keys they may see, as (first query, end query, end key), the last block first.

    Causal query i sees keys j <= i + Tk - Tq, so the block of queries
    q0..q1-1 sees no key at or after k1 = q1 + Tk - Tq: right of k1 every
    score is masked and every probability 0, so no product is computed
    there.  With n equal blocks that leaves (n + 1) / 2n of the work: 3/4
    for the two blocks we use (more, smaller products measured slower
    here).  The last block sees every key (k1 = Tk); it comes first so
    that backward's first block writes dk and dv whole and the others add
    to their leading rows.  Without a causal mask (or with more queries
    than keys): one block of all queries and keys.
    """
    if not causal or Tq > Tk:
        return [(0, Tq, Tk)]
    size = -(-Tq // CAUSAL_BLOCKS)
    return [(q0, min(q0 + size, Tq), min(q0 + size, Tq) + Tk - Tq) for q0 in reversed(range(0, Tq, size))]


def _attention_forward(ctx, q, k, v, keep, dropout_p, rng, out=None, causal=False):
    """The forward of ``ScaledDotProductAttention`` (derivation there) on arrays; saves on ``ctx``.

    ``out`` is an optional (B, H, Tq, D) array to write the result into (a
    strided view is fine: BLAS takes its row stride).  ``causal`` (with
    ``keep`` the causal mask) computes each block of queries against the
    keys it may see only (``_query_blocks``).
    """
    scale = 1.0 / math.sqrt(q.shape[-1])
    q_scaled = q * scale
    Tq, Tk = q.shape[-2], k.shape[-2]
    probs = np.empty((*q.shape[:-1], Tk), dtype=q_scaled.dtype)  # (B, H, Tq, Tk) scores, made probabilities in place
    if out is None:
        out = np.empty((*q.shape[:-1], v.shape[-1]), dtype=q_scaled.dtype)
    bias = None
    if keep is not None:  # 0 where attending, -inf where not, as one (B, H, Tq, Tk) view
        bias = np.broadcast_to(np.where(keep, 0.0, -np.inf).astype(probs.dtype), probs.shape)
    scaled_mask = None
    if dropout_p > 0.0:
        scaled_mask = (rng.random(probs.shape, dtype=np.float32) >= dropout_p).astype(probs.dtype)
        scaled_mask *= 1.0 / (1.0 - dropout_p)
    blocks = _query_blocks(Tq, Tk, causal)
    for q0, q1, k1 in blocks:
        block_probs = probs[..., q0:q1, :k1]
        np.matmul(q_scaled[..., q0:q1, :], np.swapaxes(k[..., :k1, :], -1, -2), out=block_probs)
        if bias is None:
            map_rows(_masked_softmax, _matrices(block_probs))
        else:  # causal: every query of the block sees the keys before its last q1 - q0 ones
            masked_from = max(k1 - (q1 - q0), 0) if causal else 0
            map_rows(_masked_softmax, _matrices(block_probs), _matrices(bias[..., q0:q1, masked_from:k1]))
        probs[..., q0:q1, k1:] = 0.0  # the keys after the block's last query
        attention = block_probs if scaled_mask is None else block_probs * scaled_mask[..., q0:q1, :k1]
        np.matmul(attention, v[..., :k1, :], out=out[..., q0:q1, :])
    ctx.save_for_backward(q_scaled, k, v, probs, scaled_mask)
    ctx.scale, ctx.blocks = scale, blocks
    return out  # (B, H, Tq, D)


def _attention_backward(ctx, grad, need_q, need_k, need_v, out=(None, None, None)):
    """dq, dk, dv of ``_attention_forward`` (None where not needed), written into ``out`` when given.

    Block by block of queries, as forward; dk and dv sum over the blocks:
    the first block (which sees every key) writes them, the others add to
    the rows of the keys they see.
    """
    q_scaled, k, v, probs, scaled_mask = ctx.saved
    dq, dk, dv = [(np.empty(like.shape, dtype=grad.dtype) if given is None else given) if needed else None
                  for needed, given, like in zip((need_q, need_k, need_v), out, (q_scaled, k, v))]
    for n, (q0, q1, k1) in enumerate(ctx.blocks):
        block_probs, block_grad = probs[..., q0:q1, :k1], grad[..., q0:q1, :]
        block_mask = None if scaled_mask is None else scaled_mask[..., q0:q1, :k1]
        # forward: out = attention @ v,  attention = probs * scaled_mask
        if need_v:
            attention = block_probs if block_mask is None else block_probs * block_mask
            _matmul_into(np.swapaxes(attention, -1, -2), block_grad, dv[..., :k1, :], add=n > 0)
        dprobs = block_grad @ np.swapaxes(v[..., :k1, :], -1, -2)  # (B, H, q1 - q0, k1)
        if block_mask is not None:
            dprobs *= block_mask
        # forward: probs = softmax(scores), scores = (q * scale) @ k^T
        map_rows(_softmax_rows_backward, _matrices(dprobs), _matrices(block_probs))
        dscores = dprobs
        if need_q:
            np.matmul(dscores, k[..., :k1, :], out=dq[..., q0:q1, :])
            dq[..., q0:q1, :] *= ctx.scale
        if need_k:
            _matmul_into(np.swapaxes(dscores, -1, -2), q_scaled[..., q0:q1, :], dk[..., :k1, :], add=n > 0)
    return dq, dk, dv


def _matrices(x):
    """(B, H, rows, columns) (any leading axes) as one (B * H, rows, columns) stack, for ``map_rows``.

    A view for the arrays written through it, blocks of contiguous (B, H, Tq, Tk)
    arrays (B's stride is H times H's); a broadcast mask may be copied, which is fine: it is only read.
    """
    return x.reshape(-1, *x.shape[-2:])


def _matmul_into(a, b, out, add):
    """out = a @ b, or out += a @ b when ``add``."""
    if add:
        out += a @ b
    else:
        np.matmul(a, b, out=out)


class ScaledDotProductAttention(Function):
    """out = P' v,  P' = P * m/(1-p) (dropout),  P = softmax(S),  S = q k^T / sqrt(D) (masked to -inf).

    Per (batch, head), with O = P' V and g = dL/dO:
        dV = P'^T g
        dP' = g V^T,   dP = dP' * m/(1-p)
        dS = P * (dP - rowsum(dP * P))          (the softmax backward)
        dQ = dS K / sqrt(D),   dK = dS^T Q / sqrt(D)
    Masked entries have P = 0, hence dS = 0: no gradient crosses the mask.
    q is scaled by 1/sqrt(D) before the product ((Tq, D) multiplies instead
    of (Tq, Tk)) and saved scaled, which is what dK needs; the mask is
    added as a bias of 0 / -inf (one pass, cheaper than a masked copy).
    A query row that may see no key at all outputs zeros (as PyTorch does)
    instead of 0/0.
    """

    @staticmethod
    def forward(ctx, q, k, v, keep=None, dropout_p=0.0, rng=None, causal=False):
        return _attention_forward(ctx, q, k, v, keep, dropout_p, rng, causal=causal)

    @staticmethod
    def backward(ctx, grad):
        return (*_attention_backward(ctx, grad, *ctx.needs_input_grad[:3]), None)


class SelfAttention(Function):
    """Multi-head self-attention from the packed projection: qkv (B, T, 3C) -> heads merged, (B, T, C).

    The same function as

        q, k, v = split(qkv, 3)                          three (B, T, C) pieces
        q, k, v = each viewed (B, T, H, D), transposed (B, H, T, D)
        y = scaled_dot_product_attention(q, k, v)       (B, H, T, D)
        y = y transposed (B, T, H, D), viewed (B, T, C)

    but with no op of its own for the split and the head reshapes.  Those
    compute nothing, so fusing them changes no formula; it changes what is
    allocated.  Composed, each of the three slices' backward builds a zero
    (B, T, 3C) array and writes its piece into it, and the engine adds the
    three.  Here q, k, v are *views* of qkv, read in place by BLAS (their rows
    are 3C apart), and backward writes dq, dk, dv straight into the three
    slots of one (B, T, 3C) gradient; the output is written head by head
    into its (B, T, H, D) place, so merging the heads is free as well.

    With a ``kv_cache`` (generation), the new keys and values are appended to
    it and the queries attend to all cached positions.  The cached keys and
    values of earlier calls are constants; the new ones receive dk, dv from
    the last T rows of the cache's gradient.
    """

    @staticmethod
    def forward(ctx, qkv, n_head, is_causal=False, keep=None, dropout_p=0.0, rng=None, kv_cache=None):
        B, T, C3 = qkv.shape
        C = C3 // 3
        heads = qkv.reshape(B, T, 3, n_head, C // n_head).transpose(2, 0, 3, 1, 4)  # (3, B, H, T, D) view
        q, k, v = heads
        if kv_cache is not None:
            k, v = kv_cache.append(k, v)  # (B, H, Tk, D): all cached positions
        causal = is_causal and T > 1  # (one query, the newest position, sees every key: no mask)
        if causal:
            keep = causal_mask(T, k.shape[2])
        out = np.empty((B, T, n_head, C // n_head), dtype=qkv.dtype)  # (B, T, H, D)
        _attention_forward(ctx, q, k, v, keep, dropout_p, rng, out=out.transpose(0, 2, 1, 3), causal=causal)
        ctx.heads_shape = heads.shape
        return out.reshape(B, T, C)

    @staticmethod
    def backward(ctx, grad):
        _, B, H, T, D = ctx.heads_shape
        dqkv = np.empty((B, T, 3, H, D), dtype=grad.dtype)
        dq, dk, dv = dqkv.transpose(2, 0, 3, 1, 4)  # (B, H, T, D) views, as in forward
        dheads = grad.reshape(B, T, H, D).transpose(0, 2, 1, 3)  # forward: out = y (B, H, T, D) merged
        Tk = ctx.saved[1].shape[2]
        if Tk == T:
            _attention_backward(ctx, dheads, True, True, True, out=(dq, dk, dv))
        else:  # a KV cache: only the last T keys and values are this call's
            _, dk_all, dv_all = _attention_backward(ctx, dheads, True, True, True, out=(dq, None, None))
            dk[...], dv[...] = dk_all[:, :, Tk - T:], dv_all[:, :, Tk - T:]
        return dqkv.reshape(B, T, 3 * H * D)


def scaled_dot_product_attention(q, k, v, mask=None, is_causal=False, dropout_p=0.0, rng=None):
    """softmax(q k^T / sqrt(D) + masking) v, fused, for q (B, H, Tq, D) and k, v (B, H, Tk, D).

    ``is_causal``: query i attends to keys j <= i + Tk - Tq (see ``causal_mask``).
    ``mask``: boolean, True = attend, broadcastable to (B, H, Tq, Tk).  Give one or the other.
    ``dropout_p`` > 0 drops attention weights using ``rng`` (a np.random.Generator).
    """
    q_shape, k_shape, v_shape = _array(q).shape, _array(k).shape, _array(v).shape
    if not (len(q_shape) == len(k_shape) == len(v_shape) >= 2) or q_shape[-1] != k_shape[-1] \
            or k_shape[:-1] != v_shape[:-1] or q_shape[:-2] != k_shape[:-2]:
        raise ShapeError(
            "scaled_dot_product_attention: need q (B, H, Tq, D), k (B, H, Tk, D), v (B, H, Tk, Dv);"
            f" got q {q_shape}, k {k_shape}, v {v_shape}"
        )
    Tq, Tk = q_shape[-2], k_shape[-2]
    keep = _attention_mask("scaled_dot_product_attention", mask, is_causal, dropout_p, rng,
                           q_shape[:-2] + (Tq, Tk))
    if is_causal:
        keep = causal_mask(Tq, Tk)
    return ScaledDotProductAttention.apply(q, k, v, keep, dropout_p=dropout_p, rng=rng, causal=is_causal)


def self_attention(qkv, n_head, mask=None, is_causal=False, dropout_p=0.0, rng=None, kv_cache=None):
    """Multi-head self-attention of the packed projection ``qkv`` (B, T, 3C): q | k | v, heads merged to (B, T, C).

    Equal to splitting qkv in three, viewing each (B, H, T, D) and calling
    ``scaled_dot_product_attention`` (see ``SelfAttention``).  ``kv_cache``
    (an ``npllm.nn.KVCache``) holds the keys and values of earlier positions;
    the new ones are appended to it.  The other options are those of
    ``scaled_dot_product_attention``; ``mask`` broadcasts to (B, H, T, T).
    """
    shape = _array(qkv).shape
    if len(shape) != 3 or shape[2] % (3 * n_head):
        raise ShapeError(f"self_attention: qkv must be (B, T, 3C) with C divisible by n_head = {n_head},"
                         f" got shape {shape}")
    B, T = shape[:2]
    keep = _attention_mask("self_attention", mask, is_causal, dropout_p, rng, (B, n_head, T, T))
    if kv_cache is not None and not is_causal:
        raise ValueError("self_attention: a KV cache serves causal attention only (pass is_causal=True)")
    return SelfAttention.apply(qkv, n_head, is_causal=is_causal, keep=keep, dropout_p=dropout_p, rng=rng,
                               kv_cache=kv_cache)


def _attention_mask(name, mask, is_causal, dropout_p, rng, scores_shape):
    """Check the options shared by the attention functions; return ``mask`` as a boolean array, or None."""
    if is_causal and mask is not None:
        raise ValueError(f"{name}: give either mask or is_causal=True, not both")
    keep = None
    if mask is not None:
        keep = _array(mask)
        if keep.dtype != bool:
            raise TypeError(f"{name}: mask must be boolean (True = attend), got {keep.dtype}")
        try:
            np.broadcast_shapes(keep.shape, scores_shape)
        except ValueError:
            raise ShapeError(
                f"{name}: mask of shape {keep.shape} does not broadcast to (B, H, Tq, Tk) = {scores_shape}"
            ) from None
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"{name}: dropout_p must be in [0, 1), got {dropout_p}")
    if dropout_p > 0.0 and not isinstance(rng, np.random.Generator):
        raise TypeError(f"{name}: dropout_p > 0 needs rng, a np.random.Generator")
    return keep


# --- linear --------------------------------------------------------------
class Linear(Function):
    """y = x W + b  with W of shape (in, out) (GPT-2's layout), x of shape (..., in).

    All leading axes are flattened into one matrix of N rows, so each product
    is one 2-D BLAS call:
        dX = g W^T,   dW = X^T g,   db = sum over rows of g = 1^T g.
    The bias gradient is taken as that product with a row of N ones: BLAS
    streams g once on all cores, where NumPy's ``g.sum(axis=0)`` was ~4x
    slower here.  dW is computed in W's own memory layout: when W is a
    transposed view (GPT's tied output projection W = wte^T, wte of shape
    (V, C)), the product computed is dW^T = g^T X, of wte's shape, so that
    adding it into wte's gradient reads memory in order, not across a
    transpose (~8x faster here).
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        rows = x.reshape(-1, x.shape[-1])  # (N, in)
        out = rows @ weight  # (N, out)
        if bias is not None:
            out += bias
        ctx.save_for_backward(rows, weight)
        ctx.shape = x.shape
        return out.reshape(*x.shape[:-1], weight.shape[1])

    @staticmethod
    def backward(ctx, grad):
        rows, weight = ctx.saved
        need_x, need_weight, need_bias = ctx.needs_input_grad
        grad_rows = grad.reshape(-1, grad.shape[-1])  # (N, out)
        # forward: out = rows @ weight + bias
        dx = (grad_rows @ weight.T).reshape(ctx.shape) if need_x else None
        dweight = None
        if need_weight:
            transposed = weight.flags.f_contiguous and not weight.flags.c_contiguous
            dweight = (grad_rows.T @ rows).T if transposed else rows.T @ grad_rows
        dbias = _column_sums(grad_rows) if need_bias else None
        return dx, dweight, dbias


def linear(x, weight, bias=None):
    """x @ weight + bias for x (..., in), weight (in, out), bias (out,) or None."""
    x_shape, w_shape = _array(x).shape, _array(weight).shape
    if len(w_shape) != 2 or not x_shape or x_shape[-1] != w_shape[0] \
            or (bias is not None and _array(bias).shape != (w_shape[1],)):
        bias_shape = None if bias is None else _array(bias).shape
        raise ShapeError(
            f"linear: x (..., in) @ weight (in, out) + bias (out,) does not fit shapes"
            f" x {x_shape}, weight {w_shape}, bias {bias_shape}"
        )
    return Linear.apply(x, weight, bias)
