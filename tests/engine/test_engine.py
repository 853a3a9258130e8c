"""The autograd engine itself: graph walking, accumulation, freeing, no_grad, dtypes and errors.

These tests check the promises ``npllm/tensor.py`` makes independently of any
particular op's derivative (the ops' derivatives are gradchecked in
test_ops_gradcheck.py): backward is iterative, a tensor used twice gets both
contributions, saved arrays are released, ``no_grad`` records nothing, float32
stays float32 all the way through, and misuse fails with a message that says
what went wrong and where.
"""

import threading

import numpy as np
import pytest

from npllm import ShapeError, Tensor, no_grad, ops
from npllm.tensor import Function, is_grad_enabled


def leaf(values, dtype=np.float64):
    return Tensor(np.asarray(values, dtype=dtype), requires_grad=True)


# --- walking the graph ---------------------------------------------------
def test_backward_through_a_chain_of_100000_ops_is_iterative():
    x = leaf([1.0])
    y = x
    for _ in range(100_000):
        y = y + 1.0
    y.backward(np.ones(1))
    assert y.item() == 100_001.0
    assert x.grad.tolist() == [1.0]


def test_reused_intermediate_receives_both_contributions():
    a = leaf([1.0, 2.0, 3.0])
    b = a + a   # b = 2a, a used twice by one op
    c = b * b   # c = 4a^2, b used twice by one op
    c.sum().backward()
    np.testing.assert_array_equal(a.grad, 8 * a.data)


def test_diamond_graph_sums_both_paths():
    a = leaf([0.5, -1.0])
    left, right = a * 2.0, a.exp()
    (left * right).sum().backward()   # d/da (2a e^a) = 2 e^a + 2a e^a
    np.testing.assert_allclose(a.grad, (2 + 2 * a.data) * np.exp(a.data))


def test_input_used_directly_and_through_an_intermediate():
    """y = e / sum(e): e is pushed by y before sum(e) is expanded, yet must come after it."""
    a = leaf([0.5, -1.0, 2.0])
    e = a.exp()
    (e / e.sum() * np.array([1.0, 2.0, 3.0])).sum().backward()
    p = np.exp(a.data) / np.exp(a.data).sum()
    weights = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(a.grad, p * (weights - (weights * p).sum()), rtol=1e-6)


def test_a_branch_that_receives_no_gradient_is_skipped():
    class Constant(Function):
        """Treats its input as a constant: backward returns None for it."""

        @staticmethod
        def forward(ctx, x):
            return x.copy()

        @staticmethod
        def backward(ctx, grad):
            return None

    a = leaf([1.0, 2.0])
    (Constant.apply(a * 2.0) * a).sum().backward()   # the a * 2.0 branch carries no gradient
    np.testing.assert_array_equal(a.grad, [2.0, 4.0])


def test_leaf_gradients_accumulate_across_backward_calls():
    a = leaf([1.0, 2.0])
    (a * 3.0).sum().backward()
    (a * 3.0).sum().backward()
    np.testing.assert_array_equal(a.grad, [6.0, 6.0])


def test_only_leaves_keep_grad():
    a, constant = leaf([1.0, 2.0]), Tensor(np.array([3.0, 4.0]))
    middle = a * constant
    middle.sum().backward()
    assert middle.grad is None and constant.grad is None
    np.testing.assert_array_equal(a.grad, constant.data)


def test_backward_accepts_an_upstream_gradient_for_non_scalars():
    a = leaf([1.0, 2.0])
    (a * a).backward(np.array([10.0, 100.0]))
    np.testing.assert_array_equal(a.grad, [20.0, 400.0])


# --- freeing saved values ------------------------------------------------
def test_backward_frees_saved_values():
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    product = a * b
    product.sum().backward()
    assert product._ctx.freed and not hasattr(product._ctx, "saved")


def test_second_backward_through_a_freed_graph_names_the_op():
    a = leaf([1.0, 2.0])
    loss = (a * a).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match=r"Sum a second time.*retain_graph=True"):
        loss.backward()


def test_retain_graph_allows_a_second_backward():
    a = leaf([1.0, 2.0])
    loss = (a * a).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_array_equal(a.grad, 2 * (2 * a.data))


# --- no_grad and detach --------------------------------------------------
def test_no_grad_as_context_manager_records_nothing():
    a = leaf([1.0, 2.0])
    with no_grad():
        assert not is_grad_enabled()
        y = (a * a).exp()
    assert is_grad_enabled()
    assert not y.requires_grad and y._ctx is None


def test_no_grad_as_decorator_records_nothing_and_survives_recursion():
    a = leaf([1.0, 2.0])

    @no_grad()
    def power(x, n):
        assert not is_grad_enabled()
        return x if n == 0 else power(x, n - 1) * a

    y = power(a, 3)
    assert not y.requires_grad and y._ctx is None
    assert is_grad_enabled()


def test_no_grad_restores_the_state_after_an_exception():
    with pytest.raises(KeyError), no_grad():
        raise KeyError("inside")
    assert is_grad_enabled()


def test_no_grad_holds_for_its_own_thread_only():
    inside, other_thread_sees = threading.Event(), []

    def other_thread():
        inside.wait()
        other_thread_sees.append((is_grad_enabled(), (leaf([1.0]) * 2).requires_grad))

    worker = threading.Thread(target=other_thread)
    worker.start()
    with no_grad():
        inside.set()
        worker.join()
        assert not (leaf([1.0]) * 2).requires_grad
    assert other_thread_sees == [(True, True)]


def test_an_ops_own_value_error_is_not_relabelled_a_shape_error():
    from npllm.nn.attention import KVCache, KVCacheError
    import npllm.functional as F

    cache = KVCache(1, 1, 2, capacity=1)
    qkv = Tensor(np.zeros((1, 2, 6), dtype=np.float32))
    with pytest.raises(KVCacheError, match="exceed its capacity of 1") as raised:
        F.self_attention(qkv, 1, is_causal=True, kv_cache=cache)
    assert not isinstance(raised.value, ShapeError)


def test_detach_shares_values_and_stops_the_gradient():
    a = leaf([1.0, 2.0])
    detached = a.detach()
    assert np.shares_memory(detached.data, a.data)
    assert not detached.requires_grad and detached.is_leaf
    (detached * a).sum().backward()   # only the attached factor carries gradient
    np.testing.assert_array_equal(a.grad, a.data)


# --- clear errors --------------------------------------------------------
@pytest.mark.parametrize("build, op_name, shapes", [
    (lambda: Tensor(np.ones((2, 3))) + Tensor(np.ones(4)), "Add", ["(2, 3)", "(4,)"]),
    (lambda: Tensor(np.ones((2, 3))) * Tensor(np.ones((3, 2))), "Mul", ["(2, 3)", "(3, 2)"]),
    (lambda: Tensor(np.ones((2, 3))) @ Tensor(np.ones((4, 5))), "MatMul", ["(2, 3)", "(4, 5)"]),
    (lambda: Tensor(np.ones((2, 3))).reshape(4), "Reshape", ["(2, 3)"]),
    (lambda: ops.concatenate([Tensor(np.ones((2, 3))), Tensor(np.ones((2, 4)))]), "Concatenate",
     ["(2, 3)", "(2, 4)"]),
    (lambda: Tensor(np.ones((2, 3)))[5], "GetItem", ["(2, 3)"]),
], ids=["add", "mul", "matmul", "reshape", "concatenate", "getitem"])
def test_shape_mismatch_raises_shape_error_naming_op_and_shapes(build, op_name, shapes):
    with pytest.raises(ShapeError) as raised:
        build()
    message = str(raised.value)
    assert op_name in message and all(shape in message for shape in shapes), message
    assert isinstance(raised.value, ValueError)


def test_backward_on_a_non_scalar_without_grad_is_an_error():
    with pytest.raises(RuntimeError, match=r"scalar.*shape \(2,\)"):
        (leaf([1.0, 2.0]) * 2.0).backward()


def test_backward_with_a_gradient_of_the_wrong_shape_is_an_error():
    with pytest.raises(ValueError, match=r"\(3,\).*\(2,\)"):
        (leaf([1.0, 2.0]) * 2.0).backward(np.ones(3))


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_])
def test_non_float_tensors_cannot_require_grad(dtype):
    with pytest.raises(TypeError, match=np.dtype(dtype).name):
        Tensor(np.zeros(3, dtype=dtype), requires_grad=True)


def test_backward_on_a_tensor_that_does_not_require_grad_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        (Tensor(np.ones(2)) * 2.0).sum().backward()


def test_a_backward_returning_the_wrong_shape_is_blamed_on_its_op():
    class SumToFirst(Function):
        """A deliberately broken op: its backward forgets to expand the gradient."""

        @staticmethod
        def forward(ctx, x):
            return x.sum()

        @staticmethod
        def backward(ctx, grad):
            return grad

    with pytest.raises(RuntimeError, match=r"SumToFirst\.backward.*shape \(\).*\(3,\)"):
        SumToFirst.apply(leaf([1.0, 2.0, 3.0])).backward()


# --- dtypes --------------------------------------------------------------
class GradientDtypeProbe(Function):
    """Identity whose backward records the dtype of the gradient that reaches it."""

    @staticmethod
    def forward(ctx, x, record):
        ctx.record = record
        return x

    @staticmethod
    def backward(ctx, grad):
        ctx.record.append(grad.dtype)
        return grad, None


CONDITION = np.array([[True, False, True], [False, True, True]])

# Every public op on (2, 3) inputs x, y with values in [0.5, 1.5], with Python-scalar operands where they apply.
OPS_ON_TWO_INPUTS = {
    "add": lambda x, y: x + y, "add_scalar": lambda x, y: x + 2, "radd_scalar": lambda x, y: 2.5 + x,
    "sub": lambda x, y: x - y, "sub_scalar": lambda x, y: x - 2, "rsub_scalar": lambda x, y: 2.5 - x,
    "mul": lambda x, y: x * y, "mul_scalar": lambda x, y: x * 2, "rmul_scalar": lambda x, y: 0.5 * x,
    "div": lambda x, y: x / y, "div_scalar": lambda x, y: x / 3, "rdiv_scalar": lambda x, y: 1.5 / x,
    "pow": lambda x, y: x ** y, "square": lambda x, y: x ** 2, "cube": lambda x, y: x ** 3,
    "pow_half": lambda x, y: x ** 0.5, "rpow_scalar": lambda x, y: 2 ** x,
    "neg": lambda x, y: -x, "exp": lambda x, y: x.exp(), "log": lambda x, y: x.log(),
    "sqrt": lambda x, y: x.sqrt(), "tanh": lambda x, y: x.tanh(), "sigmoid": lambda x, y: x.sigmoid(),
    "relu": lambda x, y: (x - 1).relu(), "gelu_tanh": lambda x, y: x.gelu(),
    "gelu_erf": lambda x, y: x.gelu(approximate="none"),
    "sum": lambda x, y: x.sum(axis=1), "mean": lambda x, y: x.mean(axis=0, keepdims=True),
    "max": lambda x, y: x.max(axis=-1), "min": lambda x, y: x.min(), "var": lambda x, y: x.var(axis=1, ddof=1),
    "matmul": lambda x, y: x @ y.T, "matmul_3d_2d": lambda x, y: x.reshape(1, 2, 3) @ y.T,
    "matmul_vector": lambda x, y: x[0] @ y[1],
    "reshape": lambda x, y: x.reshape(3, 2), "transpose": lambda x, y: x.transpose(1, 0),
    "getitem_repeated": lambda x, y: x[[0, 0, 1]], "getitem_mask": lambda x, y: x[CONDITION],
    "concatenate": lambda x, y: ops.concatenate([x, y], axis=1), "stack": lambda x, y: ops.stack([x, y]),
    "split": lambda x, y: ops.split(x, 3, axis=1)[2] * y[:, :1],
    "where": lambda x, y: ops.where(CONDITION, x, y), "where_scalar": lambda x, y: ops.where(CONDITION, x, 0.5),
    "masked_fill": lambda x, y: x.masked_fill(CONDITION, -1e4),
    "cast_round_trip": lambda x, y: (x.astype(np.float64) * 2).astype(x.dtype),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op", OPS_ON_TWO_INPUTS.values(), ids=OPS_ON_TWO_INPUTS.keys())
def test_dtype_is_kept_through_forward_and_backward(op, dtype):
    rng = np.random.default_rng(0)
    x, y = (leaf(rng.uniform(0.5, 1.5, (2, 3)), dtype) for _ in range(2))
    seen = []
    out = op(GradientDtypeProbe.apply(x, record=seen), GradientDtypeProbe.apply(y, record=seen))
    assert out.dtype == dtype
    out.backward(np.ones(out.shape, dtype=dtype))
    assert seen and all(grad_dtype == dtype for grad_dtype in seen), seen
    assert all(t.grad.dtype == dtype for t in (x, y) if t.grad is not None)


def test_python_lists_and_scalars_default_to_float32():
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(3.0).dtype == np.float32
    assert Tensor(np.ones(2)).dtype == np.float64  # an array keeps its own dtype
