"""Batches for denoising pre-training (BART): corrupt a text, ask for the original back.

An encoder–decoder learns to read with its encoder and to write with its
decoder when the encoder is given a damaged text and the decoder must write
the text as it was.  BART's best damage is **text infilling**:

    spans of the window, with lengths drawn from Poisson(lambda = 3), are chosen
    until they cover ``mask_ratio`` (30%) of its tokens; each span becomes ONE
    <mask> token, so the model must also work out how many tokens are missing;
    a span of length 0 inserts a <mask> where nothing is missing.

    original    a  b  c  d  e  f  g  h  i  j
    spans            [c  d  e]     []    [i]         lengths 3, 0, 1
    corrupted   a  b  <m>  f  g  <m>  h  <m>  j

**Sentence permutation**, optional, shuffles the window's sentences before
infilling (the decoder must put them back in order).  In source code and in
the wrapped prose of the docs a line is the natural sentence, so a sentence
here ends after each token that ends a line (``sentence_end_ids``).

How spans are placed, exactly: the span lengths are drawn until they reach
round(ratio x n) tokens (the last one cut to land on it); the n - S tokens
that stay are written in order, and each span goes into a different gap
between them (or before the first, or after the last), the gaps chosen
uniformly.  Zero-length spans are dropped once there would be more spans
than masked tokens, so a corrupted window is never longer than the original.

Examples are windows of the token stream; the source is the corrupted window
and the target the original, framed and padded by ``pairs.pair_batch``
(``<s> source </s>`` into the encoder; ``<s> target`` into the decoder,
predicting ``target </s>``).  ``DenoisingWindows`` draws the windows' starts
and their corruption from one seeded generator, its state checkpointed;
``denoising_evaluation_batches`` corrupts the same held-out windows the same
way every time.  Each batch also carries ``kept`` (B, T): 1 where the target
token survived in the source (the closing </s> does; with permuted sentences
no token counts as kept), which the recipe's copy baseline and
``masked accuracy`` read (it is not an input of the model).

Left out: BART's token masking, deletion, rotation (it found infilling best).
"""

from dataclasses import dataclass

import numpy as np

from npllm.data.masking import disjoint_window_starts, window_length, windows_at
from npllm.data.pairs import Framing, pair_batch
from npllm.errors import SettingError

FRAME = ("<s>", "</s>")  # around every source


@dataclass(frozen=True)
class InfillingRule:
    """How a window is damaged: the <mask> id, the share masked, the spans' mean length, and sentence shuffling."""

    mask_id: int
    mask_ratio: float = 0.3            # share of the tokens inside masked spans (BART: 30%)
    poisson_lambda: float = 3.0        # mean span length (BART: 3)
    permute_sentences: bool = False    # shuffle the lines before infilling
    sentence_end_ids: tuple = ()       # tokens that end a sentence (with permute_sentences)

    def __post_init__(self):
        if not 0 < self.mask_ratio < 1:
            raise SettingError(f"`mask_ratio` must be in (0, 1), got {self.mask_ratio}")
        if not 0 < self.poisson_lambda < 1e3:
            raise SettingError(f"`poisson_lambda` must be a positive number, got {self.poisson_lambda}")


def span_lengths(n_masked: int, n_tokens: int, poisson_lambda: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson span lengths summing to ``n_masked``; no more spans than masked tokens nor gaps to put them in."""
    lengths = []
    total = 0
    while total < n_masked:
        draws = rng.poisson(poisson_lambda, size=max(4, int(2 * (n_masked - total) / poisson_lambda) + 1))
        for length in draws:
            lengths.append(int(min(length, n_masked - total)))
            total += lengths[-1]
            if total == n_masked:
                break
    lengths = np.array(lengths, dtype=np.int64)
    zeros = np.flatnonzero(lengths == 0)
    too_many = len(lengths) - min(n_masked, n_tokens - n_masked + 1)
    if too_many > 0:  # drop the last zero-length spans first
        lengths = np.delete(lengths, zeros[len(zeros) - min(too_many, len(zeros)):])
    return lengths


def infill(ids: np.ndarray, rule: InfillingRule, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(corrupted ids, kept)`` for a 1-D window: ``kept`` (n,) is True where the original token was not masked."""
    n = len(ids)
    n_masked = round(rule.mask_ratio * n)
    if n_masked == 0:
        return ids.copy(), np.ones(n, dtype=bool)
    lengths = span_lengths(n_masked, n, rule.poisson_lambda, rng)
    n_kept = n - int(lengths.sum())
    gaps = np.sort(rng.choice(n_kept + 1, size=len(lengths), replace=False))  # gap g: before kept token g
    span_in_gap = np.zeros(n_kept + 1, dtype=np.int64)
    span_in_gap[gaps] = rng.permutation(lengths)
    has_span = np.zeros(n_kept + 1, dtype=np.int64)
    has_span[gaps] = 1
    kept = np.zeros(n, dtype=bool)
    kept[np.arange(n_kept) + np.cumsum(span_in_gap)[:n_kept]] = True  # kept token g follows the spans of gaps 0..g
    corrupted = np.full(n_kept + len(lengths), rule.mask_id, dtype=np.int64)
    corrupted[np.arange(n_kept) + np.cumsum(has_span)[:n_kept]] = ids[kept]  # ... and one <mask> per span before it
    return corrupted, kept


def permute_sentences(ids: np.ndarray, sentence_end_ids, rng: np.random.Generator) -> np.ndarray:
    """The window's sentences (each ending after a sentence-end token; the last may be cut) in a random order."""
    ends = np.flatnonzero(np.isin(ids, sentence_end_ids)) + 1
    sentences = np.split(ids, ends[ends < len(ids)])
    return np.concatenate([sentences[i] for i in rng.permutation(len(sentences))])


def denoising_batch(windows: np.ndarray, rule: InfillingRule, framing: Framing, rng: np.random.Generator) -> dict:
    """A batch of (B, n) original windows: corrupted sources, original targets (``pair_batch``), and ``kept``."""
    sources, kept = [], []
    for window in windows:
        shuffled = permute_sentences(window, rule.sentence_end_ids, rng) if rule.permute_sentences else window
        corrupted, survived = infill(shuffled, rule, rng)
        sources.append(corrupted.tolist())
        kept.append(survived if not rule.permute_sentences else np.zeros(len(window), dtype=bool))
    batch = pair_batch(sources, [window.tolist() for window in windows], framing)
    target_kept = np.ones(batch["targets"].shape, dtype=np.int64)  # (B, n + 1): the closing </s> is copied too
    target_kept[:, : windows.shape[1]] = kept
    return {**batch, "kept": target_kept}


class DenoisingWindows:
    """Training batches: ``B`` windows at random starts, corrupted; starts and damage from one seeded generator."""

    def __init__(self, tokens: np.ndarray, context_length: int, batch_size: int, seed: int, rule: InfillingRule,
                 framing: Framing):
        self.length = window_length(context_length, tokens, "training", FRAME, min_tokens=2)
        self.tokens, self.batch_size, self.rule, self.framing = tokens, batch_size, rule, framing
        self.rng = np.random.default_rng(seed)

    def next_batch(self) -> dict:
        starts = self.rng.integers(0, len(self.tokens) - self.length, size=self.batch_size, endpoint=True)
        return denoising_batch(windows_at(self.tokens, starts, self.length), self.rule, self.framing, self.rng)

    def state_dict(self) -> dict:
        return self.rng.bit_generator.state

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def denoising_evaluation_batches(tokens: np.ndarray, context_length: int, batch_size: int, max_windows: int,
                                 rule: InfillingRule, framing: Framing, seed: int = 0):
    """Disjoint windows from the start of ``tokens``, corrupted the same way every time (a fresh ``seed``)."""
    length = window_length(context_length, tokens, "validation", FRAME, min_tokens=2)
    rng = np.random.default_rng(seed)
    for starts in disjoint_window_starts(len(tokens), length, batch_size, max_windows):
        yield denoising_batch(windows_at(tokens, starts, length), rule, framing, rng)
