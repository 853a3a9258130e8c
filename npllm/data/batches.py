"""Cutting a stream of token ids into windows of inputs and targets for a language model.

A GPT learns to predict every next token at once: from a window of ``T + 1``
consecutive ids, the inputs are the first ``T`` and the targets the last ``T``::

    window   [ 5, 17,  9, 42, 8 ]          T = 4
    inputs   [ 5, 17,  9, 42]
    targets  [17,  9, 42,  8]              targets[t] follows inputs[..t]

Three ways to choose windows, for three jobs:

* ``RandomWindows`` — training. Each batch draws ``B`` start positions uniformly
  from a seeded ``numpy.random.Generator``. Its ``state_dict()`` is the generator's
  exact bit state (plain JSON), so a resumed run draws the very same batches as an
  uninterrupted one.
* ``evaluation_batches`` — validation. A fixed sweep of non-overlapping windows
  from the start of the validation tokens, so every evaluation of every run scores
  the same tokens and losses are comparable.
* ``SlidingWindows`` — the textbook dataset: window ``i`` starts at ``i * stride``,
  with ``len()`` and indexing like a PyTorch ``Dataset``. A stride of ``T`` gives
  disjoint windows; a smaller stride gives overlapping ones.

All three gather a whole batch with one fancy-indexing call (``starts[:, None] +
arange(T + 1)``), which also reads only those windows from a memory-mapped file.
A batch is a dict, ``{"input_ids": (B, T), "targets": (B, T)}``, as every
batch of every objective is (``npllm.training.objectives``): named arrays
whose first axis is the example.  Windows come back as ``int64``, the index
type embedding lookups and cross-entropy expect.

**Document boundaries.**  A sharded corpus (``shards.py``) ends every document
with an end-of-text id.  By default windows cross those boundaries, as GPT-2's
did: the model learns that after the end-of-text token anything may begin.
Given ``boundary_id``, windows respect them instead: a start is drawn uniformly
from the places where a window lies inside one document (``DocumentStarts``: a
document shorter than the window offers one start, its first token), and every
target after the window's first end-of-text is ``IGNORE_INDEX``, so no
prediction is ever conditioned on another document (the end-of-text itself is
still predicted: the model learns where documents end).

What this module leaves out on purpose: shuffling epochs without replacement,
padding and attention masks (every window is full), and background prefetching.
"""

from collections.abc import Iterator

import numpy as np

from npllm.data.tokens import token_chunks
from npllm.errors import SettingError

Batch = dict[str, np.ndarray]  # {"input_ids": (B, T), "targets": (B, T)}, int64
IGNORE_INDEX = -100  # a target that is not learned from (the same value as npllm.functional's)


def gather_windows(tokens: np.ndarray, starts: np.ndarray, context_length: int) -> Batch:
    """The windows ``tokens[s : s + T + 1]`` for each start ``s``, as a batch of inputs and targets."""
    offsets = np.arange(context_length + 1)                       # (T+1,)
    windows = np.asarray(tokens[starts[:, None] + offsets], dtype=np.int64)  # (B, T+1)
    return {"input_ids": windows[:, :-1], "targets": windows[:, 1:]}  # (B, T) each


def ignore_after_boundary(batch: Batch, boundary_id: int | None) -> Batch:
    """The batch with every target after the first ``boundary_id`` among its inputs ignored (None: unchanged)."""
    if boundary_id is not None:
        crossed = np.cumsum(batch["input_ids"] == boundary_id, axis=1) > 0  # (B, T): another document began
        batch["targets"] = np.where(crossed, IGNORE_INDEX, batch["targets"])
    return batch


def document_ends(tokens, boundary_id: int) -> np.ndarray:
    """One past each document's last id: after every ``boundary_id``, and the end of the tokens."""
    ends, offset = [], 0
    for piece in token_chunks(tokens):  # one pass in bounded memory, even over many memory-mapped shards
        ends.append(np.flatnonzero(np.asarray(piece) == boundary_id) + offset + 1)
        offset += len(piece)
    ends = np.concatenate(ends or [np.zeros(0, dtype=np.int64)])
    return ends if len(ends) and ends[-1] == len(tokens) else np.append(ends, len(tokens))


class DocumentStarts:
    """Starts of windows of ``length`` ids that lie inside one document (one start for a shorter document)."""

    def __init__(self, tokens, boundary_id: int, length: int):
        ends = document_ends(tokens, boundary_id)
        self.document_starts = np.concatenate([[0], ends[:-1]])
        self.counts = np.maximum(ends - self.document_starts - length + 1, 1)  # starts each document offers
        self.cumulative = np.cumsum(self.counts)
        self.highest = len(tokens) - length  # a short last document: its window reaches back into the one before

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` starts, uniform over all the allowed ones."""
        drawn = rng.integers(0, self.cumulative[-1], size=size)                   # (B,)
        document = np.searchsorted(self.cumulative, drawn, side="right")          # (B,)
        offset = drawn - (self.cumulative[document] - self.counts[document])
        return np.minimum(self.document_starts[document] + offset, self.highest)


def count_windows(n_tokens: int, context_length: int, stride: int) -> int:
    """How many windows of ``T + 1`` tokens start at 0, stride, 2*stride, ... and fit."""
    return max(0, (n_tokens - context_length - 1) // stride + 1)


def require_windows(tokens: np.ndarray, context_length: int, what: str) -> None:
    """Raise a clear error when ``tokens`` is too short for even one window."""
    if context_length < 1:
        raise SettingError(f"`context_length` must be at least 1, got {context_length}")
    if len(tokens) < context_length + 1:
        raise SettingError(f"the {what} tokens ({len(tokens):,}) are too few for one window of "
                           f"`context_length` + 1 = {context_length + 1}; use more text or a shorter context")


class RandomWindows:
    """Training batches: ``B`` windows at uniformly random starts, reproducible from a seed.

    ``tokens`` is an array or ``ShardedTokens``; with ``boundary_id``, windows respect documents (see above).
    """

    def __init__(self, tokens: np.ndarray, context_length: int, batch_size: int, seed: int,
                 boundary_id: int | None = None):
        require_windows(tokens, context_length, "training")
        self.tokens = tokens
        self.context_length = context_length
        self.batch_size = batch_size
        self.boundary_id = boundary_id
        self.documents = None if boundary_id is None else DocumentStarts(tokens, boundary_id, context_length + 1)
        self.rng = np.random.default_rng(seed)

    def next_batch(self) -> Batch:
        """The next batch: ``input_ids`` and ``targets``, each (B, T) int64."""
        if self.documents is None:
            highest_start = len(self.tokens) - self.context_length - 1
            starts = self.rng.integers(0, highest_start, size=self.batch_size, endpoint=True)  # (B,)
        else:
            starts = self.documents.draw(self.rng, self.batch_size)
        return ignore_after_boundary(gather_windows(self.tokens, starts, self.context_length), self.boundary_id)

    def state_dict(self) -> dict:
        """The generator's exact state, JSON-serialisable, for a bit-exact resume."""
        return self.rng.bit_generator.state

    def load_state_dict(self, state: dict) -> None:
        """Continue drawing exactly where the run that saved ``state`` stopped."""
        self.rng.bit_generator.state = state


class SlidingWindows:
    """Window ``i`` is ``tokens[i * stride : i * stride + T + 1]``, split into inputs and targets."""

    def __init__(self, tokens: np.ndarray, context_length: int, stride: int | None = None):
        require_windows(tokens, context_length, "dataset")
        self.stride = context_length if stride is None else stride
        if self.stride < 1:
            raise SettingError(f"`stride` must be at least 1, got {self.stride}")
        self.tokens = tokens
        self.context_length = context_length

    def __len__(self) -> int:
        return count_windows(len(self.tokens), self.context_length, self.stride)

    def __getitem__(self, index: int) -> Batch:
        """One window: ``input_ids`` and ``targets``, each (T,) int64."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        batch = self.batch(np.array([index % len(self)]))
        return {name: rows[0] for name, rows in batch.items()}

    def batch(self, indices: np.ndarray) -> Batch:
        """The windows at ``indices`` as one batch, (B, T) inputs and targets."""
        return gather_windows(self.tokens, np.asarray(indices) * self.stride, self.context_length)

    def batches(self, batch_size: int, max_windows: int | None = None) -> Iterator[Batch]:
        """Windows in order, ``batch_size`` at a time (the last batch may be smaller)."""
        n_windows = len(self) if max_windows is None else min(len(self), max_windows)
        for first in range(0, n_windows, batch_size):
            yield self.batch(np.arange(first, min(first + batch_size, n_windows)))


def evaluation_batches(tokens: np.ndarray, context_length: int, batch_size: int,
                       max_windows: int | None = None, boundary_id: int | None = None) -> Iterator[Batch]:
    """A fixed sweep over ``tokens``: disjoint windows from the start, at most ``max_windows``.

    With ``boundary_id``, the targets after a window's first boundary are ignored, as in training.
    """
    require_windows(tokens, context_length, "validation")
    windows = SlidingWindows(tokens, context_length, stride=context_length).batches(batch_size, max_windows)
    return (ignore_after_boundary(batch, boundary_id) for batch in windows)
