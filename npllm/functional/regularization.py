"""Dropout: zero random elements in training, so no unit can rely on another.

    y = x * m / (1 - p),   m ~ Bernoulli(1 - p) per element

The composed version multiplies by the same mask through primitives; the
fused one draws and saves the scaled mask once.
"""

import numpy as np

from npllm.tensor import Function, Tensor


# --- the composed reference: the definition, from primitives (autograd derives its backward) ---
def dropout_composed(x, p, training, rng=None):
    if not training or p == 0.0:
        return x
    keep = rng.random(x.shape, dtype=np.float32) >= p  # the same draw as the fused op
    return x * Tensor(keep.astype(x.dtype)) / (1.0 - p)


# --- the fused op: one Function, backward derived by hand ---
class FusedDropout(Function):
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
    return FusedDropout.apply(x, p, rng)
