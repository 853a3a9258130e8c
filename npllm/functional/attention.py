"""Attention: every query reads a weighted mix of the values, weighted by how well it matches each key.

    out = softmax(q k^T / sqrt(D) + mask) v        q (B, H, Tq, D), k and v (B, H, Tk, D)

The mask hides the future (causal, a decoder) or padding (an encoder).  The
composed version is the formula in primitives; the fused one computes causal
scores block by block (the keys a block of queries cannot see are never
multiplied), keeps the probabilities only, and derives its backward by hand.
``self_attention`` takes the packed (B, T, 3C) projection and splits heads
without copies; it also serves generation's KV cache.
"""

import math

import numpy as np

from npllm import ops
from npllm.functional import _kernels
from npllm.functional.probabilities import softmax_composed, softmax_rows_backward
from npllm.functional.regularization import dropout_composed
from npllm.tensor import Function, ShapeError, as_array


# --- the composed reference: the definition, from primitives (autograd derives its backward) ---
def causal_mask(Tq, Tk):
    """Boolean (Tq, Tk), True = may attend: query i sees key j when j <= i + (Tk - Tq).

    With Tq == Tk this is the lower triangle; with fewer queries than keys (a
    KV cache holding the past) the queries are the *last* Tq positions.
    """
    return np.tri(Tq, Tk, k=Tk - Tq, dtype=bool)


def attention_weights_composed(q, k, mask=None, is_causal=False):
    """softmax(q k^T / sqrt(D)) with the mask's hidden keys at 0: the (B, H, Tq, Tk) weights each query gives each key.

    Every row sums to 1, except a row that sees no key, which is all 0.
    """
    Tq, Tk, D = q.shape[-2], k.shape[-2], q.shape[-1]
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(D)  # (B, H, Tq, Tk)
    keep = causal_mask(Tq, Tk) if is_causal else mask
    if keep is not None:
        scores = ops.masked_fill(scores, ~np.asarray(keep), -np.inf)
    probs = softmax_composed(scores, axis=-1)
    if keep is not None:  # a row that sees no key: 0/0 -> 0, as the fused op and PyTorch do
        probs = ops.where(np.isnan(probs.data), 0.0, probs)
    return probs


def attention_composed(q, k, v, mask=None, is_causal=False, dropout_p=0.0, rng=None):
    probs = attention_weights_composed(q, k, mask=mask, is_causal=is_causal)  # (B, H, Tq, Tk)
    probs = dropout_composed(probs, dropout_p, dropout_p > 0.0, rng)
    return probs @ v


def self_attention_composed(qkv, n_head, mask=None, is_causal=False, dropout_p=0.0, rng=None):
    B, T, C = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
    q, k, v = (piece.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3) for piece in qkv.split(3, axis=-1))
    y = attention_composed(q, k, v, mask=mask, is_causal=is_causal, dropout_p=dropout_p, rng=rng)  # (B, H, T, D)
    return y.transpose(0, 2, 1, 3).reshape(B, T, C)


# --- the fused op: one Function, backward derived by hand ---
def _masked_softmax(scores, bias=None):
    """Softmax along the last axis in place, after adding ``bias`` (0 / -inf) to the last columns; for ``map_rows``.

    ``bias`` covers the last ``bias.shape[-1]`` columns of ``scores`` (in a
    causal block of queries, every masked key is among the last ones).  The
    shift is the row max only when ``_kernels.exp_needs_no_shift`` says the scores
    need one (checked before masking: the -inf are not scores).  A row whose
    every entry is masked becomes zeros rather than 0/0.
    """
    shift = not _kernels.exp_needs_no_shift(scores)
    if bias is not None:
        scores[..., scores.shape[-1] - bias.shape[-1]:] += bias
    if shift:
        row_max = scores.max(axis=-1, keepdims=True)
        if bias is not None:
            row_max[row_max == -np.inf] = 0.0  # a row with no visible key: exp(-inf) = 0 everywhere
        scores -= row_max
    np.exp(scores, out=scores)
    row_sum = _kernels.row_sums(scores)[..., None]
    if bias is not None:
        row_sum[row_sum == 0.0] = 1.0  # ... and 0 / 1 = 0 instead of 0 / 0
    scores *= np.reciprocal(row_sum, out=row_sum)


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
    # (B, H, Tq, Tk) scores, made probabilities in place; right of each causal block nothing is written
    # (nor read back: backward takes the same blocks), which saved a pass over a quarter of it
    probs = np.empty((*q.shape[:-1], Tk), dtype=q_scaled.dtype)
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
    keys_t = _kernels.swapped(k)  # (B, H, D, Tk)
    for q0, q1, k1 in blocks:
        block_probs = probs[..., q0:q1, :k1]
        np.matmul(q_scaled[..., q0:q1, :], keys_t[..., :k1], out=block_probs)
        if bias is None:
            _kernels.map_rows(_masked_softmax, _matrices(block_probs))
        else:  # causal: every query of the block sees the keys before its last q1 - q0 ones
            masked_from = max(k1 - (q1 - q0), 0) if causal else 0
            _kernels.map_rows(_masked_softmax, _matrices(block_probs), _matrices(bias[..., q0:q1, masked_from:k1]))
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
    values_t = _kernels.swapped(v)  # (B, H, D, Tk)
    for n, (q0, q1, k1) in enumerate(ctx.blocks):
        block_probs, block_grad = probs[..., q0:q1, :k1], grad[..., q0:q1, :]
        block_mask = None if scaled_mask is None else scaled_mask[..., q0:q1, :k1]
        # forward: out = attention @ v,  attention = probs * scaled_mask
        if need_v:
            attention = block_probs if block_mask is None else block_probs * block_mask
            _matmul_into(np.swapaxes(attention, -1, -2), block_grad, dv[..., :k1, :], add=n > 0)
        dprobs = block_grad @ values_t[..., :k1]  # (B, H, q1 - q0, k1)
        if block_mask is not None:
            dprobs *= block_mask
        # forward: probs = softmax(scores), scores = (q * scale) @ k^T
        _kernels.map_rows(softmax_rows_backward, _matrices(dprobs), _matrices(block_probs))
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


class FusedScaledDotProductAttention(Function):
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


class FusedSelfAttention(Function):
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
    q_shape, k_shape, v_shape = as_array(q).shape, as_array(k).shape, as_array(v).shape
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
    return FusedScaledDotProductAttention.apply(q, k, v, keep, dropout_p=dropout_p, rng=rng, causal=is_causal)


def self_attention(qkv, n_head, mask=None, is_causal=False, dropout_p=0.0, rng=None, kv_cache=None):
    """Multi-head self-attention of the packed projection ``qkv`` (B, T, 3C): q | k | v, heads merged to (B, T, C).

    Equal to splitting qkv in three, viewing each (B, H, T, D) and calling
    ``scaled_dot_product_attention`` (see ``SelfAttention``).  ``kv_cache``
    (an ``npllm.nn.KVCache``) holds the keys and values of earlier positions;
    the new ones are appended to it.  The other options are those of
    ``scaled_dot_product_attention``; ``mask`` broadcasts to (B, H, T, T).
    """
    shape = as_array(qkv).shape
    if len(shape) != 3 or shape[2] % (3 * n_head):
        raise ShapeError(f"self_attention: qkv must be (B, T, 3C) with C divisible by n_head = {n_head},"
                         f" got shape {shape}")
    B, T = shape[:2]
    keep = _attention_mask("self_attention", mask, is_causal, dropout_p, rng, (B, n_head, T, T))
    if kv_cache is not None and not is_causal:
        raise ValueError("self_attention: a KV cache serves causal attention only (pass is_causal=True)")
    return FusedSelfAttention.apply(qkv, n_head, is_causal=is_causal, keep=keep, dropout_p=dropout_p, rng=rng,
                               kv_cache=kv_cache)


def _attention_mask(name, mask, is_causal, dropout_p, rng, scores_shape):
    """Check the options shared by the attention functions; return ``mask`` as a boolean array, or None."""
    if is_causal and mask is not None:
        raise ValueError(f"{name}: give either mask or is_causal=True, not both")
    keep = None
    if mask is not None:
        keep = as_array(mask)
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
