"""Sentence-pair batches for next-sentence prediction (BERT's second pre-training objective).

BERT read pairs of texts and learned, besides the masked tokens, whether the
second text was the one that followed the first.  Each row here is

    [CLS] segment A [SEP] segment B [SEP]          token types 0 ... 0 0 | 1 ... 1 1

filling the whole window of T tokens (A and B share T - 3, split at a
random point: each gets at least one token), so no row is padded and every
row has the same number of maskable positions.  Half the rows (drawn per
row) take as B the tokens that follow A in the corpus, label 0 ("B follows
A", Hugging Face's order); the other half take B from a random place of the
corpus away from A, label 1.  BERT drew that random B from another
document; a token stream keeps no document boundaries, so "away" stands in
for it here: B starts at least one window before A's start or after A's
window ends, so it never overlaps or continues A's neighbourhood.  The
masking is masked LM's (``npllm.data.masking.mask_tokens``) over every
position but [CLS] and the two [SEP]s.

``SentencePairs`` draws the starts, the split points, the labels, the random
segments and the masks from one seeded generator, whose state is its
``state_dict``: a resumed run draws exactly what an uninterrupted one would.
``sentence_pair_evaluation_batches`` makes the same held-out pairs (and
masks) every time, from a generator seeded afresh.

A batch is a dict of (B, T) ``input_ids``, ``targets``, ``token_type_ids``
and (B,) ``next_sentence_labels``.
"""

from collections.abc import Iterator

import numpy as np

from npllm.data.masking import MaskingRule, SeededBatches, mask_tokens
from npllm.errors import SettingError

IS_NEXT, IS_RANDOM = 0, 1  # the labels, in Hugging Face's order


def _pair_length(context_length: int, tokens: np.ndarray, what: str) -> int:
    """Tokens of A and B together: the window less [CLS] and two [SEP]s; the stream must hold a random B away from A."""
    length = context_length - 3
    if length < 2:
        raise SettingError(f"`context_length` must be at least 5 for sentence pairs ([CLS] A [SEP] B [SEP]),"
                           f" got {context_length}")
    if len(tokens) < 4 * length:
        raise SettingError(f"the {what} tokens ({len(tokens):,}) are too few for sentence pairs of"
                           f" `context_length` - 3 = {length} tokens (at least {4 * length:,}: a random second"
                           " segment must lie a window away from the first)")
    return length


def sentence_pair_batch(tokens: np.ndarray, size: int, length: int, rule: MaskingRule, cls_id: int, sep_id: int,
                        rng: np.random.Generator) -> dict:
    """``size`` masked pairs of ``length`` tokens between [CLS] and the [SEP]s, every choice from ``rng``."""
    n = len(tokens)
    starts = rng.integers(0, n - length, size=size, endpoint=True)  # A's window: tokens[s : s + length]
    first_lengths = rng.integers(1, length, size=size)  # |A| in 1 .. length - 1, |B| = length - |A|
    labels = np.where(rng.random(size) < 0.5, IS_NEXT, IS_RANDOM)
    away = rng.random(size)  # where the random B lies among the starts away from A's window
    T = length + 3
    ids = np.empty((size, T), dtype=np.int64)
    types = np.zeros((size, T), dtype=np.int64)
    for row, (start, a, label, u) in enumerate(zip(starts, first_lengths, labels, away)):
        b = length - a
        b_start = start + a if label == IS_NEXT else _start_away(start, length, b, n, u)
        ids[row] = [cls_id, *tokens[start:start + a], sep_id, *tokens[b_start:b_start + b], sep_id]
        types[row, a + 2:] = 1  # B and its [SEP]
    choosable = np.ones((size, T), dtype=bool)
    choosable[:, 0] = choosable[:, -1] = False  # [CLS] and the last [SEP]
    choosable[np.arange(size), first_lengths + 1] = False  # the [SEP] after A
    masked, targets = mask_tokens(ids, choosable, rule, rng)
    return {"input_ids": masked, "targets": targets, "token_type_ids": types, "next_sentence_labels": labels}


def _start_away(start: int, length: int, b: int, n: int, u: float) -> int:
    """A start for a segment of ``b`` tokens ending before ``start - length`` or beginning at ``start + 2 length``
    or later, the ``u``-th share (u in [0, 1)) of all such starts."""
    before = max(0, start - length - b + 1)  # starts 0 .. start - length - b
    after_first = start + 2 * length
    after = max(0, n - b - after_first + 1)  # starts after_first .. n - b
    pick = int(u * (before + after))
    return pick if pick < before else after_first + pick - before


class SentencePairs(SeededBatches):
    """Training batches of ``B`` masked sentence pairs; every choice from one seeded generator."""

    def __init__(self, tokens: np.ndarray, context_length: int, batch_size: int, seed: int, rule: MaskingRule,
                 cls_id: int, sep_id: int):
        super().__init__(seed)
        self.length = _pair_length(context_length, tokens, "training")
        self.tokens, self.batch_size, self.rule, self.cls_id, self.sep_id = tokens, batch_size, rule, cls_id, sep_id

    def next_batch(self) -> dict:
        return sentence_pair_batch(self.tokens, self.batch_size, self.length, self.rule, self.cls_id, self.sep_id,
                                   self.rng)


def sentence_pair_evaluation_batches(tokens: np.ndarray, context_length: int, batch_size: int, pairs: int,
                                     rule: MaskingRule, cls_id: int, sep_id: int, seed: int = 0) -> Iterator[dict]:
    """``pairs`` held-out pairs in batches of ``batch_size``, the same ones every time (a fresh ``seed``)."""
    length = _pair_length(context_length, tokens, "validation")
    rng = np.random.default_rng(seed)
    for first in range(0, pairs, batch_size):
        yield sentence_pair_batch(tokens, min(batch_size, pairs - first), length, rule, cls_id, sep_id, rng)
