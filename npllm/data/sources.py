"""From a ``--data`` value to the text a model will learn from.

``load_corpus`` accepts four kinds of value:

* ``stdlib`` — the running Python's standard library source (see ``corpus.py``),
* ``docs`` — the reference prose that ``help()`` prints (``pydoc_data.topics``),
* ``shakespeare`` — Tiny Shakespeare, downloaded once and cached (see ``download.py``),
* a path — one text file, or a folder searched recursively for files whose extension
  is in ``extensions`` (``.txt .md .py .rst`` by default).

The names win over paths: to train on a folder called ``stdlib``, write ``./stdlib``.

A folder is read in sorted path order, so the same folder always gives the same
text, byte for byte. Hidden files and folders (``.git``, ``.venv``) are skipped.
Files are joined with a blank line, so the last word of one never fuses with the
first word of the next. A file that is not UTF-8 is skipped and counted, not guessed
at; what was read and skipped is reported in the returned ``Corpus``.

Mistakes a user can make — a path that does not exist, a folder with no text in
it, a single file that is not UTF-8 — raise ``DataSourceError`` with one line that
names the path.

What this module leaves out on purpose: other encodings, compressed files,
document boundaries marked with special tokens, and streaming corpora larger than
memory.
"""

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from npllm.data.corpus import docs_text, read_utf8_or_none, stdlib_text
from npllm.data.download import shakespeare_path
from npllm.errors import NpllmError

DEFAULT_EXTENSIONS = (".txt", ".md", ".py", ".rst")
FILE_SEPARATOR = "\n\n"


class DataSourceError(NpllmError, ValueError):
    """A ``--data`` value that cannot be turned into training text."""


@dataclass(frozen=True)
class Corpus:
    """Training text and where it came from."""

    text: str
    description: str  # e.g. "notes.txt" or "notes: 12 files (1 skipped: not UTF-8)"
    files_skipped: int = 0  # files that were not UTF-8


def load_corpus(source: str | os.PathLike, extensions: Iterable[str] = DEFAULT_EXTENSIONS,
                cache_dir: str | os.PathLike | None = None) -> Corpus:
    """Resolve a ``--data`` value (a name or a path) to a ``Corpus``; see the module docstring."""
    if source == "stdlib":
        return Corpus(stdlib_text(), "stdlib (Python standard library source)")
    if source == "docs":
        return Corpus(docs_text(), "docs (pydoc reference topics)")
    if source == "shakespeare":
        return read_text_file(shakespeare_path(cache_dir))
    path = Path(source)
    if path.is_file():
        return read_text_file(path)
    if path.is_dir():
        return read_text_folder(path, extensions)
    raise DataSourceError(f"no such file or folder: {path} (or use stdlib, docs, shakespeare)")


def read_text_file(path: Path) -> Corpus:
    """One UTF-8 text file as a corpus."""
    text = read_utf8_or_none(path)
    if text is None:
        raise DataSourceError(f"cannot read {path} as UTF-8 text")
    return nonempty(Corpus(text, str(path)))


def read_text_folder(folder: Path, extensions: Iterable[str]) -> Corpus:
    """Every matching file under ``folder``, in sorted order, joined by a blank line."""
    extensions = normalise_extensions(extensions)
    texts, skipped = [], 0
    for path in text_files_under(folder, extensions):
        text = read_utf8_or_none(path)
        if text is None:
            skipped += 1
        else:
            texts.append(text)
    skipped_note = f" ({skipped} skipped: not UTF-8)" if skipped else ""
    if not texts:
        raise DataSourceError(f"no readable {' '.join(extensions)} files in {folder}{skipped_note}")
    description = f"{folder}: {len(texts)} files{skipped_note}"
    return nonempty(Corpus(FILE_SEPARATOR.join(texts), description, skipped))


def normalise_extensions(extensions: Iterable[str]) -> tuple[str, ...]:
    """``["TXT", ".md"]`` -> ``(".txt", ".md")``: lower case, each with its leading dot."""
    extensions = tuple("." + extension.lower().lstrip(".") for extension in extensions)
    if not extensions:
        raise DataSourceError("no file extensions given to search for")
    return extensions


def text_files_under(folder: Path, extensions: tuple[str, ...]) -> list[Path]:
    """Files under ``folder`` with one of ``extensions``, hidden ones excluded, sorted by path."""
    def is_wanted(path: Path) -> bool:
        relative_parts = path.relative_to(folder).parts
        return (path.suffix.lower() in extensions and path.is_file()
                and not any(part.startswith(".") for part in relative_parts))

    return sorted((path for path in folder.rglob("*") if is_wanted(path)),
                  key=lambda path: path.relative_to(folder).parts)


def nonempty(corpus: Corpus) -> Corpus:
    """The corpus itself, or a ``DataSourceError`` when it holds only whitespace."""
    if not corpus.text.strip():
        raise DataSourceError(f"the corpus {corpus.description} is empty")
    return corpus
