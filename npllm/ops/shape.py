"""Shape ops: moving values around without changing them.

Reshape, transpose, indexing, concatenate and stack compute nothing; each
element of the output is some element of the input.  So each backward only
routes gradients back to where the values came from:

- reshape / transpose: apply the inverse reshape / inverse permutation;
- indexing: scatter the gradient into zeros at the indexed places, *adding*
  where an integer index repeats (x[[0, 0]] uses x[0] twice);
- concatenate / stack: slice the gradient into the pieces.
"""

import numpy as np

from npllm.tensor import Function, ShapeError


class Reshape(Function):
    """y = x viewed with a new shape.   dx = dy viewed with x's shape."""

    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = np.shape(x)
        return np.reshape(x, shape)

    @staticmethod
    def backward(ctx, grad):
        return grad.reshape(ctx.shape), None


class Transpose(Function):
    """y = x with axes permuted:  y.shape[i] = x.shape[axes[i]].   dx = dy permuted by the inverse."""

    @staticmethod
    def forward(ctx, x, axes=None):
        axes = tuple(reversed(range(np.ndim(x)))) if axes is None else tuple(a % np.ndim(x) for a in axes)
        ctx.inverse = tuple(np.argsort(axes))
        return np.transpose(x, axes)

    @staticmethod
    def backward(ctx, grad):
        return np.transpose(grad, ctx.inverse)


def _has_integer_array(index) -> bool:
    """Whether an index contains an integer array (the only kind that can repeat)."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(
        isinstance(part, (list, np.ndarray)) and np.asarray(part).dtype.kind in "iu" for part in parts
    )


class GetItem(Function):
    """y = x[index]   (basic slicing, integer arrays, boolean masks).

        dx = zeros like x, then dx[index] += dy,
    with unbuffered addition (np.add.at) when an integer array may repeat an element.
    """

    @staticmethod
    def forward(ctx, x, index):
        ctx.shape, ctx.index = np.shape(x), index
        try:
            return x[index]
        except IndexError as error:
            raise ShapeError(f"GetItem: {error} (indexing shape {np.shape(x)} with {index!r})") from error

    @staticmethod
    def backward(ctx, grad):
        dx = np.zeros(ctx.shape, dtype=grad.dtype)
        if _has_integer_array(ctx.index):
            np.add.at(dx, ctx.index, grad)
        else:
            dx[ctx.index] = grad
        return dx, None


class Concatenate(Function):
    """y = [x_1, x_2, ...] joined along ``axis``.   dx_k = the slice of dy that x_k filled."""

    @staticmethod
    def forward(ctx, *xs, axis=0):
        ctx.axis = axis
        ctx.boundaries = np.cumsum([np.shape(x)[axis] for x in xs])[:-1]
        return np.concatenate(xs, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        return tuple(np.split(grad, ctx.boundaries, axis=ctx.axis))


class Stack(Function):
    """y = x_1, x_2, ... stacked along a new ``axis``.   dx_k = dy taken at position k on that axis."""

    @staticmethod
    def forward(ctx, *xs, axis=0):
        ctx.axis = axis
        return np.stack(xs, axis=axis)

    @staticmethod
    def backward(ctx, grad):
        return tuple(np.moveaxis(grad, ctx.axis, 0))
