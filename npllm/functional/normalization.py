"""Layer normalisation: each row rescaled to zero mean and unit variance, then a learned gain and shift.

    y = (x - mean(x)) / sqrt(var(x) + eps) * weight + bias      over the last axis (C)

It keeps the residual stream of a deep transformer at a steady scale.
The composed version is five primitives; the fused one runs over
cache-sized blocks of rows on all cores and derives its backward by hand.
"""

from functools import partial

import numpy as np

from npllm.functional import _kernels
from npllm.tensor import Function, ShapeError, as_array


# --- the composed reference: the definition, from primitives (autograd derives its backward) ---
def layer_norm_composed(x, weight=None, bias=None, eps=1e-5):
    centered = x - x.mean(axis=-1, keepdims=True)
    variance = (centered * centered).mean(axis=-1, keepdims=True)
    out = centered / (variance + eps).sqrt()
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


# --- the fused op: one Function, backward derived by hand ---
class FusedLayerNorm(Function):
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
        _kernels.map_rows(partial(layer_norm_forward, weight=weight, bias=bias, eps=eps), rows, xhat, rstd, out)
        ctx.save_for_backward(xhat, rstd, weight)
        ctx.shape = x.shape
        return out.reshape(x.shape)

    @staticmethod
    def backward(ctx, grad):
        xhat, rstd, weight = ctx.saved
        grad_rows = grad.reshape(-1, xhat.shape[1])  # (N, C)
        dx, dweight, dbias = layer_norm_backward(grad_rows, xhat, rstd, weight, *ctx.needs_input_grad)
        return (None if dx is None else dx.reshape(ctx.shape)), dweight, dbias


def layer_norm_backward(grad_rows, xhat, rstd, weight, need_x, need_weight, need_bias):
    """dx (N, C), dweight, dbias of FusedLayerNorm (None where not needed); shared with ``linear_add_layer_norm``."""
    dweight = np.einsum("ij,ij->j", grad_rows, xhat) if need_weight else None
    dbias = _kernels.column_sums(grad_rows) if need_bias else None
    dx = None
    if need_x:
        dx = np.empty_like(xhat)
        _kernels.map_rows(partial(_layer_norm_backward, weight=weight), grad_rows, xhat, rstd, dx)
    return dx, dweight, dbias


def layer_norm_forward(rows, xhat, rstd, out, weight, bias, eps):
    """One block of rows of FusedLayerNorm.forward, written into xhat, rstd and out."""
    C = rows.shape[1]
    mean = _kernels.row_sums(rows)[:, None]
    mean *= 1.0 / C
    np.subtract(rows, mean, out=xhat)
    np.divide(_kernels.dot_along(xhat, xhat, axis=1), C, out=rstd)  # the variance
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
    """One block of rows of FusedLayerNorm.backward's dx, written into dx."""
    C = xhat.shape[1]
    # forward: out = xhat * weight + bias;  xhat = (x - mean) * rstd
    if weight is not None:
        np.multiply(grad_rows, weight, out=dx)  # dxhat
    else:
        dx[...] = grad_rows
    mean_dxhat = _kernels.row_sums(dx)[:, None]
    mean_dxhat *= 1.0 / C
    mean_dxhat_xhat = _kernels.dot_along(dx, xhat, axis=1)
    mean_dxhat_xhat *= 1.0 / C
    dx -= mean_dxhat
    dx -= xhat * mean_dxhat_xhat
    dx *= rstd


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    """Normalise the last axis to zero mean and unit variance, then scale by ``weight`` and shift by ``bias``."""
    C = as_array(x).shape[-1]
    for name, param in (("weight", weight), ("bias", bias)):
        if param is not None and as_array(param).shape != (C,):
            raise ShapeError(
                f"layer_norm: {name} must have shape ({C},) to match the last axis of x {as_array(x).shape},"
                f" got {as_array(param).shape}"
            )
    return FusedLayerNorm.apply(x, weight, bias, eps=eps)
