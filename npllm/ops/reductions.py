"""Reductions: sum, mean, max/min and var over chosen axes.

A reduction collapses axes, so its backward must *expand* the gradient back to
the input's shape.  The trick used throughout: reduce with ``keepdims=True``
in spirit, so that the gradient broadcasts against the input.  If the user
asked for ``keepdims=False`` we first re-insert the reduced axes as size 1.
"""

import numpy as np

from npllm.tensor import Function


def normalize_axes(axis, ndim: int) -> tuple:
    """``axis`` (None, an int or a tuple, negatives allowed) as a sorted tuple of non-negative ints."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    normalized = []
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise np.exceptions.AxisError(f"axis {a} is out of bounds for an array of dimension {ndim}")
        normalized.append(int(a) % max(ndim, 1))
    return tuple(sorted(normalized))


def restore_reduced_axes(grad: np.ndarray, axes: tuple, keepdims: bool) -> np.ndarray:
    """Put back the reduced axes as size 1 so ``grad`` broadcasts over the input."""
    return grad if keepdims else np.expand_dims(grad, axes)


class Sum(Function):
    """y = sum_i x_i over the axes.   dy/dx_i = 1: the gradient is copied to every summand."""

    reduce = staticmethod(np.sum)

    @classmethod
    def forward(cls, ctx, x, axis=None, keepdims=False):
        ctx.axes = normalize_axes(axis, np.ndim(x))
        ctx.keepdims = keepdims
        ctx.shape = np.shape(x)
        return cls.reduce(x, axis=ctx.axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, grad):
        grad = restore_reduced_axes(grad, ctx.axes, ctx.keepdims)
        return np.broadcast_to(grad, ctx.shape)


class Mean(Sum):
    """y = (1/n) sum_i x_i.   dy/dx_i = 1/n, n = number of elements reduced: Sum's backward, divided by n."""

    reduce = staticmethod(np.mean)

    @staticmethod
    def backward(ctx, grad):
        count = int(np.prod([ctx.shape[a] for a in ctx.axes]))
        return Sum.backward(ctx, grad / count)


class Extremum(Function):
    """y = max_i x_i (or min).   dy/dx_i = 1/k for the k elements equal to y, else 0.

    Ties share the gradient equally, which keeps max symmetric in its
    arguments (PyTorch's ``amax`` does the same).
    """

    @staticmethod
    def forward(ctx, x, reducer=np.max, axis=None, keepdims=False):
        axes = normalize_axes(axis, np.ndim(x))
        out = reducer(x, axis=axes, keepdims=True)
        ctx.save_for_backward(x, out)
        ctx.axes, ctx.keepdims = axes, keepdims
        return out if keepdims else np.squeeze(out, axis=axes)

    @staticmethod
    def backward(ctx, grad):
        x, out = ctx.saved
        grad = restore_reduced_axes(grad, ctx.axes, ctx.keepdims)
        winners = x == out
        share = grad / winners.sum(axis=ctx.axes, keepdims=True, dtype=grad.dtype)
        return np.where(winners, share, np.zeros((), dtype=grad.dtype))


class Var(Function):
    """y = (1/(n - ddof)) sum_i (x_i - m)^2,  m = mean(x).

        dy/dx_i = 2 (x_i - m) / (n - ddof)
    (the term through m vanishes because sum_i (x_i - m) = 0).
    """

    @staticmethod
    def forward(ctx, x, axis=None, keepdims=False, ddof=0):
        axes = normalize_axes(axis, np.ndim(x))
        centered = x - np.mean(x, axis=axes, keepdims=True)
        count = int(np.prod([np.shape(x)[a] for a in axes]))
        ctx.save_for_backward(centered)
        ctx.axes, ctx.keepdims, ctx.divisor = axes, keepdims, count - ddof
        return np.sum(centered * centered, axis=axes, keepdims=keepdims) / ctx.divisor

    @staticmethod
    def backward(ctx, grad):
        (centered,) = ctx.saved
        grad = restore_reduced_axes(grad, ctx.axes, ctx.keepdims)
        return grad * centered * (2 / ctx.divisor)
