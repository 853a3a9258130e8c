"""The basic layers: Linear, Embedding, LayerNorm, Dropout.

Each layer owns its Parameters and calls one fused op of
``npllm.functional`` in ``forward``; the math and the backward live there.

Initialisation follows GPT-2, which this library builds: weight matrices
and embedding tables are drawn from N(0, std^2) with std = 0.02 unless told
otherwise, biases start at zero, LayerNorm's gain at one.  Every random draw
comes from an ``np.random.Generator`` passed in as ``rng``, so a model built
from one seeded generator is reproducible to the bit.  (PyTorch's layers
default to a uniform fan-in initialisation instead; GPT-2 overrides it with
the normal one, so we start there.)

Weights are stored in GPT-2's own layout: Linear's weight is (in, out) and
``y = x @ W + b`` (PyTorch's nn.Linear stores the transpose).  That is what
GPT-2's checkpoints call Conv1D, so they load without transposing.
"""

import contextlib
import contextvars

import numpy as np

import npllm.functional as F
from npllm.errors import SettingError
from npllm.nn.module import Module, Parameter

GPT2_INIT_STD = 0.02
_LEFT_UNINITIALISED = contextvars.ContextVar("left_uninitialised", default=False)


@contextlib.contextmanager
def uninitialised():
    """Inside this block, layers allocate their weight matrices without drawing them (``np.empty``).

    For a loader that replaces every weight right away: drawing GPT-2 small's
    124 M normal values takes seconds and a float64 temporary as large as the
    model, all thrown away.  Biases and LayerNorm gains (zeros and ones) are
    small and stay as they are.
    """
    token = _LEFT_UNINITIALISED.set(True)
    try:
        yield
    finally:
        _LEFT_UNINITIALISED.reset(token)


def own_generator(rng):
    """A generator of one's own: a child spawned from ``rng`` if it is a Generator, else seeded by ``rng``."""
    if isinstance(rng, np.random.Generator):
        return rng.spawn(1)[0]
    return np.random.default_rng(rng)


def _normal(rng, shape, std, dtype):
    if _LEFT_UNINITIALISED.get():
        return np.empty(shape, dtype)
    rng = np.random.default_rng() if rng is None else rng
    return (rng.standard_normal(shape) * std).astype(dtype)


class Linear(Module):
    """y = x @ weight + bias, with weight (in_features, out_features) and bias (out_features,)."""

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, rng=None, std=GPT2_INIT_STD):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(_normal(rng, (in_features, out_features), std, dtype))
        self.bias = Parameter(np.zeros(out_features, dtype=dtype)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A table of ``num_embeddings`` learned vectors of size ``embedding_dim``; forward(ids) looks rows up.

    ``padding_idx``: a row that starts at zero and that the lookup never trains (PyTorch's option).
    """

    def __init__(self, num_embeddings, embedding_dim, dtype=np.float32, rng=None, std=GPT2_INIT_STD,
                 padding_idx=None):
        super().__init__()
        self.weight = Parameter(_normal(rng, (num_embeddings, embedding_dim), std, dtype))
        self.padding_idx = padding_idx
        if padding_idx is not None:
            self.weight.data[padding_idx] = 0.0

    def forward(self, ids):
        return F.embedding(ids, self.weight, padding_idx=self.padding_idx)

    def extra_repr(self):
        return f"{self.weight.shape[0]}, {self.weight.shape[1]}"


class LayerNorm(Module):
    """Normalise the last axis to mean 0, variance 1, then scale by ``weight`` and shift by ``bias``."""

    def __init__(self, normalized_size, bias=True, eps=1e-5, dtype=np.float32):
        super().__init__()
        self.eps = eps
        self.weight = Parameter(np.ones(normalized_size, dtype=dtype))
        self.bias = Parameter(np.zeros(normalized_size, dtype=dtype)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.weight.shape[0]}, bias={self.bias is not None}, eps={self.eps}"


class Dropout(Module):
    """Zero each element with probability ``p`` in training (scaling the rest by 1/(1-p)); identity in eval.

    It draws its masks from a generator of its own, spawned from ``rng`` (a
    Generator or an integer seed), so a run is reproducible whatever else
    draws numbers.
    """

    def __init__(self, p=0.0, rng=None):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise SettingError(f"Dropout: `dropout` must be in [0, 1), got {p}")
        self.p = p
        self.rng = own_generator(rng)

    def forward(self, x):
        return F.dropout(x, self.p, self.training, self.rng)

    def extra_repr(self):
        return f"p={self.p}"
