"""Elementwise ops: arithmetic with broadcasting, and the pointwise functions.

Every op here acts on each element independently, so its backward is the
chain rule applied element by element: dL/dx = dL/dy * dy/dx.  Binary ops
broadcast like NumPy, and their backward hands each input its gradient summed
back to its own shape with ``unbroadcast``.

Constants (Python numbers, arrays that are not Tensors) may appear on either
side; they keep NumPy 2's rules, so ``float32_tensor * 0.5`` stays float32.
"""

import functools
import math

import numpy as np

from npllm.tensor import Function, unbroadcast


class Add(Function):
    """y = a + b.   dy/da = 1, dy/db = 1."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (np.shape(a), np.shape(b))
        return np.add(a, b)

    @staticmethod
    def backward(ctx, grad):
        shape_a, shape_b = ctx.shapes
        return unbroadcast(grad, shape_a), unbroadcast(grad, shape_b)


class Sub(Function):
    """y = a - b.   dy/da = 1, dy/db = -1."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (np.shape(a), np.shape(b))
        return np.subtract(a, b)

    @staticmethod
    def backward(ctx, grad):
        shape_a, shape_b = ctx.shapes
        db = -unbroadcast(grad, shape_b) if ctx.needs_input_grad[1] else None
        return unbroadcast(grad, shape_a), db


class Mul(Function):
    """y = a * b.   dy/da = b, dy/db = a."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.multiply(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        need_a, need_b = ctx.needs_input_grad
        da = unbroadcast(grad * b, np.shape(a)) if need_a else None
        db = unbroadcast(grad * a, np.shape(b)) if need_b else None
        return da, db


class Div(Function):
    """y = a / b.   dy/da = 1/b, dy/db = -a/b^2 = -y/b."""

    @staticmethod
    def forward(ctx, a, b):
        out = np.divide(a, b)
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        a, b, out = ctx.saved
        need_a, need_b = ctx.needs_input_grad
        grad_over_b = grad / b
        da = unbroadcast(grad_over_b, np.shape(a)) if need_a else None
        db = unbroadcast(-grad_over_b * out, np.shape(b)) if need_b else None
        return da, db


class Pow(Function):
    """y = a ** b.   dy/da = b * a^(b-1),  dy/db = y * ln(a)  (needs a > 0).

    A constant integer exponent of 2 is computed as a * a: NumPy's float32
    ``power`` is many times slower than a multiply.
    """

    @staticmethod
    def forward(ctx, a, b):
        out = np.multiply(a, a) if (isinstance(b, (int, float)) and b == 2) else np.power(a, b)
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        a, b, out = ctx.saved
        need_a, need_b = ctx.needs_input_grad
        da = db = None
        if need_a:
            local = 2 * a if (isinstance(b, (int, float)) and b == 2) else b * np.power(a, b - 1)
            da = unbroadcast(grad * local, np.shape(a))
        if need_b:  # a may be a Python number, whose np.log is a float64 scalar: compute it in y's dtype
            db = unbroadcast(grad * out * np.log(a, dtype=out.dtype), np.shape(b))
        return da, db


class Neg(Function):
    """y = -x.   dy/dx = -1."""

    @staticmethod
    def forward(ctx, x):
        return np.negative(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


class Exp(Function):
    """y = e^x.   dy/dx = e^x = y."""

    @staticmethod
    def forward(ctx, x):
        out = np.exp(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved
        return grad * out


class Log(Function):
    """y = ln x.   dy/dx = 1/x."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return np.log(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved
        return grad / x


class Sqrt(Function):
    """y = sqrt(x).   dy/dx = 1 / (2 sqrt(x)) = 0.5 / y."""

    @staticmethod
    def forward(ctx, x):
        out = np.sqrt(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved
        return grad * 0.5 / out


class Tanh(Function):
    """y = tanh x.   dy/dx = 1 - tanh^2 x = 1 - y^2."""

    @staticmethod
    def forward(ctx, x):
        out = np.tanh(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved
        return grad * (1 - out * out)


class Sigmoid(Function):
    """y = 1 / (1 + e^-x).   dy/dx = y (1 - y).

    Computed as (1 + tanh(x/2)) / 2, the same function, which never overflows.
    """

    @staticmethod
    def forward(ctx, x):
        out = np.tanh(x * 0.5)
        out += 1
        out *= 0.5
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved
        return grad * out * (1 - out)


class ReLU(Function):
    """y = max(x, 0).   dy/dx = 1 where x > 0, else 0 (we take 0 at x = 0)."""

    @staticmethod
    def forward(ctx, x):
        out = np.maximum(x, 0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved
        return grad * (out > 0)


SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
GELU_CUBIC = 0.044715


class GELUTanh(Function):
    """GPT-2's GELU: y = x/2 (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3).

        dy/dx = (1 + tanh u)/2 + x/2 (1 - tanh^2 u) du/dx,
        du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2).
    """

    @staticmethod
    def forward(ctx, x):
        x_squared = x * x
        tanh_u = np.tanh(SQRT_2_OVER_PI * x * (1 + GELU_CUBIC * x_squared))
        ctx.save_for_backward(x, x_squared, tanh_u)
        return 0.5 * x * (1 + tanh_u)

    @staticmethod
    def backward(ctx, grad):
        x, x_squared, tanh_u = ctx.saved
        du_dx = SQRT_2_OVER_PI * (1 + 3 * GELU_CUBIC * x_squared)
        dy_dx = 0.5 * (1 + tanh_u) + 0.5 * x * (1 - tanh_u * tanh_u) * du_dx
        return grad * dy_dx


_erf = np.frompyfunc(math.erf, 1, 1)

ERF_FIT_END = 4.0  # erf(4) = 1 - 1.5e-8, within float32's resolution of 1: past it, erf is flat
ERF_FIT_TERMS = 7


def _arctanh_erf_fit(terms=ERF_FIT_TERMS, end=ERF_FIT_END) -> np.ndarray:
    """Coefficients c_j of the odd P(x) = sum_j c_j x^(2j+1), j < ``terms``, with tanh(P(x)) = erf(x) on [0, end].

    erf and tanh are both odd and rise from 0 to 1, so arctanh(erf(x)) is a
    smooth odd function, and an odd polynomial can follow it.  An error d in
    P moves tanh(P) by about (1 - erf^2) d, which vanishes as erf nears 1:
    the least squares (at Chebyshev points, against ``math.erf``) are
    weighted by 1 - erf(x)^2, so the terms are spent where erf is not yet 1.
    Seven terms (degree 13) meet erf to 1.5e-7 in float32 (measured on
    200,001 points of [-6, 6]); c_0 comes out as 2/sqrt(pi), erf's slope at 0.
    """
    nodes = np.cos(np.pi * (np.arange(4 * terms) + 0.5) / (4 * terms))  # Chebyshev points in (-1, 1)
    x = end * (nodes + 1) / 2
    exact = np.array([math.erf(value) for value in x])
    weight = 1 - exact * exact
    powers = np.stack([x ** (2 * j + 1) for j in range(terms)], axis=1)
    coefficients, *_ = np.linalg.lstsq(powers * weight[:, None], np.arctanh(exact) * weight, rcond=None)
    return coefficients


ERF_ARCTANH = _arctanh_erf_fit()


@functools.lru_cache(maxsize=8)
def _erf_coefficients(scale: float) -> tuple[list, np.float32]:
    """P's float32 coefficients for erf(scale * x), c_j scale^(2j+1), and where x is clipped; once per scale."""
    powers = scale ** (2 * np.arange(len(ERF_ARCTANH)) + 1)
    limit = np.float32(ERF_FIT_END / abs(scale) if scale else np.inf)  # (scale 0: erf(0) = 0 everywhere)
    return [np.float32(c) for c in ERF_ARCTANH * powers], limit


def erf(x: np.ndarray, scale: float = 1.0, out: np.ndarray = None) -> np.ndarray:
    """The error function of ``scale * x`` (NumPy has no erf ufunc): exact in float64, to 1.5e-7 in float32.

    float64 calls Python's ``math.erf`` per element: exact, and slow (~0.1-0.5
    us per element), which gradient checks can afford.  float32 computes
    erf(z) = tanh(P(z)) with the odd polynomial P of ``_arctanh_erf_fit``,
    z clipped to +-4 (past which erf is flat: the result stays one float32
    step, 6e-8, below 1): about 17 array passes,
    NumPy's vectorised tanh the last, 10-20x faster than ``math.erf``.  It
    replaced erfc(z) = t exp(-z^2 + Q(t)), t = 1 / (1 + z/2), a degree-8 Q
    (about 25 passes, to 6e-7): BERT's GELU forward takes 0.63x the time
    ((1024, 1536) on one core, medians of alternating runs), four times as
    accurately.  ``scale`` is folded into P's coefficients, so
    erf(x / sqrt 2), the normal CDF's, costs no pass of its own; ``out``,
    if given, receives the result.  It serves the exact GELU of BERT
    (GPT-2 uses the tanh form above).
    """
    if x.dtype != np.float32:
        exact = np.asarray(_erf(x * scale), dtype=x.dtype)  # (a 0-d input gives a Python float, not an array)
        if out is None:
            return exact
        out[...] = exact
        return out
    coefficients, limit = _erf_coefficients(float(scale))
    clipped = np.clip(x, -limit, limit)
    squared = np.square(clipped)
    out = np.empty_like(x) if out is None else out
    out[...] = coefficients[-1]
    for coefficient in coefficients[-2::-1]:  # Horner in z^2: P(z) / z
        out *= squared
        out += coefficient
    out *= clipped
    return np.tanh(out, out=out)


class GELUErf(Function):
    """Exact GELU: y = x Phi(x),  Phi(x) = (1 + erf(x / sqrt 2)) / 2.

        dy/dx = Phi(x) + x phi(x),   phi(x) = e^(-x^2/2) / sqrt(2 pi).
    """

    @staticmethod
    def forward(ctx, x):
        x = np.asarray(x)
        cdf = 0.5 * (1 + erf(x * (1 / math.sqrt(2))))
        ctx.save_for_backward(x, cdf)
        return x * cdf

    @staticmethod
    def backward(ctx, grad):
        x, cdf = ctx.saved
        pdf = np.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
        return grad * (cdf + x * pdf)


class Where(Function):
    """y = a where condition else b.   dy/da = condition, dy/db = not condition."""

    @staticmethod
    def forward(ctx, condition, a, b):
        condition = np.asarray(condition, dtype=bool)
        ctx.condition = condition
        ctx.shapes = (np.shape(a), np.shape(b))
        return np.where(condition, a, b)

    @staticmethod
    def backward(ctx, grad):
        _, need_a, need_b = ctx.needs_input_grad
        shape_a, shape_b = ctx.shapes
        zero = np.zeros((), dtype=grad.dtype)
        da = unbroadcast(np.where(ctx.condition, grad, zero), shape_a) if need_a else None
        db = unbroadcast(np.where(ctx.condition, zero, grad), shape_b) if need_b else None
        return None, da, db


class Cast(Function):
    """y = x converted to another floating dtype.   dy/dx = 1, cast back."""

    @staticmethod
    def forward(ctx, x, dtype):
        ctx.input_dtype = np.asarray(x).dtype
        return np.asarray(x).astype(dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad.astype(ctx.input_dtype), None
