"""Corpora larger than memory: documents read as a stream, a piece at a time.

``sources.load_corpus`` reads a corpus into one string, which serves the
standard library's 13 MB; a Wikipedia dump of 20 GB needs a stream.  A
``DocumentSource`` names files and yields their documents as *pieces*: a
``Piece`` is some text, whether it ends its document (so an end-of-text token
follows it), and whether it is wiki markup still to be cleaned (the cleaning is
left to whoever encodes the piece, so it runs in the tokenizing processes, on
every core).  What a file holds is read from its name:

* ``*.jsonl``: one JSON object per line, one document per object, its text under
  ``text_field`` (``"text"`` by default).  A line without that field is refused,
  naming the file and the line;
* ``*.xml``: a MediaWiki XML dump (``wikitext.py``): one document per article;
* any other file: plain UTF-8 text, one document per file, read in pieces of about
  ``PIECE_CHARS`` characters, each cut just after a line break that is followed by a
  letter and preceded by a non-space.  No split pattern lets a chunk cross such a
  cut, so encoding the pieces one by one gives exactly the ids of the whole file.

Each may be compressed: ``.gz``, ``.bz2`` and ``.xz`` are read through the standard
library (``gzip``, ``bz2``, ``lzma``) as a stream; a truncated archive is refused in
one line.  A folder is every such file under it whose extension is JSONL, XML or
text (``.txt .md .py .rst``, as ``sources.py`` reads), hidden ones excluded, in
sorted order.  The names ``stdlib`` and ``docs`` are sources too: a document per standard
library file, and the pydoc topics as one document.

``fingerprint()`` is a SHA-256 of every file's bytes (and of how they are read),
so a sharded corpus knows whether its source changed.  ``sample_documents`` draws
the tokenizer's training text: a seeded uniform sample of the pieces, about
``chars`` characters, from one pass over the stream, holding only the sample
(bottom-k sampling: keep the pieces with the smallest random keys).

Left out on purpose: encodings other than UTF-8, and archives of many files (tar, zip).
"""

import bz2
import contextlib
import gzip
import hashlib
import heapq
import io
import json
import lzma
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from npllm.data.corpus import docs_text, iter_stdlib_files, read_utf8_or_none
from npllm.data.sources import DEFAULT_EXTENSIONS, DataSourceError
from npllm.data.wikitext import DumpError, clean_wikitext, iter_articles

PIECE_CHARS = 1 << 20           # plain text is read about a million characters at a time
MAX_PIECE_CHARS = 8 * PIECE_CHARS  # a text with no safe cut in this many characters is cut anyway
COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
STREAMED_KINDS = (".jsonl", ".xml")  # what a file's name says it holds; anything else is plain text
SAFE_CUT = re.compile(r"(?<=\S)\n(?=[^\W\d_])")  # after a line break between a non-space and a letter
FINGERPRINT_VERSION = "npllm-streams-1"  # changes when the way files are read into documents changes


class StreamError(DataSourceError):
    """A streamed corpus that cannot be read: a damaged archive, a bad JSONL line, a file that is not UTF-8."""


@dataclass(frozen=True)
class Piece:
    """Some text of a document; the end-of-text token follows it when ``ends_document``."""

    text: str
    ends_document: bool = True
    wikitext: bool = False  # wiki markup: to be cleaned (``wikitext.clean_wikitext``) before encoding

    def plain_text(self) -> str:
        return clean_wikitext(self.text) if self.wikitext else self.text


def base_suffix(path: Path) -> str:
    """The file's extension under any compression: ``dump.xml.bz2`` -> ``.xml``."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def kind_of(path: Path) -> str:
    """What a file holds, from its name: ``.jsonl``, ``.xml`` or ``""`` (plain text), under any compression."""
    return base_suffix(path) if base_suffix(path) in STREAMED_KINDS else ""


def is_compressed(path: Path) -> bool:
    return path.suffix.lower() in COMPRESSIONS


def wants_streaming(path: Path) -> bool:
    """Whether a file, or any file in a folder, is compressed, JSONL or a dump: a stream, not one string."""
    files = [path] if path.is_file() else visible_files(path) if path.is_dir() else []
    return any(is_compressed(file) or kind_of(file) for file in files)


def visible_files(folder: Path) -> list[Path]:
    """The corpus files under ``folder``, sorted by path: JSONL, dumps and text (``DEFAULT_EXTENSIONS``),
    compressed or not; hidden ones (``.git``) and any other file left out."""
    wanted = (*STREAMED_KINDS, *DEFAULT_EXTENSIONS)

    def visible(path: Path) -> bool:
        return (base_suffix(path) in wanted and path.is_file()
                and not any(part.startswith(".") for part in path.relative_to(folder).parts))

    return sorted((path for path in folder.rglob("*") if visible(path)), key=lambda p: p.relative_to(folder).parts)


def open_binary(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed as they are read when its name ends in .gz, .bz2 or .xz."""
    opener = COMPRESSIONS.get(path.suffix.lower(), open)
    return opener(path, "rb")


@contextlib.contextmanager
def read_failures(path: Path):
    """The errors a damaged file raises while it is read, turned into one line naming it."""
    try:
        yield
    except EOFError as error:  # bz2, gzip and lzma all say so when the archive stops short
        raise StreamError(f"{path}: the compressed file is truncated ({error})") from None
    except UnicodeDecodeError as error:
        raise StreamError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except (OSError, lzma.LZMAError) as error:
        if isinstance(error, FileNotFoundError) or not is_compressed(path):
            raise
        raise StreamError(f"{path}: cannot decompress it ({error})") from None


class DocumentSource:
    """The documents of files, folders or a built-in name, as a stream of ``Piece``s (see the module docstring)."""

    def __init__(self, spec: str | os.PathLike, text_field: str = "text"):
        self.spec, self.text_field = str(spec), text_field
        if self.spec == "stdlib":
            self.files, self.description = list(iter_stdlib_files()), "stdlib (a document per file)"
        elif self.spec == "docs":
            self.files, self.description = [], "docs (pydoc reference topics, one document)"
        else:
            path = Path(spec)
            if path.is_file():
                self.files = [path]
            elif path.is_dir():
                self.files = visible_files(path)
            else:
                raise StreamError(f"no such file or folder: {path}")
            if not self.files:
                raise StreamError(f"no files in {path}")
            self.description = str(path) if path.is_file() else f"{path}: {len(self.files)} files"

    def pieces(self) -> Iterator[Piece]:
        """Every document of every file, in order, as pieces."""
        if self.spec == "docs":
            yield Piece(docs_text())
        for path in self.files:
            with read_failures(path):
                yield from self.file_pieces(path)

    def file_pieces(self, path: Path) -> Iterator[Piece]:
        kind = kind_of(path)
        if self.spec == "stdlib":  # the corpus module's rule: a file that is not UTF-8 is skipped
            text = read_utf8_or_none(path)
            if text:
                yield Piece(text)
            return
        with open_binary(path) as file:
            if kind == ".xml":
                yield from (Piece(article, wikitext=True) for article in iter_articles(file, str(path)))
            elif kind == ".jsonl":
                yield from jsonl_pieces(file, path, self.text_field)
            else:
                yield from text_pieces(io.TextIOWrapper(file, encoding="utf-8"))

    def fingerprint(self) -> str:
        """SHA-256 of every file's bytes, its name within the source, and how it is read."""
        digest = hashlib.sha256(f"{FINGERPRINT_VERSION} {self.text_field}".encode())
        if self.spec == "docs":
            digest.update(docs_text().encode())
        for path in self.files:
            digest.update(f"\0{path.name}\0".encode())
            with open(path, "rb") as file:
                for block in iter(lambda: file.read(1 << 22), b""):
                    digest.update(block)
        return digest.hexdigest()


def jsonl_pieces(file: IO[bytes], path: Path, text_field: str) -> Iterator[Piece]:
    """One piece per JSON object in a JSONL file: its ``text_field``."""
    for number, line in enumerate(file, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            raise StreamError(f"{path}:{number}: not a JSON object ({error})") from None
        text = record.get(text_field) if isinstance(record, dict) else None
        if not isinstance(text, str):
            what = "is not a string" if isinstance(record, dict) and text_field in record else "is missing"
            raise StreamError(f"{path}:{number}: the `text_field` {text_field!r} {what}")
        if text:
            yield Piece(text)


def text_pieces(file: IO[str]) -> Iterator[Piece]:
    """A plain text file as pieces of about ``PIECE_CHARS``, cut where no chunk can cross (the docstring)."""
    texts = cut_texts(file)
    previous = next(texts, None)
    for text in texts:  # one piece behind, so the last one, which ends the document, is known as such
        yield Piece(previous, ends_document=False)
        previous = text
    if previous is not None:
        yield Piece(previous)


def cut_texts(file: IO[str]) -> Iterator[str]:
    """The file's text in consecutive non-empty pieces, each cut at a safe line break (or at ``MAX_PIECE_CHARS``)."""
    carried = ""
    while True:
        block = file.read(PIECE_CHARS)
        text = carried + block
        if not block:
            if text:
                yield text
            return
        cut = last_safe_cut(text)
        if cut is None and len(text) < MAX_PIECE_CHARS:
            carried = text
            continue
        cut = cut or len(text)
        yield text[:cut]
        carried = text[cut:]


def last_safe_cut(text: str) -> int | None:
    """The position just after the last safe line break of ``text`` (None if it has none)."""
    start = max(0, len(text) - PIECE_CHARS)
    cut = None
    for match in SAFE_CUT.finditer(text, start):
        cut = match.end()
    return cut if cut and cut < len(text) else None


def sample_documents(source: DocumentSource, chars: int, seed: int) -> list[str]:
    """About ``chars`` characters of plain text: a seeded uniform sample of the source's pieces, in stream order.

    One pass; memory holds the sample only.  Each piece draws a random key;
    the pieces with the smallest keys are kept while their total stays within
    ``chars`` (a max-heap on the key lets the largest go first).
    """
    rng = np.random.default_rng(seed)
    kept, total = [], 0  # heap of (-key, position, text)
    for position, piece in enumerate(source.pieces()):
        key = rng.random()
        if kept and total >= chars and key >= -kept[0][0]:
            continue
        text = piece.plain_text()
        heapq.heappush(kept, (-key, position, text))
        total += len(text)
        while len(kept) > 1 and total - len(kept[0][2]) >= chars:
            total -= len(heapq.heappop(kept)[2])
    texts = [text for _, _, text in sorted(kept, key=lambda entry: entry[1])]
    return [text[:chars] for text in texts] if len(texts) == 1 else texts


__all__ = ["DocumentSource", "DumpError", "Piece", "StreamError", "sample_documents", "wants_streaming"]
