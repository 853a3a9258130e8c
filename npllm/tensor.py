"""The autograd engine: a Tensor that remembers how it was made, and backward().

This module teaches reverse-mode automatic differentiation in three pieces.

1. ``Tensor`` wraps a NumPy array (``.data``) and, when it requires a gradient,
   a link (``._ctx``) to the operation that produced it.
2. ``Function`` is one operation: ``forward(ctx, *arrays)`` computes the result
   on raw arrays and may save what backward will need on ``ctx``;
   ``backward(ctx, grad)`` receives dLoss/dOutput and returns dLoss/dInput for
   every input.  Every op in ``npllm.ops`` and ``npllm.functional`` is one such
   class, forward and backward side by side, with the derivative in its
   docstring.
3. ``Tensor.backward()`` orders the recorded graph so that every node comes
   after all the nodes that use it (a reverse topological order, found with an
   explicit stack rather than recursion, so a chain of 100,000 ops works), then
   walks it once, calling each op's backward and *accumulating* (never
   assigning) the gradient of every input, because a tensor used twice
   receives a contribution from each use.

Only leaves (tensors made by the user with ``requires_grad=True``, such as
parameters) keep ``.grad``; gradients of intermediates live in a dictionary
during the walk and are dropped as soon as they have been passed on.  After
backward the saved arrays are released, so memory does not grow with the
number of steps; a second backward through the same graph is an error unless
``retain_graph=True``.

Deliberately left out: higher-order gradients (backward is not itself
recorded), in-place ops on tensors that require grad, and devices.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np


class _GradMode(threading.local):
    """Whether ops record the graph, per thread: ``no_grad`` in one thread leaves the others recording.

    Model code runs on pool threads too (data parallel training, evaluation),
    so a process-wide flag would let one thread's ``no_grad`` switch off
    another thread's backward.  ``saved`` holds the states that the open
    ``no_grad`` blocks of this thread will restore.
    """

    def __init__(self):
        self.enabled = True
        self.saved = []


_grad_mode = _GradMode()


def is_grad_enabled() -> bool:
    """True unless this thread is inside ``no_grad()``."""
    return _grad_mode.enabled


def as_array(x) -> np.ndarray:
    """The array behind ``x``: a Tensor's ``.data``, or ``x`` itself made an array."""
    return np.asarray(unwrap(x))


def unwrap(x):
    """A Tensor's array, or ``x`` unchanged (a Python number, None, an index): what an op's forward receives."""
    return x.data if isinstance(x, Tensor) else x


class no_grad(contextlib.ContextDecorator):
    """Context manager (and decorator) that stops the graph from being recorded.

    Inside it, ops compute values only: no Context is kept, so evaluation and
    generation use no memory for backward and pay no bookkeeping.  It holds
    for the thread that entered it only (see ``_GradMode``).

    As a decorator the same instance is entered on every call, also by a call
    nested in another (recursion) or from another thread, so the states to
    restore are kept per thread, as a stack.
    """

    def __enter__(self):
        _grad_mode.saved.append(_grad_mode.enabled)
        _grad_mode.enabled = False
        return self

    def __exit__(self, *exc):
        _grad_mode.enabled = _grad_mode.saved.pop()
        return False


class ShapeError(ValueError):
    """Raised when an op is given inputs whose shapes do not fit; names the op and the shapes."""


class Context:
    """What one recorded op knows about its call: its inputs and saved arrays.

    ``needs_input_grad[i]`` tells backward whether input ``i`` wants a gradient,
    so an op can skip work (a matmul by a constant never computes the constant's
    gradient).  ``last_backward`` (set by the engine just before backward) is
    True when the saved arrays will be freed right after this backward (no
    ``retain_graph``): backward may then overwrite them instead of
    allocating.  Ops store whatever else they need as attributes of ``ctx``.
    """

    def __init__(self, function, inputs, needs_input_grad):
        self.function = function
        self.inputs = inputs
        self.needs_input_grad = needs_input_grad
        self.freed = False

    def save_for_backward(self, *arrays):
        self.saved = arrays

    def free(self):
        """Drop everything backward needed; called once the graph has been walked."""
        function = self.function
        self.__dict__.clear()
        self.function, self.freed = function, True


class Function:
    """Base class of every differentiable op.

    A subclass writes two static methods:

        forward(ctx, *inputs, **options) -> ndarray
        backward(ctx, grad) -> one gradient (or None) per positional input

    and is called as ``MyOp.apply(*inputs, **options)``.  Inputs that are
    Tensors are unwrapped to their arrays; anything else (a Python number, an
    integer index array) is passed through unchanged and treated as a constant.
    """

    @staticmethod
    def forward(ctx, *inputs, **options):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, grad):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **options):
        arrays = [unwrap(x) for x in inputs]
        needs = ()
        if _grad_mode.enabled:
            needs = tuple([isinstance(x, Tensor) and x.requires_grad for x in inputs])  # list, not generator: faster
        recording = any(needs)
        ctx = Context(cls, inputs if recording else (), needs)
        try:
            out = Tensor._wrap(cls.forward(ctx, *arrays, **options))
        except ValueError as error:
            if type(error).__module__.startswith("npllm."):  # npllm's own errors say what they mean
                raise
            # NumPy's (operands that do not fit, an axis out of range): add the op's name and the shapes
            shapes = ", ".join(str(np.shape(a)) for a in arrays)
            raise ShapeError(f"{cls.__name__}: {error} (input shapes {shapes})") from error
        if recording:
            out.requires_grad = True
            out._ctx = ctx
        return out


def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``grad`` down to ``shape``: the adjoint of NumPy broadcasting.

    Broadcasting copies an input along new leading axes and along axes of size
    1.  Each copy received its own share of the gradient, so the input's
    gradient is the sum over the copies:
        y[i, j] = x[0, j]   for all i   =>   dL/dx[0, j] = sum_i dL/dy[i, j].
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(
        extra + i for i, n in enumerate(shape) if n == 1 and grad.shape[extra + i] != 1
    )
    return grad.sum(axis=axes, keepdims=True).reshape(shape)


class Tensor:
    """An n-dimensional array that can record the ops applied to it.

    ``data`` is the NumPy array; ``grad`` is filled by ``backward()`` for leaves
    that require a gradient.  Floating dtypes are kept as given (float32 by
    default for Python lists and scalars); only floating tensors may require a
    gradient.  Operators and NumPy-named methods (``astype`` among them) are
    attached in ``npllm.ops``, the fused ``gelu`` in ``npllm.functional``.
    """

    __slots__ = ("data", "grad", "requires_grad", "_ctx", "name", "__weakref__")
    __array_priority__ = 1000  # make ndarray + Tensor call Tensor.__radd__

    def __init__(self, data, requires_grad=False, dtype=None, name=None):
        if isinstance(data, Tensor):
            data = data.data
        if dtype is None and not isinstance(data, np.ndarray):
            array = np.asarray(data)
            if array.dtype.kind == "f":
                array = array.astype(np.float32)
        else:
            array = np.asarray(data, dtype=dtype)
        if requires_grad and array.dtype.kind != "f":
            raise TypeError(
                f"only floating-point tensors can require gradients, got dtype {array.dtype}"
                f" (shape {array.shape}); convert with .astype(np.float32) first"
            )
        self.data = array
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx = None
        self.name = name

    @classmethod
    def _wrap(cls, array):
        """Make a result tensor without the checks of __init__ (the hot path)."""
        out = object.__new__(cls)
        out.data = array if isinstance(array, np.ndarray) else np.asarray(array)
        out.grad = None
        out.requires_grad = False
        out._ctx = None
        out.name = None
        return out

    # --- array-like properties -------------------------------------------
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)

    def __len__(self):
        return len(self.data)

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self):
        return self.data.item()

    def detach(self) -> "Tensor":
        """The same values, cut from the graph (shares memory with this tensor)."""
        return Tensor._wrap(self.data)

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        op = f", op={self._ctx.function.__name__}" if self._ctx is not None and not self._ctx.freed else ""
        body = np.array2string(self.data, precision=4, threshold=20, prefix="Tensor(")
        return f"Tensor({body}, dtype={self.dtype}{grad}{op})"

    # --- backward ---------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Accumulate dSelf/dLeaf into ``leaf.grad`` for every leaf that requires it.

        ``grad`` is dLoss/dSelf; it may be omitted only when self is a scalar
        (then it is 1).  With ``retain_graph=False`` the saved arrays are freed
        as the walk goes, so the graph can be walked only once.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (no input required it)")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"backward() without a gradient needs a scalar, but this tensor has shape {self.shape};"
                    " reduce it first (e.g. .sum() or .mean()) or pass grad= of the same shape"
                )
            grad = np.ones_like(self.data)
        else:
            grad = np.asarray(unwrap(grad), dtype=self.dtype)
            if grad.shape != self.shape:
                raise ValueError(f"backward() grad has shape {grad.shape}, but the tensor has shape {self.shape}")

        grads = {id(self): grad}
        owned = set()  # ids whose gradient array we allocated and may update in place
        for node in _reverse_topological_order(self):
            grad = grads.pop(id(node), None)
            if grad is None:  # each op using this node returned None for it: no gradient reaches it
                continue
            ctx = node._ctx
            if ctx is None:
                _accumulate_leaf(node, grad)
                continue
            if ctx.freed:
                raise RuntimeError(
                    f"backward through {ctx.function.__name__} a second time: its saved values were freed"
                    " by the first backward(); call backward(retain_graph=True) the first time"
                )
            ctx.last_backward = not retain_graph
            input_grads = ctx.function.backward(ctx, grad)
            if not isinstance(input_grads, tuple):
                input_grads = (input_grads,)
            for parent, needs, parent_grad in zip(ctx.inputs, ctx.needs_input_grad, input_grads):
                if not needs or parent_grad is None:
                    continue
                if parent_grad.shape != parent.data.shape:
                    _raise_wrong_gradient_shape(ctx.function, parent, parent_grad)
                key = id(parent)
                if key not in grads:
                    grads[key] = parent_grad
                elif key in owned:
                    grads[key] += parent_grad
                else:  # the first array may be shared with another input: add out of place once
                    grads[key] = grads[key] + parent_grad
                    owned.add(key)
            if not retain_graph:
                ctx.free()


def _reverse_topological_order(root: Tensor) -> list:
    """All tensors that require grad and lead to ``root``, each after every user of it.

    Iterative depth-first search: a node is emitted after all its inputs
    (post-order); reversing that list puts every node before its inputs.
    A node is marked visited when it is *expanded*, not when it is pushed: in
    y = x / (x * 2), x is pushed by y before x * 2 is expanded, and must still
    be emitted after x * 2 (else x's gradient is read before x * 2 adds to it).
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        ctx = node._ctx
        if ctx is None or ctx.freed:
            continue
        for parent, needs in zip(ctx.inputs, ctx.needs_input_grad):
            if needs and id(parent) not in visited:
                stack.append((parent, False))
    order.reverse()
    return order


def _accumulate_leaf(leaf: Tensor, grad: np.ndarray):
    """leaf.grad += grad, in place when a gradient buffer already exists."""
    if leaf.grad is None:
        leaf.grad = np.array(grad, dtype=leaf.dtype, copy=True)
    else:
        leaf.grad += grad


def _raise_wrong_gradient_shape(function, parent: Tensor, grad: np.ndarray):
    """A backward that returns the wrong shape is a bug in that op: say which."""
    raise RuntimeError(
        f"{function.__name__}.backward returned a gradient of shape {grad.shape}"
        f" for an input of shape {parent.data.shape}"
    )
