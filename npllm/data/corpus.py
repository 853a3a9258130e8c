"""The default corpus: text that ships with every Python, so nothing has to be downloaded.

A language model needs text to learn from, and a tokenizer needs text to learn its
merges from. Every Python installation already carries a few megabytes of it:

* the standard library's own ``.py`` source files (about 13 MB of code, comments and
  docstrings), read from the running interpreter, and
* ``pydoc_data.topics``, the English reference prose that ``help()`` prints
  (about half a megabyte).

Files are visited in sorted order, so the same interpreter always yields the same
text, byte for byte. Test suites (``test``, ``tests``, ``idle_test``) and installed
third-party packages (``site-packages``, ``dist-packages``) are left out: the first are
repetitive fixtures, the second differ from machine to machine. A file that is not
valid UTF-8 is skipped rather than guessed at.

What this module leaves out on purpose: user-supplied files, downloads and token
caches live in their own modules; here there is only what the interpreter provides.
"""

import os
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from npllm.errors import SettingError

EXCLUDED_DIRECTORIES = frozenset({"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"})


def stdlib_root() -> Path:
    """The directory holding the running interpreter's standard library source."""
    return Path(sysconfig.get_paths()["stdlib"])


def iter_stdlib_files(root: Path | None = None) -> Iterator[Path]:
    """Yield every ``.py`` file under the standard library, in sorted, deterministic order."""
    root = stdlib_root() if root is None else Path(root)
    for directory, subdirectories, filenames in os.walk(root):
        # Pruning in place tells os.walk which subdirectories to visit, and in what order.
        subdirectories[:] = sorted(name for name in subdirectories if name not in EXCLUDED_DIRECTORIES)
        for filename in sorted(filenames):
            if filename.endswith(".py"):
                yield Path(directory) / filename


def read_utf8_or_none(path: Path) -> str | None:
    """The file's text, or None when it is not valid UTF-8 (or cannot be read)."""
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def stdlib_text(max_bytes: int | None = None) -> str:
    """The standard library's source files concatenated, optionally cut to ``max_bytes`` of UTF-8.

    The cut never splits a character: the text returned encodes to at most ``max_bytes`` bytes.
    """
    if max_bytes is not None and max_bytes < 0:
        raise SettingError(f"`max_bytes` must be non-negative or None, got {max_bytes}")
    pieces, total_bytes = [], 0
    for path in iter_stdlib_files():
        text = read_utf8_or_none(path)
        if text is None:
            continue
        pieces.append(text)
        total_bytes += len(text.encode("utf-8"))
        if max_bytes is not None and total_bytes >= max_bytes:
            break
    text = "".join(pieces)
    if max_bytes is None:
        return text
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


def docs_text() -> str:
    """The reference prose printed by ``help()``: every pydoc topic, ordered by topic name."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics))
