"""Every primitive op against PyTorch: the same values and the same gradients.

PyTorch is an independent implementation of the same mathematics, so agreement
in float64 to near machine precision rules out a whole class of mistakes that
a gradcheck cannot see (a wrong convention for ties, for ``ddof``, for
broadcasting batch axes in matmul).  Skipped when torch is not installed.

Tolerances.  float64: rtol 1e-10, atol 1e-12; the two libraries may sum in a
different order or use another formula (sigmoid via tanh), which costs a few
units in the last place, ~1e-15.  float32: rtol 2e-5, atol 1e-6; one float32
rounding is ~6e-8 relative, and the longest computation here (a sum over 24
elements, or the chain gelu backward composes) accumulates a few dozen
roundings that the two libraries make in different orders.
"""

import numpy as np
import pytest

from npllm import Tensor, ops

pytestmark = pytest.mark.parity
torch = pytest.importorskip("torch")
F = torch.nn.functional

TOLERANCES = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=2e-5, atol=1e-6)}


def same(fn):
    """The case whose npllm and torch spellings are identical (operators, shared method names)."""
    return fn, fn


def as_torch(array):
    return torch.as_tensor(array)


def constant_like(x):
    """CONSTANT in x's dtype: an ndarray beside an npllm Tensor, a torch tensor beside a torch one."""
    return CONSTANT.astype(x.dtype) if isinstance(x, Tensor) else as_torch(CONSTANT).to(x.dtype)


CONSTANT = np.random.default_rng(5).uniform(0.5, 1.5, (3, 3))
CONDITION = np.array([[True, False, True], [False, False, True], [True, True, False]])
INDEX = np.array([0, 2, 0, 0])
MASK = np.array([True, False, True])

# id: ((input shapes), domain, (npllm fn, torch fn)).  Domains as in random_inputs below.
CASES = {
    "add_broadcast": (((3, 1), (3, 3)), "signed", same(lambda a, b: a + b)),
    "sub_scalar_broadcast": (((), (3, 3, 3)), "signed", same(lambda a, b: a - b)),
    "mul_broadcast": (((4,), (2, 3, 4)), "signed", same(lambda a, b: a * b)),
    "div": (((2, 3), (2, 3)), "positive", same(lambda a, b: a / b)),
    "pow": (((2, 3), (2, 3)), "positive", same(lambda a, b: a ** b)),
    "rsub_scalar": (((3, 3),), "signed", same(lambda x: 2 - x)),
    "rdiv_scalar": (((3, 3),), "positive", same(lambda x: 2 / x)),
    "rpow_scalar": (((3, 3),), "signed", same(lambda x: 2 ** x)),
    "pow_scalars": (((3, 3),), "positive", same(lambda x: x ** 3 + x ** 0.5 + x ** 2)),
    "div_by_array": (((3, 3),), "positive", same(lambda x: x / constant_like(x))),
    "array_matmul": (((3, 3),), "signed", same(lambda x: constant_like(x) @ x)),
    "neg": (((2, 3),), "signed", same(lambda x: -x)),
    "exp": (((2, 3),), "signed", same(lambda x: x.exp())),
    "log": (((2, 3),), "positive", same(lambda x: x.log())),
    "sqrt": (((2, 3),), "positive", same(lambda x: x.sqrt())),
    "tanh": (((2, 3),), "signed", same(lambda x: x.tanh())),
    "sigmoid": (((2, 3),), "signed", same(lambda x: x.sigmoid())),
    "relu": (((2, 3),), "signed", same(lambda x: x.relu())),
    "gelu_tanh": (((2, 3),), "signed", (lambda x: ops.gelu(x), lambda x: F.gelu(x, approximate="tanh"))),
    "gelu_erf": (((2, 3),), "signed", (lambda x: ops.gelu(x, "none"), lambda x: F.gelu(x, approximate="none"))),
    "sum": (((2, 3, 4),), "signed", (lambda x: x.sum(axis=(0, 2)), lambda x: x.sum(dim=(0, 2)))),
    "sum_all": (((2, 3, 4),), "signed", same(lambda x: x.sum())),
    "mean_keepdims": (((2, 3, 4),), "signed",
                      (lambda x: x.mean(axis=-1, keepdims=True), lambda x: x.mean(dim=-1, keepdim=True))),
    "max": (((2, 3, 4),), "distinct", (lambda x: x.max(axis=1), lambda x: x.amax(dim=1))),
    "min_all": (((2, 3, 4),), "distinct", (lambda x: x.min(), lambda x: x.amin())),
    "max_with_ties": (((3, 4),), "ties", (lambda x: x.max(axis=1), lambda x: x.amax(dim=1))),
    "min_with_ties": (((3, 4),), "ties", (lambda x: x.min(axis=0), lambda x: x.amin(dim=0))),
    "var": (((2, 3, 4),), "signed", (lambda x: x.var(axis=(0, 2)), lambda x: x.var(dim=(0, 2), correction=0))),
    "var_ddof1_keepdims": (((2, 3, 4),), "signed", (lambda x: x.var(axis=1, ddof=1, keepdims=True),
                                                    lambda x: x.var(dim=1, correction=1, keepdim=True))),
    "matmul_vectors": (((3,), (3,)), "signed", same(lambda a, b: a @ b)),
    "matmul_vector_matrix": (((3,), (3, 4)), "signed", same(lambda a, b: a @ b)),
    "matmul_2d": (((2, 3), (3, 4)), "signed", same(lambda a, b: a @ b)),
    "matmul_batched_broadcast": (((2, 1, 2, 3), (3, 3, 4)), "signed", same(lambda a, b: a @ b)),
    "matmul_3d_2d": (((2, 4, 3), (3, 5)), "signed", same(lambda a, b: a @ b)),
    "matmul_batch_vector": (((2, 4, 3), (3,)), "signed", same(lambda a, b: a @ b)),
    "reshape": (((2, 3, 4),), "signed", same(lambda x: x.reshape(4, -1))),
    "transpose": (((2, 3, 4),), "signed", (lambda x: x.transpose(2, 0, 1), lambda x: x.permute(2, 0, 1))),
    "T": (((2, 3),), "signed", same(lambda x: x.T)),
    "getitem_slices": (((4, 5),), "signed", same(lambda x: x[1::2, ::3])),
    "getitem_repeated": (((4, 5),), "signed", (lambda x: x[INDEX], lambda x: x[as_torch(INDEX)])),
    "getitem_pairs": (((4, 5),), "signed", (lambda x: x[INDEX, INDEX + 1],
                                            lambda x: x[as_torch(INDEX), as_torch(INDEX + 1)])),
    "getitem_mask": (((3, 4),), "signed", (lambda x: x[MASK], lambda x: x[as_torch(MASK)])),
    "concatenate": (((2, 3), (2, 1)), "signed",
                    (lambda a, b: ops.concatenate([a, b, a], axis=-1), lambda a, b: torch.cat([a, b, a], dim=-1))),
    "stack": (((2, 3), (2, 3)), "signed",
              (lambda a, b: ops.stack([a, b], axis=1), lambda a, b: torch.stack([a, b], dim=1))),
    "split": (((4, 6),), "signed", (lambda x: ops.split(x, [1, 4], axis=1)[1][:2] * ops.split(x, 2)[1][:, 1:4],
                                    lambda x: torch.tensor_split(x, [1, 4], dim=1)[1][:2]
                                    * torch.tensor_split(x, 2)[1][:, 1:4])),
    "where": (((3, 3), (3, 1)), "signed", (lambda a, b: ops.where(CONDITION, a, b),
                                           lambda a, b: torch.where(as_torch(CONDITION), a, b))),
    "masked_fill": (((3, 3),), "signed", (lambda x: x.masked_fill(CONDITION, -2.0),
                                          lambda x: x.masked_fill(as_torch(CONDITION), -2.0))),
    "cast": (((2, 3),), "signed", (lambda x: x.astype(np.float16).astype(x.dtype) * x,
                                   lambda x: x.to(torch.float16).to(x.dtype) * x)),
}


def random_inputs(shapes, domain, dtype):
    """Arrays of ``shapes``: "signed" in ±[0.2, 1.5], "positive" in [0.5, 1.5],
    "distinct" a shuffled grid 0.1 apart, "ties" integers 0..2 (so maxima repeat)."""
    rng = np.random.default_rng(0)
    arrays = []
    for shape in shapes:
        size = int(np.prod(shape))
        if domain == "positive":
            values = rng.uniform(0.5, 1.5, size)
        elif domain == "distinct":
            values = (rng.permutation(size) - size / 2) * 0.1
        elif domain == "ties":
            values = rng.integers(0, 3, size).astype(float)
        else:
            values = rng.uniform(0.2, 1.5, size) * rng.choice([-1.0, 1.0], size)
        arrays.append(values.reshape(shape).astype(dtype))
    return arrays


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("case", CASES)
def test_values_and_gradients_match_torch(case, dtype):
    shapes, domain, (npllm_fn, torch_fn) = CASES[case]
    arrays = random_inputs(shapes, domain, dtype)
    ours = [Tensor(array.copy(), requires_grad=True) for array in arrays]
    theirs = [torch.tensor(array, requires_grad=True) for array in arrays]
    out, expected = npllm_fn(*ours), torch_fn(*theirs)
    upstream = np.random.default_rng(1).standard_normal(out.shape).astype(out.dtype)
    out.backward(upstream)
    expected.backward(torch.as_tensor(upstream))

    assert out.dtype == dtype
    np.testing.assert_allclose(out.data, expected.detach().numpy(), **TOLERANCES[dtype])
    for position, (x, reference) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(x.grad, reference.grad.numpy(), **TOLERANCES[dtype],
                                   err_msg=f"gradient of input {position}")
