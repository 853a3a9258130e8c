"""Generation: turning a model's next-token distribution into text, one token at a time.

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

The KV cache.  Without one, step t re-runs the model over all t tokens, so
writing n tokens costs O(n^2) token-passes.  Every layer's keys and values of
earlier positions never change (attention is causal), so we keep them and
feed the model only the newest token: each step costs O(context).  The two
paths produce the same logits up to rounding, so the same tokens.

When the text outgrows the model's context, the prompt is cropped from the
left; with the cache, the cache is rebuilt on the last ``context_length``
tokens (positions are absolute, so stale keys cannot be reused).
"""

import warnings

import numpy as np

from npllm.tensor import no_grad


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
    """Raise ValueError for a setting that leaves no token to pick."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def softmax_1d(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - np.max(logits))
    return shifted / shifted.sum()


def sample_token(logits, rng: np.random.Generator, temperature=1.0, top_k=None, top_p=None) -> int:
    """Pick the next token id from one position's logits (1-D array of size V)."""
    check_sampling_settings(temperature, top_k, top_p)
    if temperature == 0:
        return int(np.argmax(logits))
    filtered = filter_logits(np.asarray(logits, dtype=np.float64) / temperature, top_k, top_p)
    probs = softmax_1d(filtered)
    return int(rng.choice(len(probs), p=probs))


def generate_tokens(model, prompt_ids, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None,
                    use_cache=True, stop_token=None):
    """Yield new token ids one at a time (so callers can stream them), up to ``max_new_tokens``.

    Stops early after yielding ``stop_token`` (e.g. <|endoftext|>).  A prompt
    longer than the model's context is cropped from the left, with a warning.
    Bad arguments raise ValueError at the call, before the first token.
    """
    check_sampling_settings(temperature, top_k, top_p)
    ids = [int(i) for i in prompt_ids]
    if not ids:
        raise ValueError("generate: the prompt must hold at least one token id")
    context_length = model.config.context_length
    if len(ids) > context_length:
        warnings.warn(f"generate: the prompt has {len(ids)} tokens, more than the context of {context_length};"
                      f" using its last {context_length}", stacklevel=2)
        ids = ids[-context_length:]
    return _generate(model, ids, max_new_tokens, temperature, top_k, top_p, np.random.default_rng(seed),
                     use_cache, stop_token)


def _generate(model, ids, max_new_tokens, temperature, top_k, top_p, rng, use_cache, stop_token):
    """The generator behind ``generate_tokens``, its arguments already checked."""
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            next_logits = _cached_logits(model) if use_cache else _uncached_logits(model)
            for _ in range(max_new_tokens):
                token = sample_token(next_logits(ids), rng, temperature, top_k, top_p)
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


def load_model(checkpoint_dir):
    """The GPT and tokenizer saved by ``npllm train`` in ``checkpoint_dir`` (a run folder)."""
    from npllm.checkpoint import CheckpointError, load_checkpoint
    from npllm.models import GPT, GPTConfig
    from npllm.tokenizer import BPETokenizer

    checkpoint = load_checkpoint(checkpoint_dir)
    if checkpoint.tokenizer_path is None or "model_config" not in checkpoint.train_state:
        raise CheckpointError(f"{checkpoint.folder}: not a checkpoint written by npllm train (no tokenizer or config)")
    model = GPT(GPTConfig(**checkpoint.train_state["model_config"]))
    try:
        model.load_state_dict(checkpoint.model_state)
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{checkpoint.folder}: weights do not fit the saved config ({error})") from error
    return model, BPETokenizer.load(checkpoint.tokenizer_path)
