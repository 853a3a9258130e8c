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

**Document boundaries.**  Windows cross the end-of-text ids of a sharded
corpus by default.  Given ``boundary_id`` (and ``pad_id``), they respect them:
starts are drawn where a window lies inside one document (``DocumentStarts``),
and a window that still meets a boundary (a document shorter than the window)
keeps its text up to that boundary, which is BERT's [SEP]; the rest, and the
closing [SEP], become [PAD] with ``attention_mask`` 0 and are never chosen.  So an
encoder, which sees both ways, never reads two documents as one.

Left out: whole-word masking, span masking, and next-sentence pairs.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from npllm.data.batches import IGNORE_INDEX, DocumentStarts
from npllm.errors import SettingError


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


def windows_at(tokens: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """``tokens[s : s + length]`` for each start s: (B, length) int64, in one gather."""
    return np.asarray(tokens[starts[:, None] + np.arange(length)], dtype=np.int64)


def disjoint_window_starts(n_tokens: int, length: int, batch_size: int, max_windows: int) -> Iterator[np.ndarray]:
    """The starts of the first ``max_windows`` disjoint windows of ``length`` tokens, ``batch_size`` at a time."""
    n_windows = min(max_windows, n_tokens // length)
    for first in range(0, n_windows, batch_size):
        yield np.arange(first, min(first + batch_size, n_windows)) * length


def framed_windows(tokens: np.ndarray, starts: np.ndarray, length: int, cls_id: int, sep_id: int) -> np.ndarray:
    """``[CLS] tokens[s : s + length] [SEP]`` for each start s: (B, length + 2) int64."""
    windows = windows_at(tokens, starts, length)  # (B, length)
    B = len(starts)
    return np.concatenate([np.full((B, 1), cls_id), windows, np.full((B, 1), sep_id)], axis=1)


@dataclass(frozen=True)
class Boundaries:
    """How windows respect documents: the id that ends one, and the [PAD] that fills a window after it."""

    boundary_id: int
    pad_id: int

    def padded(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(ids, attention_mask): each framed window (B, T) cut after its first boundary, the rest [PAD]."""
        boundaries = np.zeros(ids.shape, dtype=np.int64)
        boundaries[:, 1:-1] = ids[:, 1:-1] == self.boundary_id
        after = np.cumsum(boundaries, axis=1) - boundaries > 0  # past the first boundary (closing [SEP] included)
        return np.where(after, self.pad_id, ids), (~after).astype(np.int64)


def _masked_batch(ids: np.ndarray, rule: MaskingRule, rng: np.random.Generator,
                  boundaries: Boundaries | None = None) -> dict:
    choosable = np.ones(ids.shape, dtype=bool)
    choosable[:, [0, -1]] = False  # [CLS] and [SEP]
    batch = {}
    if boundaries is not None:
        ids, batch["attention_mask"] = boundaries.padded(ids)
        choosable &= (batch["attention_mask"] == 1) & (ids != boundaries.boundary_id)
    masked, targets = mask_tokens(ids, choosable, rule, rng)
    return {"input_ids": masked, "targets": targets, **batch}


def window_length(context_length: int, tokens: np.ndarray, what: str, frame=("[CLS]", "[SEP]"),
                  min_tokens: int = 1) -> int:
    """Tokens per window: the context less the two ``frame`` tokens; the stream must hold one window."""
    length = context_length - 2
    if length < min_tokens:
        some = "a token" if min_tokens == 1 else f"{min_tokens} tokens"
        raise SettingError(f"`context_length` must be at least {min_tokens + 2} ({frame[0]}, {some}, {frame[1]}),"
                           f" got {context_length}")
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
                 cls_id: int, sep_id: int, boundaries: Boundaries | None = None):
        super().__init__(seed)
        self.length = window_length(context_length, tokens, "training")
        self.tokens, self.batch_size, self.rule = tokens, batch_size, rule
        self.cls_id, self.sep_id = cls_id, sep_id
        self.boundaries = boundaries
        self.documents = None if boundaries is None else DocumentStarts(tokens, boundaries.boundary_id, self.length)

    def next_batch(self) -> dict:
        """``input_ids`` (masked) and ``targets`` (IGNORE_INDEX where not chosen), each (B, T) int64."""
        if self.documents is None:
            starts = self.rng.integers(0, len(self.tokens) - self.length, size=self.batch_size, endpoint=True)
        else:
            starts = self.documents.draw(self.rng, self.batch_size)
        ids = framed_windows(self.tokens, starts, self.length, self.cls_id, self.sep_id)
        return _masked_batch(ids, self.rule, self.rng, self.boundaries)


def masked_evaluation_batches(tokens: np.ndarray, context_length: int, batch_size: int, max_windows: int,
                              rule: MaskingRule, cls_id: int, sep_id: int, seed: int = 0,
                              boundaries: Boundaries | None = None) -> Iterator[dict]:
    """Disjoint framed windows from the start of ``tokens``, masked the same way every time (a fresh ``seed``).

    With ``boundaries``, each window is cut after its first boundary, as in training.
    """
    length = window_length(context_length, tokens, "validation")
    rng = np.random.default_rng(seed)
    for starts in disjoint_window_starts(len(tokens), length, batch_size, max_windows):
        yield _masked_batch(framed_windows(tokens, starts, length, cls_id, sep_id), rule, rng, boundaries)
