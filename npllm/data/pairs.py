"""Sequence-to-sequence pairs: the embedded ``stdlib-docstrings`` task, the user's JSONL, and padded batches.

**stdlib-docstrings** needs no download.  Every function and method of the
standard library (test suites left out) whose docstring opens with a
sentence becomes one pair::

    source   the function's source, dedented, its docstring removed
    target   the docstring's first sentence, on one line

so the task is to say in English what a piece of code does.  The split is by
**module**: every file's pairs go to one side (``labelled.split_by_file``,
files in the order of a hash of their path, a fifth of the pairs held out),
so no test function's neighbours, helpers or copy-pasted siblings are seen in
training; a test pair whose source also occurs in training (the same
function in two modules) is dropped.  ``npllm data export stdlib-docstrings``
writes it as JSONL.

**A user file**: JSONL, one object a line with a ``source`` and a ``target``
string (a line without them, or with one empty, is refused naming the file
and the line).  A fifth of the lines, drawn with the seed, are held out.

**Batches** (``pair_batch``) frame each pair as BART does its denoising
examples, padded on the right to the longest of the batch::

    input_ids              <s> source </s> <pad> ...        (B, S)   attention_mask: 1 on real tokens
    decoder_input_ids      <s> target       <pad> ...        (B, T)   the decoder's input: teacher forcing
    targets                target </s>      -100  ...        (B, T)   what each position must predict

The target is shifted right behind the decoder's start token (``<s>``), so
position t reads target[:t] and predicts target[t]; padding's targets are
``IGNORE_INDEX`` and count for nothing.  ``BucketedPairs`` makes training
batches of pairs of similar lengths, so little of each batch is padding: each
epoch shuffles the pairs, sorts every chunk of 50 batches' worth by length,
cuts it into batches and shuffles the batches (each pair seen once an
epoch).  Its state (the generator's state at the epoch's start and the batch
reached) is checkpointed, so a resumed run draws exactly the batches an
uninterrupted one would.

Left out: packing several pairs into one row, and a separate test file.
"""

import ast
import functools
import json
import re
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npllm.data.corpus import stdlib_root
from npllm.data.labelled import (documented_definitions, held_out_indices, package_files, parsed_module,
                                 read_records, split_by_file)
from npllm.data.sources import DataSourceError
from npllm.errors import SettingError
from npllm.io.atomic import atomic_write_text

IGNORE_INDEX = -100   # a target that is not learned from (npllm.functional's value)
STDLIB_DOCSTRINGS = "stdlib-docstrings"
MIN_TARGET_CHARS = 12          # "Return x." says little: shorter first sentences are left out
MAX_TARGET_CHARS = 200         # a first "sentence" longer than this is a paragraph without a full stop
BUCKET_CHUNK = 50              # batches' worth of pairs sorted by length together


@dataclass
class Pairs:
    """Source and target texts, split into train and test; ``test_names`` say where each test pair comes from."""

    train: list[tuple[str, str]]
    test: list[tuple[str, str]]
    description: str
    test_names: list[str] = None

    def counts(self) -> str:
        return f"{len(self.train):,} pairs to train, {len(self.test):,} held out"


def load_pairs(source: str, seed: int = 0) -> Pairs:
    """``stdlib-docstrings``, or a JSONL file of ``{"source": ..., "target": ...}``."""
    if source == STDLIB_DOCSTRINGS:
        return stdlib_docstrings()
    return read_pairs_file(Path(source), seed)


# --- stdlib-docstrings -----------------------------------------------------------------------
def stdlib_docstrings(root: Path | None = None) -> Pairs:
    """The pairs of the standard library at ``root`` (default: this interpreter's), read once per process."""
    train, test, modules = _stdlib_docstrings(stdlib_root() if root is None else Path(root))
    return Pairs(list(train), [pair for _, pair in test],
                 f"{STDLIB_DOCSTRINGS}: function source -> first sentence of its docstring, from {modules:,} modules"
                 " of the standard library, split by module", [name for name, _ in test])


@functools.lru_cache(maxsize=4)
def _stdlib_docstrings(root: Path) -> tuple[tuple, tuple, int]:
    """(train pairs, (name, pair) held out, modules): parsing the whole library takes seconds, so it is kept."""
    named = [_function_pairs(path, root) for path in package_files(root)]
    train_files, test_files = split_by_file(named)
    train = [pair for pairs in train_files for _, pair in pairs]
    seen = {source for source, _ in train}
    test = [(name, pair) for pairs in test_files for name, pair in pairs if pair[0] not in seen]
    if not train or not test:
        raise DataSourceError(f"{STDLIB_DOCSTRINGS}: {root} holds too few documented functions")
    return tuple(train), tuple(test), len(train_files) + len(test_files)


def _function_pairs(path: Path, root: Path) -> list[tuple[str, tuple[str, str]]]:
    """(module.function, (source without its docstring, first sentence)) for each documented function of a file."""
    parsed = parsed_module(path)
    if parsed is None:
        return []
    text, tree = parsed
    lines = text.splitlines()
    module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
    owner = {child: f"{node.name}." for node in ast.walk(tree) if isinstance(node, ast.ClassDef) for child in node.body}
    found, seen = [], set()
    for node, docstring in documented_definitions(tree):
        if isinstance(node, ast.ClassDef):
            continue
        target = first_sentence(docstring)
        source = source_without_docstring(node, lines)
        if source is None or not MIN_TARGET_CHARS <= len(target) <= MAX_TARGET_CHARS or source in seen:
            continue
        seen.add(source)
        found.append((f"{module}.{owner.get(node, '')}{node.name}", (source, target)))
    return found


def source_without_docstring(node: ast.FunctionDef, lines: list[str]) -> str | None:
    """The function's lines (from ``def``, decorators left out), dedented, without the docstring's lines.

    None when nothing but the docstring is in its body (the source would be its
    signature alone), or when the docstring shares a line with other code.
    """
    docstring = node.body[0]
    if len(node.body) == 1 or docstring.lineno == node.lineno or node.body[1].lineno == docstring.end_lineno:
        return None
    kept = lines[node.lineno - 1: docstring.lineno - 1] + lines[docstring.end_lineno: node.end_lineno]
    return textwrap.dedent("\n".join(kept)).strip("\n")


def first_sentence(docstring: str) -> str:
    """The first paragraph's first sentence, on one line: up to the first ., ! or ? followed by a space or the end."""
    paragraph = " ".join(docstring.strip().split("\n\n")[0].split())
    match = re.match(r"(.+?[.!?])(\s|$)", paragraph)
    return match.group(1) if match else paragraph


# --- user files ------------------------------------------------------------------------------
def read_pairs_file(path: Path, seed: int) -> Pairs:
    """A JSONL file of source and target strings; a fifth of its lines (drawn with ``seed``) held out."""
    if path.suffix.lower() == ".csv":
        raise DataSourceError(f"{path}: pairs are read from JSONL (one {{\"source\": ..., \"target\": ...}} a line)")
    records = read_records(path)
    if len(records) < 2:
        raise DataSourceError(f"{path}: {len(records)} pairs; at least two are needed (one to train, one to test)")
    pairs = []
    for where, record in records:
        for field in ("source", "target"):
            if field not in record:
                raise DataSourceError(f"{path}, {where}: no field {field!r} (it has {', '.join(map(str, record))})")
            value = record[field]
            if not isinstance(value, str):
                raise DataSourceError(f"{path}, {where}: the {field} is not a string (it is {type(value).__name__})")
            if not value.strip():
                raise DataSourceError(f"{path}, {where}: the {field} is empty")
        pairs.append((record["source"], record["target"]))
    held_out = held_out_indices(len(pairs), seed)
    return Pairs([pair for i, pair in enumerate(pairs) if i not in held_out],
                 [pair for i, pair in enumerate(pairs) if i in held_out], f"{path}: {len(pairs):,} pairs",
                 [f"{path.name}:{records[i][0].removeprefix('line ')}" for i in range(len(pairs)) if i in held_out])


def write_jsonl(pairs: list[tuple[str, str]], path: Path) -> None:
    """The pairs as JSONL, one ``{"source": ..., "target": ...}`` a line (written atomically)."""
    atomic_write_text(Path(path), "".join(json.dumps({"source": s, "target": t}) + "\n" for s, t in pairs))


# --- token ids and batches --------------------------------------------------------------------
def encode_pairs(pairs: list[tuple[str, str]], tokenizer, max_source: int, max_target: int,
                 what: str) -> list[tuple[list[int], list[int]]]:
    """Token ids of each pair, cut to ``max_source`` source and ``max_target`` target tokens (with one warning).

    The limits are the model's positions less the framing (<s> and </s> around
    a source, <s> before or </s> after a target).
    """
    encoded = [(tokenizer.encode_ordinary(source), tokenizer.encode_ordinary(target)) for source, target in pairs]
    for side, limit, index in (("sources", max_source, 0), ("targets", max_target, 1)):
        long = [len(pair[index]) for pair in encoded if len(pair[index]) > limit]
        if long:
            warnings.warn(f"{what}: {len(long):,} of {len(encoded):,} {side} are longer than the {limit} tokens the"
                          f" model's positions allow (the longest has {max(long):,}); they are cut to {limit}")
    return [(source[:max_source], target[:max_target]) for source, target in encoded]


@dataclass(frozen=True)
class Framing:
    """The special ids that frame a pair: padding, the start (<s>, also the decoder's start) and the end (</s>)."""

    pad_id: int
    bos_id: int
    eos_id: int


def pair_batch(sources: list, targets: list, framing: Framing) -> dict:
    """The batch of ``sources`` and ``targets`` (lists of ids), framed and padded as the module's docstring draws."""
    B = len(sources)
    S = max(map(len, sources)) + 2
    T = max(map(len, targets)) + 1
    input_ids = np.full((B, S), framing.pad_id, dtype=np.int64)
    decoder_input_ids = np.full((B, T), framing.pad_id, dtype=np.int64)
    labels = np.full((B, T), IGNORE_INDEX, dtype=np.int64)
    for b, (source, target) in enumerate(zip(sources, targets)):
        input_ids[b, : len(source) + 2] = [framing.bos_id, *source, framing.eos_id]
        decoder_input_ids[b, : len(target) + 1] = [framing.bos_id, *target]
        labels[b, : len(target) + 1] = [*target, framing.eos_id]
    source_lengths = np.array([len(s) + 2 for s in sources])[:, None]
    return {"input_ids": input_ids,
            "attention_mask": (np.arange(S) < source_lengths).astype(np.int64),
            "decoder_input_ids": decoder_input_ids,
            "decoder_attention_mask": (labels != IGNORE_INDEX).astype(np.int64),
            "targets": labels}


def padding_fraction(batches) -> tuple[float, float]:
    """The share of the source positions and of the target positions that are padding, over ``batches``."""
    batches = list(batches)
    source = [(batch["attention_mask"].size, int(batch["attention_mask"].sum())) for batch in batches]
    target = [(batch["decoder_attention_mask"].size, int(batch["decoder_attention_mask"].sum())) for batch in batches]
    return tuple(1 - sum(real for _, real in side) / sum(size for size, _ in side) for side in (source, target))


class BucketedPairs:
    """Training batches of pairs of similar lengths, every pair once an epoch, in a seeded and resumable order."""

    def __init__(self, pairs: list[tuple[list[int], list[int]]], batch_size: int, framing: Framing, seed: int):
        if batch_size < 1:
            raise SettingError(f"`batch_size` must be at least 1, got {batch_size}")
        if not pairs:
            raise SettingError("no pairs to train on")
        self.pairs, self.batch_size, self.framing = pairs, batch_size, framing
        self.lengths = np.array([len(source) + len(target) for source, target in pairs])
        self.rng = np.random.default_rng(seed)
        self._new_epoch()

    def _new_epoch(self):
        self.epoch_start = self.rng.bit_generator.state
        self.order, self.position = self.epoch_batches(self.rng), 0

    def epoch_batches(self, rng: np.random.Generator) -> list[np.ndarray]:
        """One epoch: the pairs shuffled, each chunk of BUCKET_CHUNK batches sorted by length and cut, batches shuffled."""
        shuffled = rng.permutation(len(self.pairs))
        chunk = BUCKET_CHUNK * self.batch_size
        batches = []
        for first in range(0, len(shuffled), chunk):
            piece = shuffled[first: first + chunk]
            piece = piece[np.argsort(self.lengths[piece], kind="stable")]
            batches += [piece[i: i + self.batch_size] for i in range(0, len(piece), self.batch_size)]
        return [batches[i] for i in rng.permutation(len(batches))]

    def next_batch(self) -> dict:
        if self.position == len(self.order):
            self._new_epoch()
        chosen = self.order[self.position]
        self.position += 1
        return pair_batch([self.pairs[i][0] for i in chosen], [self.pairs[i][1] for i in chosen], self.framing)

    def padding_fraction(self) -> tuple[float, float]:
        """Padding's share of the source and target positions over the current epoch's batches."""
        rng = np.random.default_rng()
        rng.bit_generator.state = self.epoch_start
        order = self.epoch_batches(rng)
        return padding_fraction(pair_batch([self.pairs[i][0] for i in chosen], [self.pairs[i][1] for i in chosen],
                                           self.framing) for chosen in order)

    def state_dict(self) -> dict:
        """The generator's state when this epoch was drawn, and how many of its batches were used."""
        return {"epoch_start": self.epoch_start, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["epoch_start"]
        self._new_epoch()
        self.position = state["position"]


def pair_batches(pairs: list[tuple[list[int], list[int]]], batch_size: int, framing: Framing):
    """Every pair once, in order of length (little padding), ``batch_size`` at a time: an evaluation sweep."""
    order = sorted(range(len(pairs)), key=lambda i: (len(pairs[i][0]), len(pairs[i][1])))
    for first in range(0, len(order), batch_size):
        chosen = order[first: first + batch_size]
        yield pair_batch([pairs[i][0] for i in chosen], [pairs[i][1] for i in chosen], framing)
