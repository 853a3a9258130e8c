"""Every public op in ``npllm.ops``, its backward proven by finite differences in float64.

Each test sweeps the cases that break backward passes in practice: shapes with
size-1 axes, broadcasting against a bigger operand, reductions over every
kind of ``axis`` with and without ``keepdims``, non-contiguous inputs
(transposed and strided views), integer indices that repeat, boolean masks,
slices with steps, vectors and batches in matmul.  Inputs are kept away from
the points where an op is not differentiable (relu at 0, ties in max, log and
sqrt at 0); the tie rule of max/min is checked on its own, exactly.
"""

import numpy as np
import pytest

from npllm import Tensor, gradcheck, ops

RNG_SEED = 1234


def random_input(shape, domain="signed", seed=0):
    """A float64 leaf of ``shape``.  Domains: "signed" values in ±[0.2, 1.5] (never near 0),
    "positive" in [0.5, 1.5], "distinct" a shuffled grid 0.1 apart (no ties for max/min)."""
    rng = np.random.default_rng(RNG_SEED + seed)
    size = int(np.prod(shape))
    if domain == "positive":
        values = rng.uniform(0.5, 1.5, size)
    elif domain == "distinct":
        values = (rng.permutation(size) - size / 2) * 0.1
    else:
        values = rng.uniform(0.2, 1.5, size) * rng.choice([-1.0, 1.0], size)
    return Tensor(values.reshape(shape), requires_grad=True)


def transposed_input(shape, domain="signed", seed=0):
    """A leaf of ``shape`` whose data is a non-contiguous view (the transpose of a contiguous array)."""
    base = random_input(shape[::-1], domain, seed).data
    view = base.transpose()
    assert not view.flags.c_contiguous or view.ndim < 2
    return Tensor(view, requires_grad=True)


def strided_input(shape, domain="signed", seed=0):
    """A leaf of ``shape`` whose data takes every other element of a bigger array along axis 0."""
    base = random_input((2 * shape[0], *shape[1:]), domain, seed).data
    return Tensor(base[::2], requires_grad=True)


# --- elementwise ---------------------------------------------------------
UNARY_OPS = {
    "neg": (ops.neg, "signed"), "exp": (ops.exp, "signed"), "log": (ops.log, "positive"),
    "sqrt": (ops.sqrt, "positive"), "tanh": (ops.tanh, "signed"), "sigmoid": (ops.sigmoid, "signed"),
    "relu": (ops.relu, "signed"), "gelu_tanh": (ops.gelu, "signed"),
    "gelu_erf": (lambda x: ops.gelu(x, approximate="none"), "signed"),
}
SHAPES = [(), (5,), (2, 3), (2, 1, 3), (1, 1)]
LAYOUTS = {"contiguous": random_input, "transposed": transposed_input, "strided": strided_input}


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", UNARY_OPS)
def test_unary_op(name, shape):
    op, domain = UNARY_OPS[name]
    assert gradcheck(op, [random_input(shape, domain)])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", UNARY_OPS)
def test_unary_op_on_non_contiguous_input(name, layout):
    op, domain = UNARY_OPS[name]
    assert gradcheck(op, [LAYOUTS[layout]((3, 2), domain)])


BINARY_OPS = {"add": ops.add, "sub": ops.sub, "mul": ops.mul, "div": ops.div, "pow": ops.pow}
BROADCAST_PAIRS = [
    ((3, 3), (3, 3)), ((3, 1), (3, 3)), ((3, 3), (3, 1)), ((), (3, 3, 3)), ((3, 3, 3), ()),
    ((4,), (2, 3, 4)), ((2, 3, 4), (4,)), ((2, 1, 4), (3, 1)), ((1,), (1, 1)),
]


@pytest.mark.parametrize("shapes", BROADCAST_PAIRS, ids=str)
@pytest.mark.parametrize("name", BINARY_OPS)
def test_binary_op_with_broadcasting(name, shapes):
    a, b = (random_input(shape, "positive", seed) for seed, shape in enumerate(shapes))
    assert gradcheck(BINARY_OPS[name], [a, b])


@pytest.mark.parametrize("name", BINARY_OPS)
def test_binary_op_on_non_contiguous_inputs(name):
    a, b = transposed_input((3, 4), "positive"), strided_input((3, 4), "positive", seed=1)
    assert gradcheck(BINARY_OPS[name], [a, b])


CONSTANT = np.random.default_rng(7).uniform(0.5, 1.5, (3, 3))
OPERATOR_FORMS = {
    "x + 2": lambda x: x + 2, "2 + x": lambda x: 2 + x, "arr + x": lambda x: CONSTANT + x,
    "x - 2": lambda x: x - 2, "2 - x": lambda x: 2 - x, "arr - x": lambda x: CONSTANT - x,
    "x * 3": lambda x: x * 3, "3 * x": lambda x: 3 * x, "arr * x": lambda x: CONSTANT * x,
    "x / 3": lambda x: x / 3, "3 / x": lambda x: 3 / x, "x / arr": lambda x: x / CONSTANT,
    "arr / x": lambda x: CONSTANT / x, "x ** 2": lambda x: x ** 2, "x ** 3": lambda x: x ** 3,
    "x ** 0.5": lambda x: x ** 0.5, "x ** -1.5": lambda x: x ** -1.5, "2 ** x": lambda x: 2 ** x,
    "arr ** x": lambda x: CONSTANT ** x, "x ** arr": lambda x: x ** CONSTANT,
    "arr @ x": lambda x: CONSTANT @ x, "x @ arr": lambda x: x @ CONSTANT, "-x": lambda x: -x,
    "x.T": lambda x: x.T,
}


@pytest.mark.parametrize("form", OPERATOR_FORMS)
def test_python_operators_and_reflected_forms(form):
    assert gradcheck(OPERATOR_FORMS[form], [random_input((3, 3), "positive")])


def test_pow_with_a_tensor_exponent_reaching_both_inputs():
    base, exponent = random_input((2, 3), "positive"), random_input((2, 3), "signed", seed=1)
    assert gradcheck(lambda a, b: a ** b, [base, exponent])


# --- where, masked_fill, cast --------------------------------------------
CONDITION_3x3 = np.array([[True, False, True], [False, False, True], [True, True, False]])


@pytest.mark.parametrize("condition, shape_a, shape_b", [
    (CONDITION_3x3, (3, 3), (3, 3)),
    (CONDITION_3x3[:, :1], (3, 3), (3,)),     # condition (3, 1) broadcast; b broadcast along rows
    (CONDITION_3x3, (), (3, 1)),
], ids=["same_shapes", "broadcast_condition", "scalar_and_column"])
def test_where(condition, shape_a, shape_b):
    a, b = random_input(shape_a), random_input(shape_b, seed=1)
    assert gradcheck(lambda a, b: ops.where(condition, a, b), [a, b])


def test_where_with_a_tensor_condition_and_a_constant_branch():
    condition = Tensor(CONDITION_3x3)
    assert gradcheck(lambda a: ops.where(condition, 0.5, a), [random_input((3, 3))])


@pytest.mark.parametrize("mask", [CONDITION_3x3, CONDITION_3x3[0]], ids=["full_mask", "broadcast_mask"])
def test_masked_fill(mask):
    assert gradcheck(lambda x: x.masked_fill(mask, -1e9) * 1e-9 + x, [random_input((3, 3))])


def test_cast_to_float32_and_back():
    # The float32 leg rounds values to ~6e-8 relative, so the step eps must be much larger than
    # that: with eps = 1e-3 the rounding adds at most ~1e-4 relative error to the difference quotient.
    assert gradcheck(lambda x: x.astype(np.float32).astype(np.float64) * 3, [random_input((2, 3))], eps=1e-3)


# --- reductions ----------------------------------------------------------
REDUCTIONS = {"sum": ops.sum, "mean": ops.mean, "max": ops.max, "min": ops.min, "var": ops.var}
AXES = [None, 0, 2, -1, (0, 2), (-1, 0), (0, 1, 2)]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("name", REDUCTIONS)
def test_reduction(name, axis, keepdims):
    x = random_input((2, 3, 4), "distinct")
    assert gradcheck(lambda x: REDUCTIONS[name](x, axis=axis, keepdims=keepdims), [x])


@pytest.mark.parametrize("make_input, axis", [
    (lambda: random_input((3, 1, 2), "distinct"), 1),
    (lambda: random_input((3, 1, 2), "distinct"), (1, 2)),
    (lambda: random_input((), "distinct"), None),
    (lambda: transposed_input((4, 3), "distinct"), 1),
    (lambda: strided_input((3, 4), "distinct"), 0),
], ids=["size_1_axis", "size_1_and_another", "scalar", "transposed", "strided"])
@pytest.mark.parametrize("name", REDUCTIONS)
def test_reduction_on_awkward_inputs(name, make_input, axis):
    assert gradcheck(lambda x: REDUCTIONS[name](x, axis=axis), [make_input()])


@pytest.mark.parametrize("axis", [None, 1, (0, 2)], ids=str)
@pytest.mark.parametrize("ddof", [1, 2])
def test_var_with_ddof(ddof, axis):
    assert gradcheck(lambda x: ops.var(x, axis=axis, ddof=ddof), [random_input((3, 4, 2))])


@pytest.mark.parametrize("reduce, axis, expected", [
    (ops.max, 1, [[0, 1 / 2, 1 / 2], [1 / 3, 1 / 3, 1 / 3]]),
    (ops.min, 1, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]]),
    (ops.max, None, [[0, 1 / 2, 1 / 2], [0, 0, 0]]),
    (ops.min, 0, [[1, 0, 0], [0, 1, 1]]),
], ids=["max_rows", "min_rows", "max_all", "min_columns"])
def test_max_and_min_split_the_gradient_equally_between_ties(reduce, axis, expected):
    x = Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]]), requires_grad=True)
    reduce(x, axis=axis).sum().backward()
    np.testing.assert_allclose(x.grad, expected)


# --- matmul --------------------------------------------------------------
MATMUL_SHAPES = [
    ((3,), (3,)), ((3,), (3, 4)), ((2, 3), (3,)), ((2, 3), (3, 4)),
    ((5, 2, 3), (5, 3, 4)),             # batched
    ((2, 1, 2, 3), (3, 3, 4)),          # batch axes broadcast: (2, 1) with (3,) -> (2, 3)
    ((1, 2, 3), (4, 3, 2)),             # batch axis of size 1 broadcast
    ((3,), (2, 3, 4)), ((2, 4, 3), (3,)),
    ((2, 4, 3), (3, 5)), ((2, 2, 4, 3), (3, 5)),   # the (..., k) @ (k, n) fast path
]


@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul(shapes):
    a, b = (random_input(shape, seed=seed) for seed, shape in enumerate(shapes))
    assert gradcheck(ops.matmul, [a, b])


@pytest.mark.parametrize("make_a, make_b", [
    (lambda: transposed_input((4, 3)), lambda: transposed_input((3, 2), seed=1)),
    (lambda: strided_input((2, 4, 3)), lambda: transposed_input((3, 5), seed=1)),   # fast path
    (lambda: Tensor(random_input((3, 4, 2)).data.transpose(0, 2, 1), requires_grad=True),
     lambda: random_input((3, 4, 5), seed=1)),
], ids=["transposed_2d", "fast_path_strided", "batched_transposed"])
def test_matmul_on_non_contiguous_inputs(make_a, make_b):
    assert gradcheck(ops.matmul, [make_a(), make_b()])


@pytest.mark.parametrize("shapes", [((2, 4, 3), (3, 5)), ((4, 3), (2, 3, 5))], ids=str)
@pytest.mark.parametrize("constant", [0, 1], ids=["constant_a", "constant_b"])
def test_matmul_with_one_constant_operand(shapes, constant):
    a, b = (random_input(shape, seed=seed) for seed, shape in enumerate(shapes))
    (a, b)[constant].requires_grad = False
    assert gradcheck(ops.matmul, [a, b])


# --- reshape, transpose, indexing ----------------------------------------
SHAPE_OPS = {
    "reshape": lambda x: x.reshape(4, 6),
    "reshape_minus_one": lambda x: x.reshape(-1, 2),
    "reshape_tuple_adding_axes": lambda x: ops.reshape(x, (1, 2, 12, 1)),
    "transpose_reverse": lambda x: x.transpose(),
    "transpose_axes": lambda x: x.transpose(1, 2, 0),
    "transpose_negative_axes": lambda x: x.transpose((-1, 0, -2)),
    "permute": lambda x: x.permute(2, 0, 1),
    "T": lambda x: x.T,
    "int": lambda x: x[1],
    "negative_int": lambda x: x[-1, 2],
    "slice": lambda x: x[:, 1:3],
    "slice_with_step": lambda x: x[:, ::2, 1::2],
    "slice_negative_step": lambda x: x[::-1, ::-2],
    "ellipsis_and_newaxis": lambda x: x[..., None, 1],
    "repeated_integer_index": lambda x: x[[0, 0, 1, 0]],
    "repeated_integer_pairs": lambda x: x[[0, 1, 0], [2, 2, 2]],
    "integer_array_on_last_axis": lambda x: x[:, :, np.array([3, 0, 3, 3])],
    "integer_tensor_index": lambda x: x[Tensor(np.array([[1, 1], [0, 1]]))],
    "slice_and_integer_array": lambda x: x[1:, [2, 2, 0]],
    "boolean_mask": lambda x: x[x.data > 0],
    "boolean_mask_on_axis": lambda x: x[:, np.array([True, False, True])],
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", SHAPE_OPS)
def test_shape_op(name, layout):
    assert gradcheck(SHAPE_OPS[name], [LAYOUTS[layout]((2, 3, 4))])


def test_repeated_indices_accumulate():
    x = Tensor(np.zeros(3), requires_grad=True)
    x[[2, 0, 2, 2]].sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, 0.0, 3.0])


# --- concatenate, stack, split -------------------------------------------
@pytest.mark.parametrize("axis, shapes", [
    (0, [(1, 3), (2, 3), (3, 3)]),
    (1, [(2, 1, 2), (2, 3, 2)]),
    (-1, [(2, 3, 1), (2, 3, 2), (2, 3, 1)]),
], ids=["axis0", "axis1", "axis-1"])
def test_concatenate(axis, shapes):
    tensors = [random_input(shape, seed=seed) for seed, shape in enumerate(shapes)]
    assert gradcheck(lambda *xs: ops.concatenate(xs, axis=axis), tensors)


def test_concatenate_with_a_constant_and_a_non_contiguous_input():
    constant = np.ones((3, 2))
    assert gradcheck(lambda x: ops.concatenate([constant, x, x], axis=1), [transposed_input((3, 2))])


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2])
def test_stack(axis):
    tensors = [random_input((2, 3), seed=seed) for seed in range(3)]
    assert gradcheck(lambda *xs: ops.stack(xs, axis=axis), tensors)


@pytest.mark.parametrize("sections, axis", [(2, 0), (3, 1), ([1, 3], -1), ([2], 1)], ids=str)
def test_split(sections, axis):
    # weight each piece differently, so a gradient routed to the wrong piece is caught
    def split_and_weigh(x):
        pieces = ops.split(x, sections, axis=axis)
        return ops.concatenate([piece * (k + 1.0) for k, piece in enumerate(pieces)], axis=axis)

    assert gradcheck(split_and_weigh, [random_input((4, 3, 4))])
