"""The primitive ops as functions, and their wiring into Tensor's operators and methods.

Each function below is a thin, documented entry point to one ``Function``
class (elementwise.py, reductions.py, matmul.py, shape.py).  At the bottom of
this file the Python operators (``+ - * / @ ** -x``, the reflected forms and
indexing) and the NumPy-named methods (``x.sum(axis=...)``, ``x.reshape(...)``,
``x.T`` ...) are attached to ``Tensor``: that is the only place where the
engine learns about the ops, which keeps ``tensor.py`` free of them.

The functions shadow some built-in names (sum, max, min, pow) on purpose, as
NumPy's do; call them as ``ops.sum`` rather than importing them bare.
"""

import numpy as np

from npllm.tensor import Tensor, unwrap
from npllm.ops.elementwise import (
    Add, Cast, Div, Exp, GELUErf, GELUTanh, Log, Mul, Neg, Pow, ReLU, Sigmoid, Sqrt, Sub, Tanh, Where,
)
from npllm.ops.matmul import MatMul
from npllm.ops.reductions import Extremum, Mean, Sum, Var
from npllm.ops.shape import Concatenate, GetItem, Reshape, Stack, Transpose

__all__ = [
    "add", "sub", "mul", "div", "neg", "pow", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "gelu",
    "sum", "mean", "max", "min", "var", "matmul", "reshape", "transpose", "getitem",
    "concatenate", "stack", "split", "where", "masked_fill", "cast",
]


# --- elementwise ---------------------------------------------------------
def add(a, b):
    return Add.apply(a, b)


def sub(a, b):
    return Sub.apply(a, b)


def mul(a, b):
    return Mul.apply(a, b)


def div(a, b):
    return Div.apply(a, b)


def neg(x):
    return Neg.apply(x)


def pow(a, b):  # noqa: A001 (NumPy-style name)
    return Pow.apply(a, b)


def exp(x):
    return Exp.apply(x)


def log(x):
    return Log.apply(x)


def sqrt(x):
    return Sqrt.apply(x)


def tanh(x):
    return Tanh.apply(x)


def sigmoid(x):
    return Sigmoid.apply(x)


def relu(x):
    return ReLU.apply(x)


def gelu(x, approximate="tanh"):
    """GELU; ``approximate="tanh"`` is GPT-2's form, ``"none"`` the exact erf form."""
    if approximate == "tanh":
        return GELUTanh.apply(x)
    if approximate == "none":
        return GELUErf.apply(x)
    raise ValueError(f"gelu: approximate must be 'tanh' or 'none', got {approximate!r}")


def where(condition, a, b):
    """``a`` where ``condition`` is true, else ``b`` (broadcasting all three)."""
    return Where.apply(unwrap(condition), a, b)


def masked_fill(x, mask, value):
    """``x`` with ``value`` wherever ``mask`` is true (e.g. -inf above the diagonal)."""
    return where(mask, value, x)


def cast(x, dtype):
    return Cast.apply(x, np.dtype(dtype))


# --- reductions ----------------------------------------------------------
def sum(x, axis=None, keepdims=False):  # noqa: A001
    return Sum.apply(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    return Mean.apply(x, axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001
    return Extremum.apply(x, reducer=np.max, axis=axis, keepdims=keepdims)


def min(x, axis=None, keepdims=False):  # noqa: A001
    return Extremum.apply(x, reducer=np.min, axis=axis, keepdims=keepdims)


def var(x, axis=None, keepdims=False, ddof=0):
    """Variance with NumPy's default ``ddof=0`` (divide by n); ``ddof=1`` is the unbiased estimate."""
    return Var.apply(x, axis=axis, keepdims=keepdims, ddof=ddof)


# --- matmul and shapes ---------------------------------------------------
def matmul(a, b):
    return MatMul.apply(a, b)


def reshape(x, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return Reshape.apply(x, shape)


def transpose(x, *axes):
    """Permute axes (all reversed when none are given), like ``ndarray.transpose``."""
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    return Transpose.apply(x, axes=axes or None)


def getitem(x, index):
    index = tuple(unwrap(i) for i in index) if isinstance(index, tuple) else unwrap(index)
    return GetItem.apply(x, index)


def concatenate(tensors, axis=0):
    return Concatenate.apply(*tensors, axis=axis)


def stack(tensors, axis=0):
    return Stack.apply(*tensors, axis=axis)


def split(x, indices_or_sections, axis=0):
    """Split like ``np.split``: into N equal parts, or at the given indices.  Returns a list."""
    length = x.shape[axis]
    if isinstance(indices_or_sections, int):
        if length % indices_or_sections:
            raise ValueError(f"split: axis {axis} of length {length} does not divide into {indices_or_sections} parts")
        step = length // indices_or_sections
        bounds = list(range(0, length + 1, step))
    else:
        bounds = [0, *indices_or_sections, length]
    prefix = (slice(None),) * (axis % x.ndim)
    return [getitem(x, prefix + (slice(lo, hi),)) for lo, hi in zip(bounds[:-1], bounds[1:])]


# --- wiring into Tensor --------------------------------------------------
def _reflected(op):
    return lambda self, other: op(other, self)


Tensor.__add__, Tensor.__radd__ = add, _reflected(add)
Tensor.__sub__, Tensor.__rsub__ = sub, _reflected(sub)
Tensor.__mul__, Tensor.__rmul__ = mul, _reflected(mul)
Tensor.__truediv__, Tensor.__rtruediv__ = div, _reflected(div)
Tensor.__pow__, Tensor.__rpow__ = pow, _reflected(pow)
Tensor.__matmul__, Tensor.__rmatmul__ = matmul, _reflected(matmul)
Tensor.__neg__ = neg
Tensor.__getitem__ = getitem

Tensor.exp, Tensor.log, Tensor.sqrt, Tensor.tanh = exp, log, sqrt, tanh
Tensor.sigmoid, Tensor.relu = sigmoid, relu  # (Tensor.gelu is the fused op: npllm.functional wires it)
Tensor.sum, Tensor.mean, Tensor.max, Tensor.min, Tensor.var = sum, mean, max, min, var
Tensor.reshape, Tensor.transpose, Tensor.permute = reshape, transpose, transpose
Tensor.split, Tensor.masked_fill, Tensor.astype = split, masked_fill, cast
Tensor.T = property(transpose)
