"""Matrix multiplication, the op where nearly all of a transformer's time goes.

For C = A @ B with A (m, k) and B (k, n):

    C[i, j] = sum_p A[i, p] B[p, j]
    dL/dA[i, p] = sum_j dL/dC[i, j] B[p, j]   =>   dA = dC @ B^T
    dL/dB[p, j] = sum_i A[i, p] dL/dC[i, j]   =>   dB = A^T @ dC

NumPy's matmul also multiplies stacks of matrices, broadcasting the leading
(batch) axes; the backward then sums each gradient over the batch axes its
input was broadcast along (``unbroadcast``).  A 1-D operand is a vector: it is
promoted to a matrix for the computation and the added axis removed again.

One fast path: a stack of rows times one matrix, (..., k) @ (k, n), as in
``x @ W`` for activations x of shape (B, T, k).  NumPy runs that as many
small products; we reshape the rows into one (rows, k) matrix first, which
is one large BLAS call (about twice as fast here), and the weight's gradient
becomes one product too.  (The ``nn.Linear`` layer does not come through
here: it calls the fused ``F.linear``, which flattens its rows the same way.)
"""

import numpy as np

from npllm.tensor import Function, ShapeError, unbroadcast


def _check_inner_dimensions(a, b):
    inner_a = np.shape(a)[-1] if np.ndim(a) else None
    inner_b = np.shape(b)[-2] if np.ndim(b) >= 2 else (np.shape(b)[0] if np.ndim(b) == 1 else None)
    if inner_a is None or inner_b is None or inner_a != inner_b:
        raise ShapeError(f"MatMul: cannot multiply shapes {np.shape(a)} @ {np.shape(b)}: inner dimensions differ")


class MatMul(Function):
    """y = a @ b  (see the module docstring for the derivation)."""

    @staticmethod
    def forward(ctx, a, b):
        _check_inner_dimensions(a, b)
        ctx.save_for_backward(a, b)
        if np.ndim(a) > 2 and np.ndim(b) == 2:
            rows = a.reshape(-1, a.shape[-1])  # (N, k): all leading axes as one
            return (rows @ b).reshape(*a.shape[:-1], b.shape[-1])
        return np.matmul(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved
        need_a, need_b = ctx.needs_input_grad
        if a.ndim > 2 and b.ndim == 2:
            grad_rows = grad.reshape(-1, grad.shape[-1])  # (N, n)
            da = (grad_rows @ b.T).reshape(a.shape) if need_a else None
            db = a.reshape(-1, a.shape[-1]).T @ grad_rows if need_b else None
            return da, db
        # promote vectors to matrices: a (k,) -> (1, k); b (k,) -> (k, 1)
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        # and give grad back the axes the vectors dropped, the last one first
        # (for (k,) @ (k,) the scalar grad goes () -> (1,) -> (1, 1))
        if b.ndim == 1:
            grad = np.expand_dims(grad, -1)
        if a.ndim == 1:
            grad = np.expand_dims(grad, -2)
        da = db = None
        if need_a:
            da = unbroadcast(grad @ np.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
        if need_b:
            db = unbroadcast(np.swapaxes(a2, -1, -2) @ grad, b2.shape).reshape(b.shape)
        return da, db
