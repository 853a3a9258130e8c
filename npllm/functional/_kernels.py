"""The speed helpers of the fused ops: the only textbook file that uses the runtime.

Each replaces one NumPy idiom that measured slow on this project's machine
with an equivalent that is faster, and says why.  A reader can read every
fused op as if these were the plain idioms named beside them:

    row_sums(x)            x.sum(axis=-1)          (gemv with a vector of ones)
    column_sums(rows)      rows.sum(axis=0)        (the same, from the left)
    dot_along(a, b, axis)  (a * b).sum(axis, keepdims=True)
    exp_needs_no_shift(x)  whether softmax may skip subtracting the row max
    map_rows(f, *arrays)   f(*arrays), over cache-sized blocks of rows on all cores
                           (``npllm.runtime.pool``)
"""

import math

import numpy as np

from npllm.runtime.pool import flat, map_rows  # noqa: F401 (re-exported for the fused ops)


def dot_along(a, b, axis):
    """sum(a * b, axis, keepdims=True) without the temporary a * b (einsum: ~5x faster here)."""
    if axis in (-1, a.ndim - 1):  # the common case, without moveaxis's Python overhead
        return np.einsum("...i,...i->...", a, b)[..., None]
    dot = np.einsum("...i,...i->...", np.moveaxis(a, axis, -1), np.moveaxis(b, axis, -1))
    return np.expand_dims(dot, axis)


def row_sums(x, out=None):
    """Sums along the last axis, shape x.shape[:-1] (into ``out`` if given): a product with a vector of ones.

    BLAS (gemv) streams the rows once; NumPy's ``x.sum(axis=-1)`` was ~4x
    slower here on rows of 64-1024 entries (a reduction has a cost per row).
    """
    return np.matmul(x, np.ones(x.shape[-1], dtype=x.dtype), out=out)


def column_sums(rows):
    """Sums over the rows of a 2-D array, shape (columns,): the bias gradients, as ones^T @ rows (gemv).

    BLAS streams the rows once; ``rows.sum(axis=0)`` was ~4x slower here.
    """
    return np.ones(len(rows), dtype=rows.dtype) @ rows


def exp_needs_no_shift(x) -> bool:
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


def swapped(stack):
    """``stack`` (..., m, n) as a C-contiguous (..., n, m): the right operand of a stacked matmul.

    Replaces ``np.swapaxes(stack, -1, -2)`` on the right of ``@``: NumPy's
    matmul of stacked matrices hands a swapped right operand to a loop of its
    own instead of BLAS (a swapped left one is fine).  Measured for attention's
    q @ k^T on (16, 12, 128, 32) blocks: 44 ms on the view, 4 ms with this copy.
    """
    return np.ascontiguousarray(np.swapaxes(stack, -1, -2))
