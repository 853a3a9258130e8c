"""The fused ops of ``functional.py``, composed from primitives: the oracles they are tested against.

Each function here computes the same value as its fused namesake using only
``npllm.ops`` (add, mul, exp, sum, matmul, indexing ...), so autograd derives
its backward from the primitives' backwards, which are gradchecked one by one.
If the hand-derived backward of a fused op is wrong, it disagrees with the
composition: that is what ``tests/test_functional*.py`` check.  Read each
beside its fused version; these are the definitions, the fused ones the
fast path.  They are slower and keep more arrays alive; do not train with them.
"""

import math

import numpy as np

from npllm import ops
from npllm.functional import IGNORE_INDEX, causal_mask
from npllm.ops.elementwise import GELU_CUBIC, SQRT_2_OVER_PI
from npllm.tensor import Tensor


def softmax_composed(x, axis=-1):
    shifted = x - x.max(axis=axis, keepdims=True).detach()  # a constant shift: softmax is unchanged
    e = shifted.exp()
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax_composed(x, axis=-1):
    shifted = x - x.max(axis=axis, keepdims=True).detach()
    return shifted - shifted.exp().sum(axis=axis, keepdims=True).log()


def cross_entropy_composed(logits, targets, ignore_index=IGNORE_INDEX, label_smoothing=0.0):
    V = logits.shape[-1]
    targets = (targets.data if isinstance(targets, Tensor) else np.asarray(targets)).reshape(-1)
    log_probs = log_softmax_composed(logits.reshape(-1, V))  # (N, V)
    keep = targets != ignore_index
    kept_rows = np.flatnonzero(keep)
    picked = log_probs[kept_rows, targets[kept_rows]]  # (n,)
    count = len(kept_rows)
    nll = -picked.sum() / count
    smooth = -log_probs[kept_rows].mean(axis=1).sum() / count  # cross-entropy with the uniform distribution
    return (1.0 - label_smoothing) * nll + label_smoothing * smooth


def layer_norm_composed(x, weight=None, bias=None, eps=1e-5):
    centered = x - x.mean(axis=-1, keepdims=True)
    variance = (centered * centered).mean(axis=-1, keepdims=True)
    out = centered / (variance + eps).sqrt()
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


def gelu_composed(x):
    return 0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x)).tanh())


def embedding_composed(ids, weight):
    return weight[ids]  # GetItem's backward: np.add.at over the repeated rows


def dropout_composed(x, p, training, rng=None):
    if not training or p == 0.0:
        return x
    keep = rng.random(x.shape, dtype=np.float32) >= p  # the same draw as the fused op
    return x * Tensor(keep.astype(x.dtype)) / (1.0 - p)


def attention_composed(q, k, v, mask=None, is_causal=False, dropout_p=0.0, rng=None):
    Tq, Tk, D = q.shape[-2], k.shape[-2], q.shape[-1]
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(D)  # (B, H, Tq, Tk)
    keep = causal_mask(Tq, Tk) if is_causal else mask
    if keep is not None:
        scores = ops.masked_fill(scores, ~np.asarray(keep), -np.inf)
    probs = softmax_composed(scores, axis=-1)
    if keep is not None:  # a row that sees no key: 0/0 -> 0, as the fused op and PyTorch do
        probs = ops.where(np.isnan(probs.data), 0.0, probs)
    probs = dropout_composed(probs, dropout_p, dropout_p > 0.0, rng)
    return probs @ v


def self_attention_composed(qkv, n_head, mask=None, is_causal=False, dropout_p=0.0, rng=None):
    B, T, C = qkv.shape[0], qkv.shape[1], qkv.shape[2] // 3
    q, k, v = (piece.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3) for piece in qkv.split(3, axis=-1))
    y = attention_composed(q, k, v, mask=mask, is_causal=is_causal, dropout_p=dropout_p, rng=rng)  # (B, H, T, D)
    return y.transpose(0, 2, 1, 3).reshape(B, T, C)


def linear_composed(x, weight, bias=None):
    out = x @ weight
    return out if bias is None else out + bias
