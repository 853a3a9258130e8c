"""gradcheck itself: it must catch a wrong backward, say where, and stay cheap on big inputs.

A checker that never fails proves nothing, so the first tests here are
negative controls: ops with deliberately wrong backward passes, which
gradcheck must reject with a message naming the input, the element and both
values.  The rest check its promises: sampling of big inputs, non-scalar
outputs, constants among the inputs, and a plain True on success.
"""

import re

import numpy as np
import pytest

from npllm import GradcheckError, Tensor, gradcheck
from npllm.tensor import Function

WRONG_ELEMENT = (1, 2)


class SquareWithOneWrongElement(Function):
    """y = x^2, whose backward is wrong by 0.5 at WRONG_ELEMENT only (the right one is dy/dx = 2x)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved
        dx = grad * 2 * x
        dx[WRONG_ELEMENT] += 0.5 * grad[WRONG_ELEMENT]
        return dx


class ScaleIgnoringUpstream(Function):
    """y = 3x, whose backward returns dy/dx = 3 without multiplying by the incoming gradient."""

    @staticmethod
    def forward(ctx, x):
        return 3 * x

    @staticmethod
    def backward(ctx, grad):
        return np.full_like(grad, 3.0)


def leaf(shape, seed=0, name=None):
    values = np.random.default_rng(seed).uniform(0.5, 1.5, shape)
    return Tensor(values, requires_grad=True, name=name)


def test_a_wrong_backward_is_caught_and_located():
    constant, x = Tensor(np.ones((2, 3))), leaf((2, 3), name="weight")
    with pytest.raises(GradcheckError) as raised:
        gradcheck(lambda c, x: (SquareWithOneWrongElement.apply(x) * c).sum(), [constant, x])
    message = str(raised.value)
    assert "input 1 (weight) of shape (2, 3)" in message and f"element {WRONG_ELEMENT}" in message
    analytic, numeric = (float(v) for v in re.search(r"analytic (\S+) vs numerical (\S+)", message).groups())
    true_derivative = 2 * x.data[WRONG_ELEMENT]
    assert analytic == pytest.approx(true_derivative + 0.5, rel=1e-9)
    assert numeric == pytest.approx(true_derivative, rel=1e-6)


def test_a_backward_that_ignores_the_upstream_gradient_is_caught_on_non_scalar_outputs():
    # For a non-scalar output gradcheck weighs the outputs randomly, so an upstream gradient
    # that is not all ones reaches backward, and ignoring it shows.
    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(ScaleIgnoringUpstream.apply, [leaf((2, 3))])


def test_a_correct_non_scalar_function_passes_and_returns_true():
    a, b = leaf((2, 3)), leaf((3, 4), seed=1)
    assert gradcheck(lambda a, b: (a @ b).tanh(), [a, b]) is True


def test_inputs_that_are_constants_are_skipped():
    counted = []
    constant = Tensor(np.full((2,), 2.0))

    def product(x, c):
        counted.append(1)
        return (x * c).sum()

    assert gradcheck(product, [leaf((2,)), constant]) is True
    assert len(counted) == 2 + 2 * 2   # probe, backward pass, then two evaluations per element of x only


@pytest.mark.parametrize("max_elements", [5, 40])
def test_big_inputs_are_sampled(max_elements):
    calls = []

    def exp_sum(x):
        calls.append(1)
        return x.exp().sum()

    assert gradcheck(exp_sum, [leaf((100, 100))], max_elements=max_elements) is True
    assert len(calls) == 2 + 2 * max_elements


def test_sampling_still_catches_a_backward_wrong_everywhere():
    with pytest.raises(GradcheckError):
        gradcheck(lambda x: ScaleIgnoringUpstream.apply(x) * x, [leaf((50, 50))], max_elements=10)


def test_non_contiguous_inputs_are_checked():
    x = Tensor(leaf((4, 3)).data.T, requires_grad=True)
    assert not x.data.flags.c_contiguous
    with pytest.raises(GradcheckError, match=r"shape \(3, 4\)"):
        gradcheck(ScaleIgnoringUpstream.apply, [x])
    assert gradcheck(lambda x: (x * x).sum(), [x]) is True
