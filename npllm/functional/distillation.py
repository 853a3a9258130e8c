"""Soft targets: how far a student's distribution is from a teacher's, the loss of distillation.

A teacher's logits t say more than its top answer: how likely it finds every
other token too.  Distillation (Hinton, Vinyals and Dean, 2015) trains a
student's logits s to match them, both softened by a temperature T > 1 that
lifts the small probabilities where that knowledge lives:

    p = softmax(t / T)                    the teacher's softened distribution (the target)
    q = softmax(s / T)                    the student's
    KL(p || q) = sum_j p_j (log p_j - log q_j)

``kl_div(s, t, T)`` is T^2 KL(p || q), the mean over the rows whose target is
counted (as cross-entropy counts them: ``IGNORE_INDEX`` rows weigh nothing).
**Why T^2.**  With u = s / T, dKL/du = q - p (the softmax and the log cancel,
as in cross-entropy), so dKL/ds = (q - p) / T: the soft loss's gradient
shrinks as 1/T, and as T grows q - p itself shrinks too, (s - t) / (V T) to
first order, so the gradient falls as 1/T^2.  Multiplying the loss by T^2
keeps its gradient on the scale of the hard cross-entropy's whatever T is, so
a mixture alpha T^2 KL + (1 - alpha) CE means what alpha says.  PyTorch's
``kl_div(log_softmax(s/T), log_softmax(t/T), log_target=True,
reduction="batchmean") * T**2`` is the same number (tests/functional).

The teacher's side has a gradient too, derived below, so the op is correct
whichever input requires one; a distillation run feeds teacher logits made
under ``no_grad``, and then only the student's is computed.

**The cosine loss** (DistilBERT, Sanh et al. 2019): beyond the output
distribution, the student's last hidden states h_s can be pulled towards the
teacher's h_t, in direction only (their lengths may differ freely):

    cosine_loss(h_s, h_t) = mean over counted rows of 1 - cos(h_s, h_t),
    cos(x, y) = x.y / sqrt((|x|^2 + eps)(|y|^2 + eps))      (eps = 1e-12, as PyTorch's cosine_embedding_loss)

It needs the two widths equal (a student as wide as its teacher, as
DistilBERT's is), and is 0 when they point the same way.
"""

import math

import numpy as np

from npllm.functional.losses import IGNORE_INDEX
from npllm.functional.probabilities import log_softmax_composed
from npllm.tensor import Function, ShapeError, as_array


# --- the composed reference: the definition, from primitives (autograd derives its backward) ---
def kl_div_composed(student_logits, teacher_logits, temperature=1.0, targets=None, ignore_index=IGNORE_INDEX):
    V = student_logits.shape[-1]
    log_q = log_softmax_composed(student_logits.reshape(-1, V) / temperature)  # (N, V)
    log_p = log_softmax_composed(teacher_logits.reshape(-1, V) / temperature)
    kl_rows = (log_p.exp() * (log_p - log_q)).sum(axis=1)  # (N,)
    keep = _counted_rows(targets, ignore_index, len(kl_rows))
    return kl_rows[np.flatnonzero(keep)].sum() * (temperature ** 2 / int(keep.sum()))


# --- the fused op: one Function, backward derived by hand ---
class FusedKLDiv(Function):
    """L = T^2 / n sum over counted rows of KL(p || q),  p = softmax(t / T),  q = softmax(s / T).

    Per row, with g = dL/dL (the upstream scalar) and k = g T^2 / n on counted rows (0 elsewhere):
        dL/ds_j = k (q_j - p_j) / T                                    (d/du of -sum p log q is q - p)
        dL/dt_j = k p_j ((log p_j - log q_j) - KL_row) / T              (d/du of sum p log p / q:
                                                                         p_j (log p_j - log q_j + 1)
                                                                         - p_j sum_i p_i (log p_i - log q_i + 1))
    Forward keeps log p and log q, (N, V) each; backward makes p and q from them in place.
    """

    @staticmethod
    def forward(ctx, student_logits, teacher_logits, keep, temperature):
        V = student_logits.shape[-1]
        log_q = _log_softmax_rows(student_logits.reshape(-1, V), temperature)  # (N, V)
        log_p = _log_softmax_rows(teacher_logits.reshape(-1, V), temperature)
        log_ratio = log_p - log_q
        p = np.exp(log_p)
        kl_rows = np.einsum("ij,ij->i", p, log_ratio)  # (N,)
        count = int(np.count_nonzero(keep))
        with np.errstate(invalid="ignore", divide="ignore"):  # no counted row: 0/0 = NaN, as cross-entropy
            loss = np.divide(kl_rows @ keep.astype(kl_rows.dtype) * temperature ** 2, count, dtype=kl_rows.dtype)
        ctx.save_for_backward(log_q, p, log_ratio, kl_rows, keep)
        ctx.shape, ctx.count, ctx.temperature = student_logits.shape, count, temperature
        return loss

    @staticmethod
    def backward(ctx, grad):
        log_q, p, log_ratio, kl_rows, keep = ctx.saved
        need_student, need_teacher = ctx.needs_input_grad[:2]
        if ctx.count == 0:
            zeros = np.zeros(ctx.shape, dtype=grad.dtype)
            return (zeros if need_student else None), (zeros if need_teacher else None), None, None
        T = ctx.temperature
        row_weight = (keep * (grad * T / ctx.count))[:, None]  # (N, 1): g T^2 / n / T on counted rows
        dstudent = dteacher = None
        # forward: loss = T^2 / n sum_rows sum_j p_j (log p_j - log q_j)
        if need_student:
            dstudent = np.exp(log_q)
            dstudent -= p
            dstudent *= row_weight
            dstudent = dstudent.reshape(ctx.shape)
        if need_teacher:
            dteacher = log_ratio - kl_rows[:, None]
            dteacher *= p
            dteacher *= row_weight
            dteacher = dteacher.reshape(ctx.shape)
        return dstudent, dteacher, None, None


def _log_softmax_rows(rows, temperature):
    """log softmax(rows / T) along each row, in a new array (shifted by the row max: exp cannot overflow)."""
    scaled = rows * (1.0 / temperature)  # a Python float: the dtype stays
    scaled -= scaled.max(axis=1, keepdims=True)
    scaled -= np.log(np.exp(scaled).sum(axis=1, keepdims=True))
    return scaled


def _counted_rows(targets, ignore_index, n_rows):
    if targets is None:
        return np.ones(n_rows, dtype=bool)
    return as_array(targets).reshape(-1) != ignore_index


def kl_div(student_logits, teacher_logits, temperature=1.0, targets=None, ignore_index=IGNORE_INDEX):
    """T^2 KL(softmax(teacher / T) || softmax(student / T)), the mean over counted rows (see the module docstring).

    ``student_logits`` and ``teacher_logits``: (..., V) of one shape.  With
    ``targets`` (integer ids of shape (...,)), rows whose target is
    ``ignore_index`` are left out, as in ``cross_entropy``; without, every row counts.
    """
    s_shape, t_shape = as_array(student_logits).shape, as_array(teacher_logits).shape
    if s_shape != t_shape or len(s_shape) < 2:
        raise ShapeError(f"kl_div: student and teacher logits must be (..., V) of one shape, got {s_shape} and {t_shape}")
    if targets is not None and as_array(targets).shape != s_shape[:-1]:
        raise ShapeError(f"kl_div: logits of shape {s_shape} need targets of shape {s_shape[:-1]},"
                         f" got {as_array(targets).shape}")
    if not 0 < temperature < math.inf:
        raise ValueError(f"kl_div: temperature must be a positive number, got {temperature}")
    keep = _counted_rows(targets, ignore_index, math.prod(s_shape[:-1]))
    return FusedKLDiv.apply(student_logits, teacher_logits, keep, float(temperature))


# --- the cosine loss: its composed reference, then the fused op ---
COSINE_EPS = 1e-12  # added to each squared length, as torch.nn.functional.cosine_embedding_loss does


def cosine_loss_composed(student_hidden, teacher_hidden, mask=None):
    C = student_hidden.shape[-1]
    s, t = student_hidden.reshape(-1, C), teacher_hidden.reshape(-1, C)  # (N, C)
    cos = (s * t).sum(axis=1) / (((s * s).sum(axis=1) + COSINE_EPS) * ((t * t).sum(axis=1) + COSINE_EPS)) ** 0.5
    keep = np.ones(len(cos.data), dtype=bool) if mask is None else as_array(mask).reshape(-1).astype(bool)
    return (1.0 - cos[np.flatnonzero(keep)]).sum() * (1.0 / int(keep.sum()))


class FusedCosineLoss(Function):
    """L = 1/n sum over counted rows of 1 - c,  c = a / sqrt(m k),  a = s.t,  m = |s|^2 + eps,  k = |t|^2 + eps.

    Per row, with w = g / n on counted rows (0 elsewhere):
        dc/ds = t / sqrt(m k) - a s / (m sqrt(m k)) = (t - (a / m) s) / sqrt(m k)     (d m / d s = 2 s)
        dc/dt = (s - (a / k) t) / sqrt(m k)                                            (the same, s and t swapped)
        dL/ds = -w dc/ds,  dL/dt = -w dc/dt
    Forward keeps a, m and 1 / sqrt(m k), (N,) each, besides the two inputs.
    """

    @staticmethod
    def forward(ctx, student_hidden, teacher_hidden, keep):
        C = student_hidden.shape[-1]
        s, t = student_hidden.reshape(-1, C), teacher_hidden.reshape(-1, C)  # (N, C)
        dot = np.einsum("ij,ij->i", s, t)  # a, (N,)
        s_square = np.einsum("ij,ij->i", s, s) + s.dtype.type(COSINE_EPS)  # m
        t_square = np.einsum("ij,ij->i", t, t) + t.dtype.type(COSINE_EPS)  # k
        inverse_norms = 1.0 / np.sqrt(s_square * t_square)
        count = int(np.count_nonzero(keep))
        ctx.save_for_backward(s, t, dot, s_square, t_square, inverse_norms, keep)
        ctx.shape, ctx.count = student_hidden.shape, count
        with np.errstate(invalid="ignore", divide="ignore"):  # no counted row: 0/0 = NaN, as cross-entropy
            return np.divide((1.0 - dot * inverse_norms) @ keep.astype(dot.dtype), count, dtype=dot.dtype)

    @staticmethod
    def backward(ctx, grad):
        s, t, dot, s_square, t_square, inverse_norms, keep = ctx.saved
        need_student, need_teacher = ctx.needs_input_grad[:2]
        row_weight = -(keep * inverse_norms) * (grad / max(ctx.count, 1))  # (N,): -w / sqrt(m k)
        # forward: loss = 1/n sum_rows (1 - a / sqrt(m k))
        dstudent = dteacher = None
        if need_student:
            dstudent = (t - (dot / s_square)[:, None] * s) * row_weight[:, None]
            dstudent = dstudent.reshape(ctx.shape)
        if need_teacher:
            dteacher = (s - (dot / t_square)[:, None] * t) * row_weight[:, None]
            dteacher = dteacher.reshape(ctx.shape)
        return dstudent, dteacher, None


def cosine_loss(student_hidden, teacher_hidden, mask=None):
    """The mean of 1 - cos(student row, teacher row) over the rows ``mask`` counts (DistilBERT's cosine loss).

    ``student_hidden`` and ``teacher_hidden``: (..., C) of one shape; ``mask``
    (...,), true for a row that counts (a real token), false for padding;
    without, every row counts.  Equal to PyTorch's
    ``cosine_embedding_loss(s, t, ones)`` on the counted rows.
    """
    s_shape, t_shape = as_array(student_hidden).shape, as_array(teacher_hidden).shape
    if s_shape != t_shape or len(s_shape) < 2:
        raise ShapeError(f"cosine_loss: student and teacher hidden states must be (..., C) of one shape,"
                         f" got {s_shape} and {t_shape}")
    if mask is not None and as_array(mask).shape != s_shape[:-1]:
        raise ShapeError(f"cosine_loss: hidden states of shape {s_shape} need a mask of shape {s_shape[:-1]},"
                         f" got {as_array(mask).shape}")
    rows = math.prod(s_shape[:-1])
    keep = np.ones(rows, dtype=bool) if mask is None else as_array(mask).reshape(-1).astype(bool)
    return FusedCosineLoss.apply(student_hidden, teacher_hidden, keep)
