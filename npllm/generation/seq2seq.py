"""Encoder–decoder decoding: a BART writes a target for each source, greedily, by sampling, or by beam search.

The encoder reads each source once.  The decoder then writes one token at a
time behind ``decoder_start_token_id``: at each step it gives, for every
sequence being written, log-probabilities for the next token; a strategy
picks tokens; a sequence ends at ``</s>`` (or at ``max_new_tokens``).

With the cache (the default) a step feeds the decoder only the newest token
of each sequence: its self-attention's keys and values of earlier positions
wait in a KV cache, and the cross-attention's keys and values of the
encoder's output are computed once per source before the first step
(``BARTForConditionalGeneration.new_decoder_cache``).  Without it, each step
runs the decoder over every token so far, cross-attention included.  The
two give the same log-probabilities up to rounding, hence the same tokens.

A batch of sources decodes as one batch: every step is one decoder call on
all of their sequences (sources padded, with their mask).

The strategies:

- **greedy**: the most probable token (``temperature=0``, the default);
- **sampling**: a draw from softmax(log p / temperature), optionally within
  the top-k tokens or the top-p nucleus (``sampling.choose_token``);
- **beam search** (``num_beams`` > 1, or ``beam_search``): keep the
  ``num_beams`` best partial sequences per source by total log-probability;
  each step extends every one by every token and keeps the best
  ``2 * num_beams`` extensions: those ending in ``</s>`` among the first
  ``num_beams`` become finished hypotheses, the best ``num_beams`` others
  go on.  A finished hypothesis of n generated tokens (its ``</s>``
  counted, the start token not) with total log-probability L is scored

      score = L / n ** length_penalty

  so ``length_penalty`` > 0 favours longer outputs (0: no normalisation;
  Hugging Face's definition, and its default of 1.0).  Each source keeps
  its ``num_beams`` best finished hypotheses.  ``early_stopping=True``
  stops a source once it has ``num_beams`` of them; ``False`` goes on while
  the best running sequence, scored at its current length, could still
  beat the worst kept one; ``"never"`` estimates that best at
  ``max_new_tokens`` when ``length_penalty`` > 0.  At ``max_new_tokens``
  every running sequence is finished as it stands.  This is
  ``transformers``' beam search, step for step (its tests compare them).

Rules applied to every strategy's log-probabilities before it picks:
``no_repeat_ngram_size`` n forbids a token that would repeat an n-gram the
sequence (its start token included) already holds; ``min_new_tokens`` holds
``</s>`` back until that many tokens are written; the config's
``forced_bos_token_id`` is the first token written, and its
``forced_eos_token_id`` the last when ``max_new_tokens`` is reached.

Outputs are the generated ids after the start token, ``</s>`` included when
written.  ``write_targets`` is the text-in, text-out entry (the command
line's ``npllm generate --input``): any loaded model and BART tokenizer.
Left out: beam sampling, diverse (group) beam search, constraints.
"""

import warnings
from dataclasses import dataclass

import numpy as np

import npllm.functional as F
from npllm.errors import SettingError
from npllm.generation.sampling import check_sampling_settings, choose_token, require_finite
from npllm.tensor import as_array, no_grad
from npllm.tokenizer import BARTTokenizer, BPETokenizer

EARLY_STOPPING = (True, False, "never")
FILLED = -1.0e9  # the score of an empty slot or a forbidden continuation (finite, so sums stay ordered)


@dataclass
class Hypothesis:
    """One finished beam: its generated ids (after the start token) and its length-penalised score."""

    tokens: list[int]
    score: float


@dataclass
class DecodingRules:
    """What every strategy applies to the log-probabilities before it picks a token (see the module docstring)."""

    eos_token_id: int
    max_new_tokens: int
    min_new_tokens: int = 0
    no_repeat_ngram_size: int = 0
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | None = None

    def apply(self, log_probs: np.ndarray, sequences: np.ndarray) -> np.ndarray:
        """``log_probs`` (N, V) after the rules, for ``sequences`` (N, t) written so far (start token first)."""
        written = sequences.shape[1] - 1
        if written < self.min_new_tokens:
            log_probs[:, self.eos_token_id] = -np.inf
        if self.no_repeat_ngram_size:
            for row, banned in enumerate(repeated_ngram_ends(sequences, self.no_repeat_ngram_size)):
                log_probs[row, banned] = -np.inf
        forced = None
        if written == 0 and self.forced_bos_token_id is not None:
            forced = self.forced_bos_token_id
        if written == self.max_new_tokens - 1 and self.forced_eos_token_id is not None:
            forced = self.forced_eos_token_id
        if forced is not None:
            log_probs[:] = -np.inf
            log_probs[:, forced] = 0.0
        return log_probs


def repeated_ngram_ends(sequences: np.ndarray, n: int) -> list[list[int]]:
    """For each row, the tokens that would end an n-gram the row already holds (after its last n - 1 tokens)."""
    banned = []
    for row in sequences.tolist():
        if len(row) < n:
            banned.append([])
            continue
        prefix = tuple(row[len(row) - n + 1:])
        banned.append([row[i + n - 1] for i in range(len(row) - n + 1) if tuple(row[i:i + n - 1]) == prefix])
    return banned


class DecoderSteps:
    """Next-token log-probabilities (N, V) for N growing sequences, each reading the source of its row.

    Rows b * rows_per_source ... (b + 1) * rows_per_source - 1 read source b.
    With ``use_cache`` each call feeds only the tokens the cache has not seen;
    ``reorder(rows)`` makes row i continue row ``rows[i]`` (of the same source).
    """

    def __init__(self, model, memory, attention_mask, rows_per_source, capacity, use_cache):
        self.model, self.use_cache = model, use_cache
        if use_cache:
            self.cache = model.new_decoder_cache(memory, attention_mask, capacity, rows_per_source)
        else:
            self.memory = np.repeat(as_array(memory), rows_per_source, axis=0)  # (N, S, C)
            self.mask = None if attention_mask is None else np.repeat(attention_mask, rows_per_source, axis=0)

    def log_probs(self, sequences: np.ndarray) -> np.ndarray:
        if self.use_cache:
            logits = self.model.decode(sequences[:, self.cache.length:], cache=self.cache)
        else:
            logits = self.model.decode(sequences, self.memory, self.mask)
        last = logits.data[:, -1].astype(np.float64)  # (N, V)
        require_finite(last)
        return F.log_softmax(last, axis=-1).data

    def reorder(self, rows):
        if self.use_cache:
            self.cache.reorder(rows)


def generate(model, input_ids, attention_mask=None, max_new_tokens=20, num_beams=1, temperature=0.0, top_k=None,
             top_p=None, seed=None, length_penalty=1.0, early_stopping=True, no_repeat_ngram_size=0,
             min_new_tokens=0, use_cache=True) -> list[list[int]]:
    """Each source's output ids: beam search's best hypothesis with ``num_beams`` > 1, else greedy or sampled."""
    if num_beams != 1:
        _without_sampling(dict(temperature=temperature, top_k=top_k, top_p=top_p))
        best = beam_search(model, input_ids, attention_mask, max_new_tokens, num_beams, length_penalty,
                           early_stopping, no_repeat_ngram_size, min_new_tokens, use_cache=use_cache)
        return [hypotheses[0].tokens for hypotheses in best]
    return sample(model, input_ids, attention_mask, max_new_tokens, temperature, top_k, top_p, seed,
                  no_repeat_ngram_size, min_new_tokens, use_cache)


def sample(model, input_ids, attention_mask=None, max_new_tokens=20, temperature=0.0, top_k=None, top_p=None,
           seed=None, no_repeat_ngram_size=0, min_new_tokens=0, use_cache=True) -> list[list[int]]:
    """Each source's output ids, one token at a time: the most probable (``temperature`` 0) or a draw."""
    check_sampling_settings(temperature, top_k, top_p)
    if seed is not None and not seed >= 0:
        raise SettingError(f"`seed` must be at least 0, got {seed}")
    rules = _rules(model, max_new_tokens, min_new_tokens, no_repeat_ngram_size)
    rng = np.random.default_rng(seed)
    with _decoding(model):
        steps, B = _steps(model, input_ids, attention_mask, 1, max_new_tokens, use_cache)
        config = model.config
        sequences = np.full((B, max_new_tokens + 1), config.pad_token_id, dtype=np.int64)
        sequences[:, 0] = config.decoder_start_token_id
        lengths = np.full(B, max_new_tokens + 1)  # where each row ends (after its </s>)
        for t in range(1, max_new_tokens + 1):
            log_probs = rules.apply(steps.log_probs(sequences[:, :t]), sequences[:, :t])
            running = lengths > t
            for row in np.flatnonzero(running):
                sequences[row, t] = choose_token(log_probs[row], rng, temperature, top_k, top_p)
            ended = running & (sequences[:, t] == rules.eos_token_id)
            lengths[ended] = t + 1
            if not (lengths > t + 1).any():
                break
    return [sequences[row, 1:lengths[row]].tolist() for row in range(B)]


def beam_search(model, input_ids, attention_mask=None, max_new_tokens=20, num_beams=4, length_penalty=1.0,
                early_stopping=True, no_repeat_ngram_size=0, min_new_tokens=0, num_return_sequences=1,
                use_cache=True) -> list[list[Hypothesis]]:
    """Each source's ``num_return_sequences`` best finished hypotheses, best first (see the module docstring)."""
    _check_beam_settings(num_beams, length_penalty, early_stopping, num_return_sequences)
    rules = _rules(model, max_new_tokens, min_new_tokens, no_repeat_ngram_size)
    with _decoding(model):
        steps, B = _steps(model, input_ids, attention_mask, num_beams, max_new_tokens, use_cache)
        search = _BeamSearch(B, num_beams, max_new_tokens + 1, model.config, length_penalty, early_stopping)
        while True:
            t = search.length
            flat = search.running.reshape(B * num_beams, -1)[:, :t]  # (B * beams, t)
            log_probs = rules.apply(steps.log_probs(flat), flat)
            rows = search.step(log_probs.reshape(B, num_beams, -1), rules.eos_token_id)
            if search.done:
                break
            steps.reorder(rows)
    return search.best(num_return_sequences)


class _BeamSearch:
    """The beams of B sources: the running ones and the finished ones, (B, beams, L) ids with their scores."""

    def __init__(self, B, beams, max_length, config, length_penalty, early_stopping):
        self.beams, self.max_length = beams, max_length
        self.length_penalty, self.early_stopping = length_penalty, early_stopping
        self.running = np.full((B, beams, max_length), config.pad_token_id, dtype=np.int64)
        self.running[:, :, 0] = config.decoder_start_token_id
        self.running_scores = np.zeros((B, beams))
        self.running_scores[:, 1:] = FILLED  # the first step extends one beam only: the others are its copies
        self.finished = self.running.copy()
        self.finished_scores = np.full((B, beams), FILLED)
        self.finished_lengths = np.zeros((B, beams), dtype=np.int64)
        self.is_finished = np.zeros((B, beams), dtype=bool)
        self.may_improve = np.ones(B, dtype=bool)  # could a running beam still beat the worst finished one?
        self.length, self.done = 1, False

    def step(self, log_probs, eos):
        """Extend every beam by every token (``log_probs`` (B, beams, V)); returns the rows the new beams continue."""
        B, beams, V = log_probs.shape
        t = self.length
        totals = (log_probs + self.running_scores[:, :, None]).reshape(B, beams * V)
        keep = 2 * beams  # enough extensions that beams of them go on even if the first beams all end
        top = np.argsort(-totals, axis=1, kind="stable")[:, :keep]  # (B, 2 beams), best first
        top_scores = np.take_along_axis(totals, top, axis=1)
        source_beam, tokens = top // V, top % V
        candidates = np.take_along_axis(self.running, source_beam[:, :, None], axis=1)  # (B, 2 beams, L)
        candidates[:, :, t] = tokens
        ends = (tokens == eos) | (t + 1 >= self.max_length)
        # the running beams: the best extensions that did not end
        go_on = np.argsort(-(top_scores + ends * FILLED), axis=1, kind="stable")[:, :beams]
        self.running = np.take_along_axis(candidates, go_on[:, :, None], axis=1)
        self.running_scores = np.take_along_axis(top_scores + ends * FILLED, go_on, axis=1)
        self._finish(candidates, top_scores, ends)
        self.length = t + 1
        self._check_done(ends)
        rows = np.take_along_axis(source_beam, go_on, axis=1) + np.arange(B)[:, None] * beams  # (B, beams)
        return rows.reshape(-1)

    def _finish(self, candidates, top_scores, ends):
        """Keep each source's best ``beams`` finished hypotheses among the old ones and those that just ended."""
        B, beams = self.finished_scores.shape
        t = self.length
        just_ended = ends & (np.arange(2 * beams) < beams)[None, :]  # only the first beams may finish
        scores = top_scores / float(t) ** self.length_penalty  # t generated tokens, the new one counted
        full = self.is_finished.all(axis=1) & (self.early_stopping is True)
        scores = scores + (full | ~self.may_improve)[:, None] * FILLED + ~just_ended * FILLED
        merged_scores = np.concatenate([self.finished_scores, scores], axis=1)
        best = np.argsort(-merged_scores, axis=1, kind="stable")[:, :beams]
        self.finished = np.take_along_axis(np.concatenate([self.finished, candidates], axis=1), best[:, :, None], 1)
        self.finished_scores = np.take_along_axis(merged_scores, best, axis=1)
        lengths = np.concatenate([self.finished_lengths, np.full((B, 2 * beams), t + 1)], axis=1)
        self.finished_lengths = np.take_along_axis(lengths, best, axis=1)
        self.is_finished = np.take_along_axis(np.concatenate([self.is_finished, just_ended], axis=1), best, axis=1)

    def _check_done(self, ends):
        generated = self.length - 1
        if self.early_stopping == "never" and self.length_penalty > 0:
            generated = self.max_length - 1
        best_running = self.running_scores[:, 0] / float(generated) ** self.length_penalty
        worst_kept = np.where(self.is_finished, self.finished_scores.min(axis=1, keepdims=True), FILLED)
        self.may_improve &= (best_running[:, None] > worst_kept).any(axis=1)
        all_finished = self.is_finished.all() and self.early_stopping is True
        self.done = not self.may_improve.any() or all_finished or ends.all()

    def best(self, count) -> list[list[Hypothesis]]:
        return [[Hypothesis(self.finished[b, k, 1:self.finished_lengths[b, k]].tolist(),
                            float(self.finished_scores[b, k])) for k in range(count)]
                for b in range(self.finished.shape[0])]


def _check_beam_settings(num_beams, length_penalty, early_stopping, num_return_sequences):
    if not isinstance(num_beams, (int, np.integer)) or num_beams < 1:
        raise SettingError(f"`num_beams` must be at least 1, got {num_beams}")
    if not np.isfinite(length_penalty):
        raise SettingError(f"`length_penalty` must be a finite number, got {length_penalty}")
    if not any(early_stopping is choice for choice in EARLY_STOPPING[:2]) and early_stopping != "never":
        raise SettingError(f"`early_stopping` must be True, False or 'never', got {early_stopping!r}")
    if not 1 <= num_return_sequences <= num_beams:
        raise SettingError(f"`num_return_sequences` must be between 1 and `num_beams` ({num_beams}),"
                           f" got {num_return_sequences}")


def _rules(model, max_new_tokens, min_new_tokens, no_repeat_ngram_size) -> DecodingRules:
    """The rules of one decoding, its settings checked before any work."""
    config = model.config
    limit = config.max_position_embeddings - 1  # the start token takes the first position
    if not 1 <= max_new_tokens <= limit:
        raise SettingError(f"`max_new_tokens` must be between 1 and {limit} (the position table's"
                           f" {config.max_position_embeddings}, less the start token), got {max_new_tokens}")
    if not 0 <= min_new_tokens <= max_new_tokens:
        raise SettingError(f"`min_new_tokens` must be between 0 and `max_new_tokens` ({max_new_tokens}),"
                           f" got {min_new_tokens}")
    if no_repeat_ngram_size < 0:
        raise SettingError(f"`no_repeat_ngram_size` must be at least 0 (0: no rule), got {no_repeat_ngram_size}")
    return DecodingRules(config.eos_token_id, max_new_tokens, min_new_tokens, no_repeat_ngram_size,
                         config.forced_bos_token_id, config.forced_eos_token_id)


def _steps(model, input_ids, attention_mask, rows_per_source, max_new_tokens, use_cache):
    """The encoder's output for the sources, once, and the decoder's steps over it: (DecoderSteps, B)."""
    memory = model.encode(input_ids, attention_mask)
    mask = None if attention_mask is None else as_array(attention_mask).astype(bool)
    steps = DecoderSteps(model, memory, mask, rows_per_source, max_new_tokens + 1, use_cache)
    return steps, memory.shape[0]


class _decoding:
    """Eval mode and no gradients around a decoding; the model's mode restored after."""

    def __init__(self, model):
        self.model, self.no_grad = model, no_grad()

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()
        self.no_grad.__enter__()

    def __exit__(self, *exc):
        self.no_grad.__exit__(*exc)
        self.model.train(self.was_training)


def pad_sources(sources: list[list[int]], pad_token_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Id lists of different lengths as (B, S) ids padded on the right and their (B, S) mask (1 = a real token)."""
    if not sources or not all(sources):
        raise SettingError("every source must hold at least one token")
    S = max(map(len, sources))
    ids = np.full((len(sources), S), pad_token_id, dtype=np.int64)
    mask = np.zeros((len(sources), S), dtype=np.int64)
    for row, source in enumerate(sources):
        ids[row, :len(source)], mask[row, :len(source)] = source, 1
    return ids, mask


def write_targets(model, tokenizer, texts: list[str], num_beams=1, num_return_sequences=1,
                  **settings) -> list[list[tuple]]:
    """For each source text, its outputs as (text, score) pairs, best first (score None when not beam search).

    ``tokenizer``: a BARTTokenizer, or a BPETokenizer with BART's five special
    tokens.  ``settings`` are ``generate``'s; a source longer than the
    position table keeps its beginning, with a warning.
    """
    tokenizer = as_bart_tokenizer(tokenizer)
    sources = [source_ids(tokenizer, text, model.config.max_position_embeddings) for text in texts]
    ids, mask = pad_sources(sources, model.config.pad_token_id)
    if num_beams == 1 and num_return_sequences == 1:
        return [[(tokenizer.decode(tokens), None)] for tokens in generate(model, ids, mask, **settings)]
    _without_sampling(settings)
    best = beam_search(model, ids, mask, num_beams=num_beams, num_return_sequences=num_return_sequences, **settings)
    return [[(tokenizer.decode(h.tokens), h.score) for h in hypotheses] for hypotheses in best]


def _without_sampling(settings: dict):
    """Take the sampling settings out of ``settings``; refuse any that would sample (beam search does not)."""
    sampling = {name: settings.pop(name) for name in ("temperature", "top_k", "top_p", "seed") if name in settings}
    if any(sampling.get(name) not in (None, 0) for name in ("temperature", "top_k", "top_p")):
        raise SettingError("beam search keeps the most probable beams and samples nothing: give `num_beams` 1"
                           " with `temperature`, `top_k` or `top_p`")


def as_bart_tokenizer(tokenizer) -> BARTTokenizer:
    if isinstance(tokenizer, BPETokenizer):
        try:
            return BARTTokenizer.from_bpe(tokenizer)
        except ValueError as error:
            raise SettingError(f"a seq2seq model's tokenizer needs BART's special tokens: {error}") from error
    return tokenizer


def source_ids(tokenizer: BARTTokenizer, text: str, limit: int) -> list[int]:
    """``<s> text </s>`` as ids, cut to ``limit`` positions (its ``</s>`` kept) with a warning."""
    if not text.strip():
        raise SettingError("the source text (`input`) is empty")
    ids = tokenizer.encode(text)
    if len(ids) > limit:
        warnings.warn(f"the source has {len(ids)} tokens, more than the position table's {limit}:"
                      f" using its first {limit - 1} and </s>", stacklevel=2)
        ids = ids[:limit - 1] + ids[-1:]
    return ids


__all__ = ["generate", "write_targets", "sample", "beam_search", "Hypothesis", "DecodingRules", "DecoderSteps", "pad_sources"]
