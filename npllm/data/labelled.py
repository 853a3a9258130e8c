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

**sms-spam**: the SMS Spam Collection (UCI), downloaded once into the
cache and checked (``data.download``), balanced as Raschka's book does.

**A user file**: CSV with a header, or JSONL, holding a text field and a label
field (``text`` and ``label`` unless told otherwise).  A fifth of the rows,
drawn with the seed, are held out; a label that only the held-out rows have
is refused, as is an empty text.

**Batches** are dicts: ``input_ids`` (B, T) padded on the right with
``pad_id`` to the longest example of the batch, ``lengths`` (B,) the real
lengths (a GPT reads the state at its last real token), ``labels`` (B,).
``RandomExamples`` draws training batches from a seeded generator whose
state is checkpointed; ``in_order`` sweeps the test set in order.  Both
take a ``make_batch``, so instruction tuning batches its records with them too.
"""

import ast
import csv
import hashlib
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npllm.data.corpus import iter_stdlib_files, read_utf8_or_none, stdlib_root
from npllm.data.download import sms_spam_zip
from npllm.data.sources import DataSourceError
from npllm.errors import SettingError

STDLIB_TOPICS = ("asyncio", "email", "http", "idlelib", "importlib", "logging", "multiprocessing", "tkinter",
                 "unittest", "xml")
TEST_SHARE = 0.2
SMS_SPAM_MEMBER = "SMSSpamCollection"  # the file inside the zip
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
    """``stdlib-topics``, ``sms-spam`` (a cached download), or a CSV / JSONL file of text and label."""
    if source == "stdlib-topics":
        return stdlib_topics()
    if source == "sms-spam":
        return sms_spam(seed)
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


# --- the walk of the standard library (stdlib-topics here; data.pairs' and data.instructions' too) ---
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
    pairs = [(str(row[text_field]), str(row[label_field])) for _, row in records]
    return _held_out_at_random(pairs, seed, str(path), f"{path}: {len(pairs):,} labelled rows")


def _held_out_at_random(pairs: list[tuple[str, str]], seed: int, where: str, description: str) -> LabelledText:
    """(text, label) pairs with a fifth, drawn with ``seed``, held out; a label only held out is refused."""
    held_out = held_out_indices(len(pairs), seed)
    labels = sorted({label for _, label in pairs})
    index = {label: i for i, label in enumerate(labels)}
    indexed = [(text, index[label]) for text, label in pairs]
    train = [pair for i, pair in enumerate(indexed) if i not in held_out]
    test = [pair for i, pair in enumerate(indexed) if i in held_out]
    unseen = sorted({labels[label] for _, label in test} - {labels[label] for _, label in train})
    if unseen:
        raise DataSourceError(f"{where}: label {unseen[0]!r} is only among the held-out rows; give it more examples")
    return _labelled(labels, train, test, description)


def sms_spam(seed: int, cache_dir=None) -> LabelledText:
    """The SMS Spam Collection as Raschka's book uses it: balanced by keeping as many hams, drawn, as there are spams.

    The zip (``data.download.sms_spam_zip``, cached and checked) holds
    ``SMSSpamCollection``: one message a line, ``ham`` or ``spam``, a tab, the
    text.  Of 4,827 hams and 747 spams the book keeps 747 of each (a classifier
    that says "ham" is then no longer 87% right); a fifth of the 1,494 is held out.
    """
    path = sms_spam_zip(cache_dir)
    try:
        with zipfile.ZipFile(path) as archive:
            text = archive.read(SMS_SPAM_MEMBER).decode("utf-8")
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError) as error:
        raise DataSourceError(f"{path}: not the SMS Spam Collection's zip ({error})") from error
    pairs = []
    for number, line in numbered_lines(text):
        label, tab, message = line.partition("\t")
        if line.strip() and (not tab or label not in ("ham", "spam")):
            raise DataSourceError(f"{path}: {SMS_SPAM_MEMBER}, line {number}: not 'ham' or 'spam', a tab, the text")
        if line.strip():
            pairs.append((message, label))
    rng = np.random.default_rng(seed)
    spam = [pair for pair in pairs if pair[1] == "spam"]
    ham = [pair for pair in pairs if pair[1] == "ham"]
    kept = [ham[i] for i in sorted(rng.choice(len(ham), size=min(len(spam), len(ham)), replace=False))] + spam
    return _held_out_at_random(kept, seed, f"sms-spam ({path})", f"sms-spam: {len(kept):,} text messages"
                               f" ({len(spam):,} spam and as many ham, balanced as the book does)")


def read_records(path: Path) -> list[tuple[str, dict]]:
    """The records of a CSV file (with a header) or a JSONL file, each with where it is ("row 3", "line 7")."""
    text = read_text_file(path)
    if path.suffix.lower() == ".csv":
        return [(f"row {number}", row) for number, row in enumerate(csv.DictReader(text.splitlines()), start=1)]
    records = []
    for number, record in json_lines(path, text):
        if not isinstance(record, dict):
            raise DataSourceError(f"{path}, line {number}: a JSON record must be an object")
        records.append((f"line {number}", record))
    return records


def read_text_file(path: Path) -> str:
    """A user's data file as text; a missing or unreadable one is one line."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataSourceError(f"no such file: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataSourceError(f"{path}: cannot read it as UTF-8 text ({error})") from error


def numbered_lines(text: str):
    """(line number, line) of ``text``, cut at newlines only (a trailing \r dropped).

    Not ``str.splitlines``: it also cuts at \x0c, \x1c-\x1e and \u2028, which a
    text message may hold, and a JSON string may hold \u2028 as it is.
    """
    for number, line in enumerate(text.split("\n"), start=1):
        yield number, line.removesuffix("\r")


def json_lines(path: Path, text: str) -> list[tuple[int, object]]:
    """(line number, value) of every non-blank line of a JSONL text; a line that is not JSON is one line."""
    values = []
    for number, line in numbered_lines(text):
        if line.strip():
            try:
                values.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                raise DataSourceError(f"{path}, line {number}: not a JSON record ({error.msg})") from error
    return values


def held_out_indices(count: int, seed: int) -> set[int]:
    """A fifth of ``range(count)`` (at least one), drawn with ``seed``: the held-out rows of a user's file."""
    return set(np.random.default_rng(seed).permutation(count)[: max(1, round(TEST_SHARE * count))].tolist())


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
    """Training batches of ``batch_size`` examples drawn uniformly, reproducible from a seed (checkpointed).

    ``make_batch(chosen)`` turns the drawn indices (an array) into the batch
    dict: ``labelled_batch`` here, ``data.instructions`` its own.
    """

    def __init__(self, count: int, batch_size: int, make_batch, seed: int):
        if batch_size < 1:
            raise SettingError(f"`batch_size` must be at least 1, got {batch_size}")
        self.count, self.batch_size, self.make_batch = count, batch_size, make_batch
        self.rng = np.random.default_rng(seed)

    def next_batch(self) -> dict:
        return self.make_batch(self.rng.integers(0, self.count, size=self.batch_size))

    def state_dict(self) -> dict:
        return self.rng.bit_generator.state

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state


def labelled_batch(ids: list[list[int]], labels: np.ndarray, pad_id: int):
    """``make_batch`` for ``RandomExamples`` and ``in_order``: the chosen texts and labels, padded."""
    return lambda chosen: padded_batch([ids[i] for i in chosen], labels[chosen], pad_id)


def in_order(count: int, batch_size: int, make_batch):
    """Every example once, in order, ``batch_size`` at a time."""
    for first in range(0, count, batch_size):
        yield make_batch(np.arange(first, min(first + batch_size, count)))
