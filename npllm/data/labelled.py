"""Labelled text for classification: the embedded ``stdlib-topics`` set, the user's CSV or JSONL, and batches.

**stdlib-topics** needs no download.  Every class and function docstring of
ten standard-library packages, labelled by the package it comes from:

    asyncio  email  http  idlelib  importlib  logging  multiprocessing  tkinter  unittest  xml

(the ten with the most docstrings that every Python from 3.10 on ships;
``distutils``, larger, left in 3.12).  A docstring names its package's
concepts ("the event loop", "a MIME part", "the widget"), which is what a
classifier must learn.  The split is by **source file**: every file's
docstrings go to one side, so that no function's neighbours are seen in
training.  Taking each package's files in the order of a hash of their path,
files go to the test side until a fifth of the package's docstrings are
there (never a file that would make it more than half), so the split is the
same on every machine that has the same standard library.

**A user file**: CSV with a header, or JSONL, holding a text field and a label
field (``text`` and ``label`` unless told otherwise).  A fifth of the rows,
drawn with the seed, are held out; a label that only the held-out rows have
is refused, as is an empty text.

**Batches** are dicts: ``input_ids`` (B, T) padded on the right with
``pad_id`` to the longest example of the batch, ``lengths`` (B,) the real
lengths (a GPT reads the state at its last real token), ``labels`` (B,).
``RandomExamples`` draws training batches from a seeded generator whose
state is checkpointed; ``example_batches`` sweeps the test set in order.
"""

import ast
import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npllm.data.corpus import iter_stdlib_files, read_utf8_or_none, stdlib_root
from npllm.data.sources import DataSourceError
from npllm.errors import SettingError

STDLIB_TOPICS = ("asyncio", "email", "http", "idlelib", "importlib", "logging", "multiprocessing", "tkinter",
                 "unittest", "xml")
TEST_SHARE = 0.2
MIN_DOCSTRING_CHARS = 20


@dataclass
class LabelledText:
    """Texts and their labels (indices into ``labels``), split into train and test."""

    labels: list[str]
    train_texts: list[str]
    train_labels: np.ndarray
    test_texts: list[str]
    test_labels: np.ndarray
    description: str

    def counts(self) -> str:
        """One line per split: how many examples of each label."""
        def line(name, labels):
            counted = np.bincount(labels, minlength=len(self.labels))
            return f"{name} {len(labels):,}: " + ", ".join(f"{label} {n}" for label, n in zip(self.labels, counted))
        return line("train", self.train_labels) + "\n" + line("test", self.test_labels)


def load_labelled(source: str, text_field="text", label_field="label", seed=0) -> LabelledText:
    """``stdlib-topics``, or a CSV / JSONL file of text and label."""
    if source == "stdlib-topics":
        return stdlib_topics()
    return read_labelled_file(Path(source), text_field, label_field, seed)


def stdlib_topics(root: Path | None = None) -> LabelledText:
    root = stdlib_root() if root is None else root
    train, test = [], []
    for label, package in enumerate(STDLIB_TOPICS):
        files = package_files(root, package)
        if len(files) < 2:
            raise DataSourceError(f"stdlib-topics: {root / package} has {len(files)} source files; two are needed")
        train_files, test_files = split_by_file([_docstrings(path) for path in files])
        train.extend((docstring, label) for docstrings in train_files for docstring in docstrings)
        test.extend((docstring, label) for docstrings in test_files for docstring in docstrings)
    return _labelled(list(STDLIB_TOPICS), train, test, f"stdlib-topics: docstrings of {len(STDLIB_TOPICS)} packages"
                                                        " of the standard library, split by source file")


def package_files(root: Path, package: str = "") -> list[Path]:
    """The ``.py`` files under ``root / package`` (the whole library: ``""``), test suites left out, in hash order.

    The order is that of a hash of each file's path from ``root``: the same on every
    machine with the same standard library, and unrelated to the files' names.
    """
    files = [Path(path) for path in iter_stdlib_files(root / package)] if package else list(iter_stdlib_files(root))
    return sorted(files, key=lambda path: _stable_hash(path.relative_to(root)))


def split_by_file(examples_per_file: list[list], share: float = TEST_SHARE) -> tuple[list[list], list[list]]:
    """(train files, test files): files in the given order go to the test side until ``share`` of the examples are there.

    A file that would put more than half of the examples on the test side is
    never held out; files with no example are dropped.
    """
    examples_per_file = [examples for examples in examples_per_file if examples]
    total, held_out = sum(map(len, examples_per_file)), 0
    train, test = [], []
    for examples in examples_per_file:
        goes_to_test = held_out < share * total and held_out + len(examples) <= 0.5 * total
        (test if goes_to_test else train).append(examples)
        held_out += len(examples) if goes_to_test else 0
    return train, test


def _stable_hash(relative_path: Path) -> str:
    return hashlib.sha256(relative_path.as_posix().encode()).hexdigest()


def parsed_module(path: Path) -> tuple[str, ast.Module] | None:
    """A source file's text and syntax tree, or None when it is not UTF-8 or not Python this interpreter parses."""
    text = read_utf8_or_none(path)
    if text is None:
        return None
    try:
        return text, ast.parse(text)
    except SyntaxError:
        return None


def documented_definitions(tree: ast.Module):
    """Every class and function of ``tree`` (nested ones too) with its cleaned docstring, when it has one."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            docstring = ast.get_docstring(node)
            if docstring:
                yield node, docstring


def _docstrings(path: Path) -> list[str]:
    parsed = parsed_module(path)
    if parsed is None:
        return []
    return [docstring for _, docstring in documented_definitions(parsed[1]) if len(docstring) >= MIN_DOCSTRING_CHARS]


def read_labelled_file(path: Path, text_field: str, label_field: str, seed: int) -> LabelledText:
    records = read_records(path)
    if not records:
        raise DataSourceError(f"{path}: no rows")
    for where, row in records:
        for field in (text_field, label_field):
            if field not in row:
                raise DataSourceError(f"{path}, {where}: no field {field!r} (it has {', '.join(map(str, row))})")
        if not str(row[text_field]).strip():
            raise DataSourceError(f"{path}, {where}: the text is empty")
    rows = [row for _, row in records]
    held_out = set(held_out_rows(len(rows), seed).tolist())
    labels = sorted({str(row[label_field]) for row in rows})
    index = {label: i for i, label in enumerate(labels)}
    pairs = [(str(row[text_field]), index[str(row[label_field])]) for row in rows]
    train = [pair for i, pair in enumerate(pairs) if i not in held_out]
    test = [pair for i, pair in enumerate(pairs) if i in held_out]
    unseen = sorted({labels[label] for _, label in test} - {labels[label] for _, label in train})
    if unseen:
        raise DataSourceError(f"{path}: label {unseen[0]!r} is only among the held-out rows; give it more examples")
    return _labelled(labels, train, test, f"{path}: {len(rows):,} labelled rows")


def held_out_rows(n_rows: int, seed: int, share: float = TEST_SHARE) -> np.ndarray:
    """The indices of the ``share`` of ``n_rows`` rows (at least one) held out for testing, drawn with ``seed``."""
    return np.random.default_rng(seed).permutation(n_rows)[: max(1, round(share * n_rows))]


def read_records(path: Path) -> list[tuple[str, dict]]:
    """The records of a CSV file (with a header) or a JSONL file, each with where it is ("row 3", "line 7")."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataSourceError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataSourceError(f"{path}: cannot read it as UTF-8 text ({error})") from error
    if path.suffix.lower() == ".csv":
        return [(f"row {number}", row) for number, row in enumerate(csv.DictReader(text.splitlines()), start=1)]
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataSourceError(f"{path}, line {number}: not a JSON record ({error.msg})") from error
            if not isinstance(record, dict):
                raise DataSourceError(f"{path}, line {number}: a JSON record must be an object")
            records.append((f"line {number}", record))
    return records


def _labelled(labels, train, test, description) -> LabelledText:
    empty = [label for i, label in enumerate(labels) if not any(y == i for _, y in train)]
    if empty:
        raise DataSourceError(f"{description}: the label {empty[0]!r} has no training example")
    return LabelledText(labels, [text for text, _ in train], np.array([y for _, y in train], dtype=np.int64),
                        [text for text, _ in test], np.array([y for _, y in test], dtype=np.int64), description)


# --- batches ---------------------------------------------------------------------------------
def padded_batch(ids: list[list[int]], labels: np.ndarray, pad_id: int) -> dict:
    """``input_ids`` (B, T) padded on the right to the longest, ``lengths`` (B,), ``labels`` (B,)."""
    lengths = np.array([len(row) for row in ids], dtype=np.int64)
    input_ids = np.full((len(ids), int(lengths.max())), pad_id, dtype=np.int64)
    for row, tokens in zip(input_ids, ids):
        row[: len(tokens)] = tokens
    return {"input_ids": input_ids, "lengths": lengths, "labels": np.asarray(labels, dtype=np.int64)}


class RandomExamples:
    """Training batches of ``batch_size`` examples drawn uniformly, reproducible from a seed (checkpointed)."""

    def __init__(self, ids: list[list[int]], labels: np.ndarray, batch_size: int, pad_id: int, seed: int):
        if batch_size < 1:
            raise SettingError(f"`batch_size` must be at least 1, got {batch_size}")
        self.ids, self.labels, self.batch_size, self.pad_id = ids, labels, batch_size, pad_id
        self.rng = np.random.default_rng(seed)

    def next_batch(self) -> dict:
        chosen = self.rng.integers(0, len(self.ids), size=self.batch_size)
        return padded_batch([self.ids[i] for i in chosen], self.labels[chosen], self.pad_id)

    def state_dict(self) -> dict:
        return self.rng.bit_generator.state

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def example_batches(ids: list[list[int]], labels: np.ndarray, batch_size: int, pad_id: int):
    """Every example once, in order, ``batch_size`` at a time."""
    for first in range(0, len(ids), batch_size):
        yield padded_batch(ids[first:first + batch_size], labels[first:first + batch_size], pad_id)
