"""Cross-entropy: how surprised a model is by the targets, the loss of every language model.

For a row of logits x over V classes and its target t,

    loss = -log softmax(x)_t = log sum_j e^(x_j) - x_t,

averaged over the rows whose target is not ``IGNORE_INDEX`` (padding, a
prompt the model should not learn to write).  The composed version builds it
from ``log_softmax`` and indexing; the fused one never stores the
probabilities and never builds a one-hot.
"""

import numpy as np

from npllm.functional import _kernels
from npllm.functional.probabilities import log_softmax_composed
from npllm.tensor import Function, ShapeError, as_array


IGNORE_INDEX = -100  # a target with this value is not learned from (padding, prompts): PyTorch's convention


# --- the composed reference: the definition, from primitives (autograd derives its backward) ---
def cross_entropy_composed(logits, targets, ignore_index=IGNORE_INDEX, label_smoothing=0.0):
    V = logits.shape[-1]
    targets = as_array(targets).reshape(-1)
    log_probs = log_softmax_composed(logits.reshape(-1, V))  # (N, V)
    keep = targets != ignore_index
    kept_rows = np.flatnonzero(keep)
    picked = log_probs[kept_rows, targets[kept_rows]]  # (n,)
    count = len(kept_rows)
    nll = -picked.sum() / count
    smooth = -log_probs[kept_rows].mean(axis=1).sum() / count  # cross-entropy with the uniform distribution
    return (1.0 - label_smoothing) * nll + label_smoothing * smooth


# --- the fused op: one Function, backward derived by hand ---
class FusedCrossEntropy(Function):
    """Mean negative log-likelihood of the targets, with optional label smoothing.

    For one row of logits x (length V) with target t, let p = softmax(x) and
    lse = log sum_j e^(x_j), so log p_j = x_j - lse.  With smoothing eps the
    target distribution is q = (1 - eps) onehot(t) + eps / V, and

        loss_row = -sum_j q_j log p_j = lse - (1 - eps) x_t - (eps / V) sum_j x_j
        d loss_row / dx_j = p_j - q_j = p_j - (1 - eps) [j = t] - eps / V.

    The loss is the mean over the n rows whose target is not ``ignore_index``;
    ignored rows get zero gradient, the others (p - q) / n.  Forward keeps
    e^(x - c) (unnormalised; c the row max, or 0 when that is safe, see
    ``_kernels.exp_needs_no_shift``) and the row sums; backward divides by the sums
    while scaling, so p is never stored separately, and the one-hot is never
    built: (1 - eps) is subtracted at the n target positions only.  The
    forward's passes over the (N, V) logits (two, or four with the shift) run
    over cache-sized blocks of rows on all cores (``map_rows``).
    """

    @staticmethod
    def forward(ctx, logits, targets, ignore_index=IGNORE_INDEX, label_smoothing=0.0):
        V = logits.shape[-1]
        rows = logits.reshape(-1, V)  # (N, V)
        targets = targets.reshape(-1)  # (N,)
        keep = targets != ignore_index
        count = int(np.count_nonzero(keep))
        safe_targets = np.where(keep, targets, 0)
        exp_shifted = np.empty_like(rows)
        row_shift, row_sum = np.empty((2, len(rows), 1), dtype=rows.dtype)  # (N, 1) each
        _kernels.map_rows(_exp_shifted_rows, rows, exp_shifted, row_shift, row_sum)
        log_sum_exp = (np.log(row_sum) + row_shift)[:, 0]  # (N,)
        target_logit = rows[np.arange(len(rows)), safe_targets]
        loss_rows = log_sum_exp - (1.0 - label_smoothing) * target_logit
        if label_smoothing:
            loss_rows -= label_smoothing * rows.mean(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):  # all ignored: 0/0 = NaN, as PyTorch
            loss = np.divide(loss_rows @ keep.astype(logits.dtype), count, dtype=logits.dtype)
        ctx.save_for_backward(exp_shifted, row_sum, keep, safe_targets)
        ctx.shape, ctx.count, ctx.label_smoothing = logits.shape, count, label_smoothing
        return loss

    @staticmethod
    def backward(ctx, grad):
        exp_shifted, row_sum, keep, safe_targets = ctx.saved
        if ctx.count == 0:
            return np.zeros(ctx.shape, dtype=grad.dtype), None
        eps, V = ctx.label_smoothing, exp_shifted.shape[1]
        # forward: loss = sum over kept rows of (lse - (1 - eps) x_t - eps/V sum_j x_j) / n
        row_weight = keep * (grad / ctx.count)  # (N,): g/n on kept rows, 0 on ignored ones
        dlogits = exp_shifted if ctx.last_backward else exp_shifted.copy()  # in place: no new (N, V) array
        dlogits *= row_weight[:, None] / row_sum  # p g/n
        kept_rows = np.flatnonzero(keep)
        dlogits[kept_rows, safe_targets[kept_rows]] -= (1.0 - eps) * row_weight[kept_rows]
        if eps:
            dlogits -= (eps / V) * row_weight[:, None]
        return dlogits.reshape(ctx.shape), None


def _exp_shifted_rows(rows, exp_shifted, row_shift, row_sum):
    """For a block of rows: exp_shifted = e^(rows - row_shift) and row_sum = its row sums (in place).

    row_shift is each row's max, or 0 where ``_kernels.exp_needs_no_shift`` allows (two passes fewer).
    """
    if _kernels.exp_needs_no_shift(rows):
        row_shift[...] = 0.0
        np.exp(rows, out=exp_shifted)
    else:
        np.max(rows, axis=1, keepdims=True, out=row_shift)
        np.subtract(rows, row_shift, out=exp_shifted)
        np.exp(exp_shifted, out=exp_shifted)
    _kernels.row_sums(exp_shifted, out=row_sum[:, 0])


def cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, label_smoothing=0.0):
    """Mean cross-entropy of integer ``targets`` under ``logits``.

    ``logits``: (N, V) or (B, T, V) (any (..., V)); ``targets``: integer ids of
    shape (N,) or (B, T), an ndarray or a Tensor.  Rows whose target equals
    ``ignore_index`` are left out of the mean.  When every row is ignored the
    loss is NaN (0/0) and the gradient zero, exactly as in PyTorch.
    """
    logits_shape = as_array(logits).shape
    targets = as_array(targets)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integer class ids, got dtype {targets.dtype}")
    if len(logits_shape) < 2 or targets.shape != logits_shape[:-1]:
        raise ShapeError(
            f"cross_entropy: logits of shape {logits_shape} need targets of shape {logits_shape[:-1]}"
            f" (one id per row of V = {logits_shape[-1] if logits_shape else '?'} logits),"
            f" got targets of shape {targets.shape}"
        )
    V = logits_shape[-1]
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= V))
    if bad.any():
        raise ValueError(
            f"cross_entropy: target id {int(targets[bad][0])} is out of range for V = {V} classes"
            f" (valid ids are 0..{V - 1}, or ignore_index = {ignore_index})"
        )
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    return FusedCrossEntropy.apply(logits, targets, ignore_index=ignore_index, label_smoothing=float(label_smoothing))
