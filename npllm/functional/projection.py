"""Linear: the affine map y = x W + b, where nearly all of a transformer's arithmetic happens.

(And what a transformer block does right after two of its projections, fused
with them: ``linear_gelu``, gelu(x W + b), an MLP's widening; and
``linear_add_layer_norm``, LayerNorm(r + x W + b), a post-LN sub-layer's end.
And ``lora_linear``, x W + b + s x' A B, a frozen projection with its LoRA
update beside it, ``nn.lora``'s forward.)

W is stored (in, out), as GPT-2's Conv1D stores it.  The composed version is
a matmul and an add; the fused one flattens the leading axes so that every
product is one 2-D BLAS call, and computes each gradient in the memory layout
that adds into it fastest.
"""

from functools import partial

import numpy as np

from npllm.functional import _kernels
from npllm.functional.activations import FORMS, PIECES, gelu_composed
from npllm.functional.normalization import layer_norm_backward, layer_norm_composed, layer_norm_forward
from npllm.tensor import Function, ShapeError, as_array


# --- the composed reference: the definition, from primitives (autograd derives its backward) ---
def linear_composed(x, weight, bias=None):
    out = x @ weight
    return out if bias is None else out + bias


def linear_gelu_composed(x, weight, bias=None, approximate="tanh"):
    return gelu_composed(linear_composed(x, weight, bias), approximate)


def linear_add_layer_norm_composed(x, weight, bias, residual, norm_weight, norm_bias, eps=1e-5):
    return layer_norm_composed(residual + linear_composed(x, weight, bias), norm_weight, norm_bias, eps)


def lora_linear_composed(x, weight, bias, lora_A, lora_B, scale, dropped=None):
    update = linear_composed(linear_composed(x if dropped is None else dropped, lora_A), lora_B) * scale
    return linear_composed(x, weight, bias) + update


# --- the fused op: one Function, backward derived by hand ---
class FusedLinear(Function):
    """y = x W + b  with W of shape (in, out) (GPT-2's layout), x of shape (..., in).

    All leading axes are flattened into one matrix of N rows, so each product
    is one 2-D BLAS call:
        dX = g W^T,   dW = X^T g,   db = sum over rows of g = 1^T g.
    The bias gradient is taken as that product with a row of N ones: BLAS
    streams g once (on as many threads as BLAS may use: one per shard under
    data parallel training), where NumPy's ``g.sum(axis=0)`` was ~4x slower
    here.  dW is computed in W's own memory layout: when W is a
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
        grad_rows = grad.reshape(-1, grad.shape[-1])  # (N, out)
        dx, dweight, dbias = linear_backward(grad_rows, rows, weight, *ctx.needs_input_grad)
        return (None if dx is None else dx.reshape(ctx.shape)), dweight, dbias


def linear_backward(grad_rows, rows, weight, need_x, need_weight, need_bias):
    """dX (N, in), dW, db of out = rows @ weight + bias (None where not needed); shared with ``linear_gelu``."""
    # forward: out = rows @ weight + bias
    dx = grad_rows @ weight.T if need_x else None
    dweight = None
    if need_weight:
        transposed = weight.flags.f_contiguous and not weight.flags.c_contiguous
        dweight = (grad_rows.T @ rows).T if transposed else rows.T @ grad_rows
    dbias = _kernels.column_sums(grad_rows) if need_bias else None
    return dx, dweight, dbias


class FusedLinearGELU(Function):
    """y = gelu(x W + b): an MLP's widening and its non-linearity in one op.

    The same function as ``gelu(linear(x, W, b))``, with one pass over the
    (N, out) activation fewer each way: the bias is added inside GELU's
    cache-sized pieces (a memory pass over the activation becomes a pass
    over cache), and backward hands GELU's gradient straight to the
    products (``linear_backward``), with no Tensor between the two ops.
    Measured on small's (1024, 1536) activation on one core, as data
    parallel runs it: the bias add and GELU, forward and backward, in 0.76x
    the time of the two ops apart (medians of alternating runs).
    Saved: the input rows and W (for the products), the pre-activation
    z = x W + b and GELU's own saved array (tanh u, or Phi(z)).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, approximate="tanh"):
        rows = x.reshape(-1, x.shape[-1])  # (N, in)
        pre = rows @ weight  # (N, out), the bias added in the pieces
        saved, out = np.empty_like(pre), np.empty_like(pre)
        _kernels.map_rows(partial(_biased, PIECES[approximate][0], bias), pre, saved, out)
        ctx.save_for_backward(rows, weight, pre, saved)
        ctx.shape, ctx.approximate = x.shape, approximate
        return out.reshape(*x.shape[:-1], weight.shape[1])

    @staticmethod
    def backward(ctx, grad):
        rows, weight, pre, saved = ctx.saved
        grad_rows = np.ascontiguousarray(grad.reshape(-1, grad.shape[-1]))  # (N, out)
        # forward: out = gelu(pre),  pre = rows @ weight + bias
        dpre = np.empty_like(pre)
        _kernels.map_rows(PIECES[ctx.approximate][1], pre, saved, grad_rows, dpre)
        dx, dweight, dbias = linear_backward(dpre, rows, weight, *ctx.needs_input_grad)
        return (None if dx is None else dx.reshape(ctx.shape)), dweight, dbias


def _biased(gelu_piece, bias, pre, saved, out):
    """One piece of FusedLinearGELU.forward: pre += bias (in place, kept for backward), then GELU's piece."""
    if bias is not None:
        pre += bias
    gelu_piece(pre, saved, out)


class FusedLinearAddLayerNorm(Function):
    """y = LayerNorm(r + x W + b): a post-LN sub-layer's projection, residual add and norm in one op.

    The same function as ``layer_norm(residual + linear(x, W, b), ...)``;
    the bias and the residual are added inside layer norm's cache-sized
    pieces of rows, so the (N, C) sum is never written out and read back
    (two memory passes and an array fewer, each way one op fewer): 0.90x
    the time of the three ops apart on one core, products left out
    ((1024, 8) @ (8, 384) into a (1024, 384) norm, medians of alternating runs).
    With s = r + x W + b and ds = the layer norm's dx (``layer_norm_backward``):
        dr = ds,   dX = ds W^T,   dW = X^T ds,   db = 1^T ds.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, residual, norm_weight, norm_bias, eps=1e-5):
        rows = x.reshape(-1, x.shape[-1])  # (N, in)
        total = rows @ weight  # (N, C): made r + x W + b in the pieces
        xhat, out = np.empty_like(total), np.empty_like(total)
        rstd = np.empty((len(total), 1), dtype=total.dtype)  # (N, 1)
        _kernels.map_rows(partial(_add_then_normalize, bias=bias, weight=norm_weight, norm_bias=norm_bias, eps=eps),
                          total, residual.reshape(total.shape), xhat, rstd, out)
        ctx.save_for_backward(rows, weight, xhat, rstd, norm_weight)
        ctx.shape, ctx.residual_shape = x.shape, residual.shape
        return out.reshape(residual.shape)

    @staticmethod
    def backward(ctx, grad):
        rows, weight, xhat, rstd, norm_weight = ctx.saved
        need_x, need_weight, need_bias, need_residual, need_norm_weight, need_norm_bias = ctx.needs_input_grad
        # forward: out = layer_norm(total),  total = residual + rows @ weight + bias
        dtotal, dnorm_weight, dnorm_bias = layer_norm_backward(
            grad.reshape(xhat.shape), xhat, rstd, norm_weight, True, need_norm_weight, need_norm_bias)
        dx, dweight, dbias = linear_backward(dtotal, rows, weight, need_x, need_weight, need_bias)
        dresidual = dtotal.reshape(ctx.residual_shape) if need_residual else None
        return (None if dx is None else dx.reshape(ctx.shape)), dweight, dbias, dresidual, dnorm_weight, dnorm_bias


def _add_then_normalize(total, residual, xhat, rstd, out, bias, weight, norm_bias, eps):
    """One block of rows of FusedLinearAddLayerNorm.forward: total += bias + residual, then layer norm's block."""
    if bias is not None:
        total += bias
    total += residual
    layer_norm_forward(total, xhat, rstd, out, weight=weight, bias=norm_bias, eps=eps)


def _check_shapes(name, x, weight, bias):
    x_shape, w_shape = as_array(x).shape, as_array(weight).shape
    if len(w_shape) != 2 or not x_shape or x_shape[-1] != w_shape[0] \
            or (bias is not None and as_array(bias).shape != (w_shape[1],)):
        bias_shape = None if bias is None else as_array(bias).shape
        raise ShapeError(
            f"{name}: x (..., in) @ weight (in, out) + bias (out,) does not fit shapes"
            f" x {x_shape}, weight {w_shape}, bias {bias_shape}"
        )


class FusedLoRALinear(Function):
    """y = x W + b + s u B,  u = x' A:  a Linear and its LoRA update (``nn.lora``) in one op.

    x' is dropout(x), or x itself when no dropout runs (``dropped`` None);
    A (in, r) and B (r, out) are thin, s = alpha / r.  With g = dL/dy and
    h = s g B^T, of shape (N, r):
        dB = s u^T g,   dA = x'^T h,
        dx = g W^T + h A^T   (x' = x: both paths reach x),  else dx = g W^T and dx' = h A^T,
        dW = x^T g,   db = 1^T g   (only when W and b train; in LoRA they are frozen).
    Composed, the layer is separate ops whose (N, out) results x W + b and
    u B (scaled) the graph keeps until backward; here the update is added
    into y in place and only u, (N, r), is saved beside x (and x', when
    dropout runs).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, lora_A, lora_B, dropped=None, scale=1.0):
        rows = x.reshape(-1, x.shape[-1])  # (N, in)
        dropped_rows = rows if dropped is None else dropped.reshape(rows.shape)
        out = rows @ weight  # (N, out)
        if bias is not None:
            out += bias
        update_in = dropped_rows @ lora_A  # u (N, r)
        out += update_in @ (lora_B * np.asarray(scale, dtype=lora_B.dtype))  # (one (N, out) temporary, freed here)
        ctx.save_for_backward(rows, dropped_rows, weight, lora_A, lora_B, update_in)
        ctx.shape, ctx.scale, ctx.separate = x.shape, scale, dropped is not None
        return out.reshape(*x.shape[:-1], weight.shape[1])

    @staticmethod
    def backward(ctx, grad):
        rows, dropped_rows, weight, lora_A, lora_B, update_in = ctx.saved
        need_x, need_weight, need_bias, need_A, need_B, need_dropped = ctx.needs_input_grad
        grad_rows = grad.reshape(-1, grad.shape[-1])  # (N, out)
        scale = np.asarray(ctx.scale, dtype=grad.dtype)
        # forward: out = rows @ weight + bias + scale * (update_in @ lora_B),  update_in = dropped_rows @ lora_A
        dx, dweight, dbias = linear_backward(grad_rows, rows, weight, need_x, need_weight, need_bias)
        if not (need_A or need_B or need_dropped or need_x):
            return None, dweight, dbias, None, None, None
        update_grad = (grad_rows @ lora_B.T) * scale  # h (N, r)
        dlora_B = (update_in.T @ grad_rows) * scale if need_B else None
        dlora_A = dropped_rows.T @ update_grad if need_A else None
        ddropped = None
        if ctx.separate and need_dropped:
            ddropped = (update_grad @ lora_A.T).reshape(ctx.shape)
        elif not ctx.separate and need_x:
            dx += update_grad @ lora_A.T
        return (None if dx is None else dx.reshape(ctx.shape)), dweight, dbias, dlora_A, dlora_B, ddropped


def linear(x, weight, bias=None):
    """x @ weight + bias for x (..., in), weight (in, out), bias (out,) or None."""
    _check_shapes("linear", x, weight, bias)
    return FusedLinear.apply(x, weight, bias)


def linear_add_layer_norm(x, weight, bias, residual, norm_weight, norm_bias, eps=1e-5):
    """layer_norm(residual + x @ weight + bias, norm_weight, norm_bias, eps) in one fused op (a post-LN sub-layer's end)."""
    _check_shapes("linear_add_layer_norm", x, weight, bias)
    C = as_array(weight).shape[1]
    expected = (*as_array(x).shape[:-1], C)
    if as_array(residual).shape != expected or any(
            p is not None and as_array(p).shape != (C,) for p in (norm_weight, norm_bias)):
        raise ShapeError(f"linear_add_layer_norm: residual must have shape {expected} and the norm's weight and bias"
                         f" ({C},), got {as_array(residual).shape}, "
                         + ", ".join(str(None if p is None else as_array(p).shape) for p in (norm_weight, norm_bias)))
    return FusedLinearAddLayerNorm.apply(x, weight, bias, residual, norm_weight, norm_bias, eps=eps)


def lora_linear(x, weight, bias, lora_A, lora_B, scale, dropped=None):
    """x @ weight + bias + scale * (x' @ lora_A) @ lora_B in one fused op, x' = ``dropped`` or x (see ``FusedLoRALinear``)."""
    _check_shapes("lora_linear", x, weight, bias)
    n_in, n_out = as_array(weight).shape
    rank = as_array(lora_A).shape[-1]
    if as_array(lora_A).shape != (n_in, rank) or as_array(lora_B).shape != (rank, n_out) or (
            dropped is not None and as_array(dropped).shape != as_array(x).shape):
        raise ShapeError(f"lora_linear: weight {(n_in, n_out)} needs lora_A (in, r) = ({n_in}, r) and lora_B (r, out)"
                         f" = (r, {n_out}), and dropped x's shape {as_array(x).shape}; got lora_A"
                         f" {as_array(lora_A).shape}, lora_B {as_array(lora_B).shape}"
                         + ("" if dropped is None else f", dropped {as_array(dropped).shape}"))
    return FusedLoRALinear.apply(x, weight, bias, lora_A, lora_B, dropped, scale=scale)


def linear_gelu(x, weight, bias=None, approximate="tanh"):
    """gelu(x @ weight + bias) in one fused op (see ``FusedLinearGELU``); ``approximate`` as in ``gelu``."""
    _check_shapes("linear_gelu", x, weight, bias)
    if approximate not in FORMS:
        raise ValueError(f"linear_gelu: approximate must be 'tanh' or 'none', got {approximate!r}")
    return FusedLinearGELU.apply(x, weight, bias, approximate=approximate)
