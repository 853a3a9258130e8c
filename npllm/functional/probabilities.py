"""Softmax and log-softmax: a row of scores made a probability distribution.

    softmax(x)_i     = e^(x_i) / sum_j e^(x_j)
    log_softmax(x)_i = x_i - log sum_j e^(x_j)

The composed versions come first: they are the definitions, built from
``npllm.ops`` primitives, and the oracles the fused versions are tested
against.  The fused ones keep one array (the output) and have a one-line
backward; softmax subtracts the row max before ``exp`` so large scores do
not overflow.  The helpers ``softmax_forward`` / ``softmax_backward`` on raw
arrays are shared with attention.
"""

import numpy as np

from npllm.functional import _kernels
from npllm.tensor import Function


# --- the composed reference: the definition, from primitives (autograd derives its backward) ---
def softmax_composed(x, axis=-1):
    shifted = x - x.max(axis=axis, keepdims=True).detach()  # a constant shift: softmax is unchanged
    e = shifted.exp()
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax_composed(x, axis=-1):
    shifted = x - x.max(axis=axis, keepdims=True).detach()
    return shifted - shifted.exp().sum(axis=axis, keepdims=True).log()


# --- the fused op: one Function, backward derived by hand ---
def softmax_forward(x, axis):
    """exp(x - max) / sum(exp(x - max)) along ``axis``, in a freshly allocated array."""
    probs = x - x.max(axis=axis, keepdims=True)
    np.exp(probs, out=probs)
    probs /= probs.sum(axis=axis, keepdims=True)
    return probs


def softmax_backward(dprobs, probs, axis):
    """dx = p * (dp - sum(dp * p)); ``dprobs`` must be an array this op owns (it is overwritten)."""
    dprobs -= _kernels.dot_along(dprobs, probs, axis)
    dprobs *= probs
    return dprobs


def softmax_rows_backward(dprobs, probs):
    """``softmax_backward`` along the last axis, for ``map_rows``."""
    softmax_backward(dprobs, probs, axis=-1)


class FusedSoftmax(Function):
    """p_i = e^(x_i) / sum_j e^(x_j)  along one axis.

        dp_i/dx_k = p_i (delta_ik - p_k)
        dL/dx_k = sum_i g_i p_i (delta_ik - p_k) = p_k (g_k - sum_i g_i p_i)
    """

    @staticmethod
    def forward(ctx, x, axis=-1):
        probs = softmax_forward(x, axis)
        ctx.save_for_backward(probs)
        ctx.axis = axis
        return probs

    @staticmethod
    def backward(ctx, grad):
        (probs,) = ctx.saved
        # forward: probs = exp(x - max) / sum(exp(x - max))
        return softmax_backward(grad.copy(), probs, ctx.axis)


class FusedLogSoftmax(Function):
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
    return FusedSoftmax.apply(x, axis=axis)


def log_softmax(x, axis=-1):
    """log(softmax(x)) along ``axis``, computed as x - logsumexp(x) (never log of 0)."""
    return FusedLogSoftmax.apply(x, axis=axis)
