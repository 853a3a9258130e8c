"""erf, which NumPy lacks: exact in float64 (math.erf), within 1.5e-7 of it in float32 (tanh of a fitted odd polynomial), dtype kept."""

import math

import numpy as np

from npllm.ops.elementwise import erf


def test_float32_erf_is_within_its_stated_error_everywhere():
    x = np.concatenate([np.linspace(-6, 6, 200_001), [0.0, 1e-30, 3.999, 4.0, 4.001, 50.0, -50.0]]).astype(np.float32)
    exact = np.array([math.erf(value) for value in x.astype(np.float64)])
    got = erf(x)
    assert got.dtype == np.float32 and got.shape == x.shape
    assert np.abs(got - exact).max() <= 1.6e-7
    assert (np.sign(got[x != 0]) == np.sign(x[x != 0])).all()


def test_float64_erf_is_math_erf_and_0d_stays_an_array():
    x = np.linspace(-3, 3, 101)
    np.testing.assert_array_equal(erf(x), [math.erf(value) for value in x])
    assert isinstance(erf(np.array(0.5)), np.ndarray) and erf(np.array(0.5, dtype=np.float32)).dtype == np.float32


def test_a_scale_is_folded_in_and_out_receives_the_result():
    x = np.linspace(-9, 9, 10_001).astype(np.float32)
    exact = np.array([math.erf(value / math.sqrt(2)) for value in x.astype(np.float64)])
    out = np.empty_like(x)
    assert erf(x, 1 / math.sqrt(2), out=out) is out
    assert np.abs(out - exact).max() <= 1.6e-7
    np.testing.assert_allclose(erf(x.astype(np.float64), 0.5), [math.erf(value / 2) for value in x.astype(np.float64)])
    assert not erf(x, 0.0).any()  # erf(0 * x) = 0
