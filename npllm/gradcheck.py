"""Gradient checking: proving a backward pass right with finite differences.

For a scalar function L(x), the central difference

    dL/dx_i  ~  (L(x + eps e_i) - L(x - eps e_i)) / (2 eps)

has an error of order eps^2, so in float64 with eps ~ 1e-6 it agrees with the
true derivative to about 1e-9 relative, far below any bug.  ``gradcheck``
computes it for elements of each input that requires grad and compares it with
what ``backward()`` produced.

A function with a non-scalar output y is reduced to the scalar
L = sum(y * r) with a fixed random r, which checks every output's gradient
at once (a backward that is wrong for any output changes L's gradient).

Use it on your own functions: ``gradcheck(lambda a, b: (a * b).sum(), [a, b])``.
"""

import warnings

import numpy as np

from npllm.tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """The analytic and numerical gradients disagree; the message names where."""


def _scalar_loss(fn, inputs, weights):
    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    if weights is None:
        return out
    return (out * weights).sum()


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, max_elements=256, seed=0):
    """Check ``fn``'s analytic gradients against central differences.

    ``inputs`` are Tensors (those with ``requires_grad`` are checked; they
    should be float64 for the check to be meaningful).  For inputs with more
    than ``max_elements`` elements, a random sample of that many is checked.
    An element passes when |analytic - numeric| <= atol + rtol |numeric|.

    Returns True, or raises GradcheckError naming the input, the worst element
    and both values.
    """
    inputs = list(inputs)
    rng = np.random.default_rng(seed)
    with no_grad():
        probe = fn(*inputs)
    weights = None
    if probe.size != 1:
        weights = Tensor(rng.standard_normal(probe.shape).astype(probe.dtype))

    for x in inputs:
        if isinstance(x, Tensor):
            x.grad = None
    _scalar_loss(fn, inputs, weights).backward()

    for position, x in enumerate(inputs):
        if not (isinstance(x, Tensor) and x.requires_grad):
            continue
        analytic = x.grad if x.grad is not None else np.zeros_like(x.data)
        if x.dtype != np.float64:
            warnings.warn(f"gradcheck: input {position} is {x.dtype}; central differences need float64"
                          " to mean anything", stacklevel=2)
        caller_data = x.data
        try:
            numeric, elements = _central_differences(fn, inputs, weights, x, eps, max_elements, rng)
        finally:
            x.data = caller_data  # we may have swapped in a contiguous copy to perturb
        _compare(position, x, analytic.reshape(-1)[elements], numeric, elements, atol, rtol)
    return True


def _central_differences(fn, inputs, weights, x, eps, max_elements, rng):
    """(numerical gradient at the sampled elements, their flat indices) for input ``x``."""
    flat = x.data.reshape(-1)  # a view when contiguous; otherwise perturb a contiguous copy
    if not np.shares_memory(flat, x.data):
        x.data = flat.reshape(x.shape)
        flat = x.data.reshape(-1)
    elements = np.arange(flat.size)
    if flat.size > max_elements:
        elements = np.sort(rng.choice(flat.size, size=max_elements, replace=False))
    numeric = np.empty(len(elements))
    with no_grad():
        for k, i in enumerate(elements):
            original = flat[i]
            flat[i] = original + eps
            plus = _scalar_loss(fn, inputs, weights).item()
            flat[i] = original - eps
            minus = _scalar_loss(fn, inputs, weights).item()
            flat[i] = original
            numeric[k] = (plus - minus) / (2 * eps)
    return numeric, elements


def _compare(position, x, analytic, numeric, elements, atol, rtol):
    excess = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
    worst = int(np.argmax(excess))
    if excess[worst] > 0:
        where = np.unravel_index(elements[worst], x.shape)
        label = f"input {position}" + (f" ({x.name})" if x.name else "") + f" of shape {x.shape}"
        raise GradcheckError(
            f"gradcheck failed for {label} at element {tuple(int(i) for i in where)}:"
            f" analytic {analytic[worst]:.10g} vs numerical {numeric[worst]:.10g}"
            f" (|diff| {abs(analytic[worst] - numeric[worst]):.3g}, allowed {atol + rtol * abs(numeric[worst]):.3g})"
        )
