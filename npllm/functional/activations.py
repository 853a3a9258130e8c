"""GELU, the transformer's non-linearity: GPT-2's tanh form and BERT's exact erf form.

    gelu(x) = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))      approximate="tanh" (GPT-2)
    gelu(x) = x Phi(x) = x/2 (1 + erf(x / sqrt 2))               approximate="none" (BERT)

The composed versions spell the formulas with primitives (the erf form is
the primitive ``ops.gelu`` itself); the fused one folds the constants,
works in place over cache-sized pieces on all cores, and is what
``Tensor.gelu`` and ``F.gelu`` call.  Its pieces also serve
``F.linear_gelu`` (``projection.py``), which adds the Linear's bias inside
the same pieces.
"""

import math

import numpy as np

from npllm import ops
from npllm.functional import _kernels
from npllm.ops.elementwise import GELU_CUBIC, SQRT_2_OVER_PI, erf
from npllm.tensor import Function, Tensor

FORMS = ("tanh", "none")


# --- the composed reference: the definition, from primitives (autograd derives its backward) ---
def gelu_composed(x, approximate="tanh"):
    if approximate == "none":
        return ops.gelu(x, "none")  # x Phi(x), the primitive GELUErf
    return 0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x)).tanh())


# --- the fused op: one Function, backward derived by hand ---
class FusedGELU(Function):
    """GELU in either form; ``saved`` is what backward reuses from forward (tanh u, or Phi(x)).

    tanh form:  y = x/2 (1 + t),  t = tanh(u),  u = s x (1 + c x^2),  s = sqrt(2/pi), c = 0.044715,
        dy/dx = (1 + t)/2 + x/2 (1 - t^2) du/dx,   du/dx = s (1 + 3 c x^2)
    erf form:   y = x Phi(x),  Phi(x) = (1 + erf(x / sqrt 2)) / 2,
        dy/dx = Phi(x) + x phi(x),   phi(x) = e^(-x^2/2) / sqrt(2 pi)

    The tanh form folds the constants and works in place (x^3 is never
    formed: float32 ``x ** 3`` is ~70x slower than multiplies here), 8
    passes forward and 10 back; the erf form's ~17 passes of ``erf`` (its
    1/sqrt 2 folded into erf's polynomial) run on one piece at a time.
    Every pass is made over cache-sized pieces on all cores (``map_rows``),
    so that the passes read L2 cache rather than memory: the erf form
    composed over whole arrays (``ops.gelu``) took 1.7x as long on one core
    and 2.5x on two (forward and backward on (1024, 1536), medians of
    alternating runs).
    """

    @staticmethod
    def forward(ctx, x, approximate="tanh"):
        x = np.ascontiguousarray(x)
        saved, out = np.empty_like(x), np.empty_like(x)
        _kernels.map_rows(PIECES[approximate][0], _kernels.flat(x), _kernels.flat(saved), _kernels.flat(out))
        ctx.save_for_backward(x, saved)
        ctx.approximate = approximate
        return out

    @staticmethod
    def backward(ctx, grad):
        x, saved = ctx.saved
        dx = np.empty_like(x)
        _kernels.map_rows(PIECES[ctx.approximate][1], _kernels.flat(x), _kernels.flat(saved),
                          _kernels.flat(np.ascontiguousarray(grad)), _kernels.flat(dx))
        return dx


def gelu_tanh_forward(x, tanh_u, out):
    """One piece of the tanh form's forward: tanh_u = tanh(u) and out = x/2 (1 + tanh_u), written in place."""
    np.square(x, out=tanh_u)
    tanh_u *= SQRT_2_OVER_PI * GELU_CUBIC
    tanh_u += SQRT_2_OVER_PI
    tanh_u *= x  # u = s x (1 + c x^2)
    np.tanh(tanh_u, out=tanh_u)
    np.add(tanh_u, 1.0, out=out)
    out *= x
    out *= 0.5


def gelu_tanh_backward(x, tanh_u, grad, dx):
    """One piece of the tanh form's backward: dx = grad * dy/dx, written in place.

    With a = x/2 du/dx:  dy/dx = (1 + t)/2 + (1 - t^2) a = 1/2 + a + t (1/2 - t a),
    one pass fewer than spelling (1 - t^2) out.
    """
    # forward: out = x/2 * (1 + tanh(s x (1 + c x^2)))
    np.square(x, out=dx)
    dx *= 1.5 * SQRT_2_OVER_PI * GELU_CUBIC
    dx += 0.5 * SQRT_2_OVER_PI
    dx *= x  # a = x/2 du/dx
    scratch = np.multiply(tanh_u, dx)
    np.subtract(0.5, scratch, out=scratch)
    scratch *= tanh_u  # t (1/2 - t a)
    dx += scratch
    dx += 0.5
    dx *= grad


def gelu_erf_forward(x, cdf, out):
    """One piece of the erf form's forward: cdf = Phi(x) and out = x Phi(x)."""
    erf(x, 1 / math.sqrt(2), out=cdf)
    cdf += 1.0
    cdf *= 0.5
    np.multiply(x, cdf, out=out)


def gelu_erf_backward(x, cdf, grad, dx):
    """One piece of the erf form's backward: dx = grad * (Phi(x) + x phi(x))."""
    # forward: out = x * Phi(x)
    np.square(x, out=dx)
    dx *= -0.5
    np.exp(dx, out=dx)
    dx *= 1 / math.sqrt(2 * math.pi)  # phi(x)
    dx *= x  # x phi(x)
    dx += cdf
    dx *= grad


PIECES = {"tanh": (gelu_tanh_forward, gelu_tanh_backward), "none": (gelu_erf_forward, gelu_erf_backward)}


def gelu(x, approximate="tanh"):
    """GELU: ``approximate="tanh"`` is GPT-2's form, ``"none"`` the exact erf form (BERT's); both fused."""
    if approximate not in FORMS:
        raise ValueError(f"gelu: approximate must be 'tanh' or 'none', got {approximate!r}")
    return FusedGELU.apply(x, approximate=approximate)


Tensor.gelu = gelu  # x.gelu() is this fused op, not the composed primitive (4 vs 18 ms fwd+bwd on (1024, 512))
