"""Decoding: a decoder-only model writes text, one token at a time, with or without its KV cache.

A language model gives, for every position, logits over the vocabulary for
the *next* token.  To write text we repeat: run the model on the tokens so
far, take the logits at the last position, pick a token (``sampling.py``),
append it.

The KV cache.  Without one, step t re-runs the model over all t tokens, so
writing n tokens costs O(n^2) token-passes.  Every layer's keys and values of
earlier positions never change (attention is causal), so we keep them and
feed the model only the newest token: each step costs O(context).  The two
paths produce the same logits up to rounding, so the same tokens.

When the text outgrows the model's context, the prompt is cropped from the
left; with the cache, the cache is rebuilt on the last ``context_length``
tokens (positions are absolute, so stale keys cannot be reused).

Many prompts at once (``greedy_batch``, for scoring a model on held-out
questions): prompts of the same length share a batch and one KV cache, and
advance a token per step together, so the per-token cost of Python is paid
once per batch, not once per prompt.  Greedy only; a row that has written
its stop token keeps being fed (its further tokens are dropped), and
writing stops at the context's end rather than sliding.
"""

import warnings

import numpy as np

from npllm.errors import NpllmError, SettingError
from npllm.generation.sampling import check_sampling_settings, sample_token, without
from npllm.tensor import as_array, no_grad


def generate_tokens(model, prompt_ids, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None,
                    use_cache=True, stop_token=None, banned_tokens=()):
    """Yield new token ids one at a time (so callers can stream them), up to ``max_new_tokens``.

    Stops early after yielding ``stop_token`` (e.g. <|endoftext|>); never
    yields one of ``banned_tokens`` (a tokenizer's ``unused_ids``).  A prompt
    longer than the model's context is cropped from the left, with a warning.
    Bad arguments raise ``SettingError`` at the call, before the first token.
    """
    check_sampling_settings(temperature, top_k, top_p)
    if not max_new_tokens >= 0:
        raise SettingError(f"`max_new_tokens` must be at least 0, got {max_new_tokens}")
    if seed is not None and not seed >= 0:
        raise SettingError(f"`seed` must be at least 0, got {seed}")
    ids = [int(i) for i in prompt_ids]
    if not ids:
        raise NpllmError("generate: the prompt must hold at least one token id")
    context_length = model.config.context_length
    if len(ids) > context_length:
        warnings.warn(f"generate: the prompt has {len(ids)} tokens, more than the context of {context_length};"
                      f" using its last {context_length}", stacklevel=2)
        ids = ids[-context_length:]
    return _generate(model, ids, max_new_tokens, temperature, top_k, top_p, np.random.default_rng(seed),
                     use_cache, stop_token, banned_tokens)


def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None, use_cache=True,
             stop_token=None) -> np.ndarray:
    """Continue the token ids ``idx`` (1-D, or (1, T)) by up to ``max_new_tokens``; returns the (cropped) prompt and them."""
    prompt = as_array(idx).reshape(-1)
    new = generate_tokens(model, prompt, max_new_tokens, temperature, top_k, top_p, seed, use_cache, stop_token)
    return np.concatenate([prompt[-model.config.context_length:], np.fromiter(new, dtype=prompt.dtype)])


def _generate(model, ids, max_new_tokens, temperature, top_k, top_p, rng, use_cache, stop_token, banned_tokens):
    """The generator behind ``generate_tokens``, its arguments already checked."""
    was_training = model.training
    model.eval()
    try:
        next_logits = _cached_logits(model) if use_cache else _uncached_logits(model)
        for _ in range(max_new_tokens):
            with no_grad():  # around the model call only: the caller's code between tokens keeps its own mode
                logits = next_logits(ids)
            token = sample_token(logits, rng, temperature, top_k, top_p, banned_tokens)
            ids.append(token)
            yield token
            if token == stop_token:
                return
    finally:
        model.train(was_training)


def _uncached_logits(model):
    """Logits for the next token by running the model over the whole (cropped) text every time."""
    context_length = model.config.context_length

    def next_logits(ids):
        window = np.asarray(ids[-context_length:])[None, :]  # (1, T)
        return model(window).data[0, -1]

    return next_logits


def _cached_logits(model):
    """Logits for the next token feeding only the tokens the KV cache has not seen yet.

    The cache holds positions 0..n-1 of the current window.  When the text
    outgrows the context the window slides, every position shifts, and the
    cache is rebuilt from the last ``context_length`` tokens.
    """
    context_length = model.config.context_length
    state = {"cache": None, "fed": 0}  # the cache, and how many of ids it has seen

    def next_logits(ids):
        cache = state["cache"]
        if cache is None or len(ids) > context_length:
            cache = state["cache"] = model.new_kv_cache(1)
            window = ids[-context_length:]
        else:
            window = ids[state["fed"]:]
        state["fed"] = len(ids)
        return model(np.asarray(window)[None, :], kv_cache=cache).data[0, -1]  # (1, t) -> (V,)

    return next_logits


def greedy_batch(model, prompts: list[list[int]], max_new_tokens: int, stop_token=None,
                 batch_size: int = 64, banned_tokens=()) -> list[list[int]]:
    """The greedy continuation of each prompt (up to and with ``stop_token``), written in batches of equal length.

    Each continuation equals ``generate_tokens(model, prompt, ..., temperature=0)``'s
    (the same argmax, up to the rounding of a batched product) while it fits
    in the context; a prompt longer than the context is cropped from the left.
    """
    if not max_new_tokens >= 0:
        raise SettingError(f"`max_new_tokens` must be at least 0, got {max_new_tokens}")
    context_length = model.config.context_length
    cropped = [[int(i) for i in prompt][-context_length:] for prompt in prompts]
    if not all(cropped):
        raise NpllmError("generate: every prompt must hold at least one token id")
    by_length = {}
    for index, prompt in enumerate(cropped):
        by_length.setdefault(len(prompt), []).append(index)
    written = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            for length, indices in by_length.items():
                steps = min(max_new_tokens, context_length - length + 1)  # the last token is never fed back
                for first in range(0, len(indices), batch_size):
                    rows = indices[first:first + batch_size]
                    chunk = [cropped[i] for i in rows]
                    for row, tokens in zip(rows, _greedy_rows(model, chunk, steps, stop_token, banned_tokens)):
                        written[row] = tokens
    finally:
        model.train(was_training)
    return written


def _greedy_rows(model, prompts, steps, stop_token, banned_tokens) -> list[list[int]]:
    """Greedy tokens for prompts of one length, fed together through one KV cache: (B, L) then (B, 1) per step."""
    cache = model.new_kv_cache(len(prompts))
    feed = np.asarray(prompts, dtype=np.int64)  # (B, L)
    tokens = np.empty((len(prompts), 0), dtype=np.int64)
    done = np.zeros(len(prompts), dtype=bool)
    for step in range(steps):
        logits = model(feed, kv_cache=cache).data[:, -1]  # (B, V) at each row's last position
        if not np.isfinite(logits).all():
            raise NpllmError("the model's logits hold NaN or an infinity: its weights are damaged or overflowed")
        feed = without(logits, banned_tokens).argmax(axis=1)[:, None]  # (B, 1)
        tokens = np.concatenate([tokens, feed], axis=1)
        done |= feed[:, 0] == stop_token
        if done.all():
            break
    return [_up_to_stop(row.tolist(), stop_token) for row in tokens]


def _up_to_stop(tokens: list[int], stop_token) -> list[int]:
    return tokens[: tokens.index(stop_token) + 1] if stop_token in tokens else tokens
