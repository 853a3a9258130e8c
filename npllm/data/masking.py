"""Batches for masked-language-model pre-training (BERT): hide some tokens, keep the answers.

An encoder sees its whole input, so it cannot learn by predicting the next
token.  BERT's objective instead chooses 15% of the positions and asks the
model for the original tokens there.  Of the chosen positions

    80% are replaced by [MASK]           the model must reconstruct them from both sides;
    10% by a random ordinary token       so it cannot trust that an unmasked token is right;
    10% keep their token                 so it also learns a vector for tokens it does see,
                                         since [MASK] never occurs when the model is used.

The targets are the original ids at the chosen positions and
``IGNORE_INDEX`` (-100) everywhere else, so the loss counts the chosen
positions only.  Special tokens ([CLS], [SEP]) and padding are never chosen.
Each row gets exactly round(rate x its choosable positions) choices (at
least one), as BERT's own data generation does, so every batch counts the
same number of targets.

Training examples are windows of the token stream framed as
``[CLS] tokens [SEP]`` (RoBERTa's full-sentence packing: every row is full,
no padding).  ``MaskedWindows`` draws their starts *and* their masks from one
seeded generator, whose state is its ``state_dict``: a resumed run masks
exactly what an uninterrupted one would.  ``masked_evaluation_batches``
sweeps disjoint windows of the held-out tokens with masks drawn from a
generator seeded afresh each time, so every evaluation scores the same
masked positions.

Left out: whole-word masking, span masking, and next-sentence pairs.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from npllm.errors import SettingError

IGNORE_INDEX = -100  # a target that is not learned from (the same value as npllm.functional's)


@dataclass(frozen=True)
class MaskingRule:
    """Which positions to hide and how: ``rate`` of them, then [MASK] / a random token / unchanged."""

    mask_id: int                  # the [MASK] token
    random_ids: int               # a random replacement is drawn from the ordinary ids 0 .. random_ids - 1
    rate: float = 0.15            # share of the choosable positions that are predicted (BERT: 15%)
    mask_share: float = 0.8       # of those, replaced by [MASK]
    random_share: float = 0.1     # of those, replaced by a random token (the rest keep theirs)

    def __post_init__(self):
        if not 0 < self.rate <= 1:
            raise SettingError(f"`mask_rate` must be in (0, 1], got {self.rate}")
        if not (0 <= self.mask_share and 0 <= self.random_share and self.mask_share + self.random_share <= 1):
            raise SettingError(f"the [MASK] and random shares must be non-negative and sum to at most 1,"
                               f" got {self.mask_share} and {self.random_share}")
        if self.random_ids < 1:
            raise SettingError(f"a random replacement needs at least one ordinary id, got {self.random_ids}")


def mask_tokens(input_ids: np.ndarray, choosable: np.ndarray, rule: MaskingRule,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(masked input_ids, targets)`` for (B, T) ids; only ``choosable`` positions (B, T) may be chosen.

    Row b chooses max(1, round(rate x its choosable count)) positions (none if
    it has none), uniformly: the positions with the smallest random keys.
    """
    B, T = input_ids.shape
    keys = rng.random((B, T))
    keys[~choosable] = np.inf  # never among the smallest
    counts = choosable.sum(axis=1)
    choices = np.where(counts > 0, np.maximum(1, np.round(rule.rate * counts)), 0).astype(np.int64)  # (B,)
    ranks = keys.argsort(axis=1).argsort(axis=1)  # (B, T): 0 for the smallest key of each row
    chosen = ranks < choices[:, None]
    targets = np.where(chosen, input_ids, IGNORE_INDEX)
    how = rng.random((B, T))
    random_tokens = rng.integers(0, rule.random_ids, size=(B, T))
    masked = input_ids.copy()
    masked[chosen & (how < rule.mask_share)] = rule.mask_id
    randomised = chosen & (how >= rule.mask_share) & (how < rule.mask_share + rule.random_share)
    masked[randomised] = random_tokens[randomised]
    return masked, targets


def framed_windows(tokens: np.ndarray, starts: np.ndarray, length: int, cls_id: int, sep_id: int) -> np.ndarray:
    """``[CLS] tokens[s : s + length] [SEP]`` for each start s: (B, length + 2) int64."""
    windows = np.asarray(tokens[starts[:, None] + np.arange(length)], dtype=np.int64)  # (B, length)
    B = len(starts)
    return np.concatenate([np.full((B, 1), cls_id), windows, np.full((B, 1), sep_id)], axis=1)


def _masked_batch(ids: np.ndarray, rule: MaskingRule, rng: np.random.Generator) -> dict:
    choosable = np.ones(ids.shape, dtype=bool)
    choosable[:, [0, -1]] = False  # [CLS] and [SEP]
    masked, targets = mask_tokens(ids, choosable, rule, rng)
    return {"input_ids": masked, "targets": targets}


def _window_length(context_length: int, tokens: np.ndarray, what: str) -> int:
    """Tokens per window: the context less [CLS] and [SEP]; the stream must hold one window."""
    length = context_length - 2
    if length < 1:
        raise SettingError(f"`context_length` must be at least 3 ([CLS], a token, [SEP]), got {context_length}")
    if len(tokens) < length:
        raise SettingError(f"the {what} tokens ({len(tokens):,}) are too few for one window of"
                           f" `context_length` - 2 = {length}; use more text or a shorter context")
    return length


class SeededBatches:
    """Batches drawn from one seeded generator, whose exact state is the ``state_dict``: a resumed run draws
    exactly what an uninterrupted one would."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def state_dict(self) -> dict:
        return self.rng.bit_generator.state

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state


class MaskedWindows(SeededBatches):
    """Training batches: ``B`` framed windows at random starts, masked; starts and masks from one seeded generator."""

    def __init__(self, tokens: np.ndarray, context_length: int, batch_size: int, seed: int, rule: MaskingRule,
                 cls_id: int, sep_id: int):
        super().__init__(seed)
        self.length = _window_length(context_length, tokens, "training")
        self.tokens, self.batch_size, self.rule = tokens, batch_size, rule
        self.cls_id, self.sep_id = cls_id, sep_id

    def next_batch(self) -> dict:
        """``input_ids`` (masked) and ``targets`` (IGNORE_INDEX where not chosen), each (B, T) int64."""
        starts = self.rng.integers(0, len(self.tokens) - self.length, size=self.batch_size, endpoint=True)
        ids = framed_windows(self.tokens, starts, self.length, self.cls_id, self.sep_id)
        return _masked_batch(ids, self.rule, self.rng)


def masked_evaluation_batches(tokens: np.ndarray, context_length: int, batch_size: int, max_windows: int,
                              rule: MaskingRule, cls_id: int, sep_id: int, seed: int = 0) -> Iterator[dict]:
    """Disjoint framed windows from the start of ``tokens``, masked the same way every time (a fresh ``seed``)."""
    length = _window_length(context_length, tokens, "validation")
    n_windows = min(max_windows, len(tokens) // length)
    rng = np.random.default_rng(seed)
    for first in range(0, n_windows, batch_size):
        starts = np.arange(first, min(first + batch_size, n_windows)) * length
        yield _masked_batch(framed_windows(tokens, starts, length, cls_id, sep_id), rule, rng)
