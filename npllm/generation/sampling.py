"""Sampling: picking the next token from a model's distribution over the vocabulary.

A language model gives, for every position, logits over the vocabulary for
the *next* token.  To write text we repeat: run the model on the tokens so
far, take the logits at the last position, pick a token, append it.

How the token is picked decides the character of the text:

- greedy (``temperature=0``): always the most likely token; deterministic,
  often repetitive;
- temperature T: sample from softmax(logits / T); T < 1 sharpens the
  distribution, T > 1 flattens it;
- top-k: sample only among the k most likely tokens;
- top-p (nucleus): sample among the smallest set of tokens whose probabilities
  add up to at least p.

The loops that call these, token by token, are in ``decoding.py``.
"""

import math

import numpy as np

from npllm.errors import NpllmError, SettingError


def filter_logits(logits: np.ndarray, top_k=None, top_p=None) -> np.ndarray:
    """Set to -inf every logit outside the top-k and outside the top-p nucleus (1-D logits)."""
    check_sampling_settings(top_k=top_k, top_p=top_p)
    logits = np.array(logits, dtype=np.float64)
    vocab = logits.shape[-1]
    if top_k is not None:
        if top_k < vocab:
            kth_largest = np.partition(logits, vocab - top_k)[vocab - top_k]
            logits[logits < kth_largest] = -np.inf
    if top_p is not None:
        order = np.argsort(-logits, kind="stable")
        probs = softmax_1d(logits[order])
        # keep a token if the probability mass *before* it is still below top_p
        mass_before = np.cumsum(probs) - probs
        logits[order[mass_before >= top_p]] = -np.inf
    return logits


def check_sampling_settings(temperature=1.0, top_k=None, top_p=None):
    """Raise SettingError for a setting that leaves no token to pick (NaN fails every comparison: refused too)."""
    if not 0 <= temperature < math.inf:
        raise SettingError(f"`temperature` must be a number >= 0 (0: greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise SettingError(f"`top_k` must be at least 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise SettingError(f"`top_p` must be in (0, 1], got {top_p}")


def softmax_1d(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - np.max(logits))
    return shifted / shifted.sum()


def sample_token(logits, rng: np.random.Generator, temperature=1.0, top_k=None, top_p=None, banned=()) -> int:
    """Pick the next token id from one position's logits (1-D array of size V), never one of ``banned``."""
    check_sampling_settings(temperature, top_k, top_p)
    require_finite(logits)
    return choose_token(without(logits, banned), rng, temperature, top_k, top_p)


def without(logits: np.ndarray, banned) -> np.ndarray:
    """``logits`` (..., V) with the ``banned`` ids at -inf along the last axis: probability 0, never the argmax."""
    if len(banned) == 0:
        return logits
    logits = np.array(logits, copy=True)
    logits[..., list(banned)] = -np.inf
    return logits


def require_finite(logits):
    if not np.isfinite(logits).all():
        raise NpllmError("the model's logits hold NaN or an infinity: its weights are damaged or overflowed")


def choose_token(logits, rng: np.random.Generator, temperature=1.0, top_k=None, top_p=None) -> int:
    """``sample_token`` without its checks, for logits where -inf marks a token some rule forbids."""
    if temperature == 0:
        return int(np.argmax(logits))
    filtered = filter_logits(np.asarray(logits, dtype=np.float64) / temperature, top_k, top_p)
    probs = softmax_1d(filtered)
    return int(rng.choice(len(probs), p=probs))
