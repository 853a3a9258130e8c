"""Writing a file so that a crash never leaves half of it behind.

Opening ``model.safetensors`` for writing truncates it at once; if the program then
dies (Ctrl-C, out of memory, power cut), the old weights are gone and the new ones
are incomplete. The classic remedy has three steps:

1. write the new content to a temporary file *in the same folder*,
2. ``fsync`` it, so its bytes are on disk and not only in the page cache,
3. ``os.replace`` it onto the final name.

``os.replace`` is atomic when both names are on the same file system (hence "same
folder"): a reader sees either the whole old file or the whole new one, never a
mix. If anything fails before step 3 the temporary file is removed and the old
file is untouched. (The temporary file is created with ``os.open`` rather than
``tempfile.mkstemp``, which would make every file written here readable by its
owner alone; ``os.open`` gives the usual permissions, 0o666 less the umask.) Finally the folder itself is fsynced, so the rename survives a
power cut too (on systems that allow opening a folder; elsewhere that step is
skipped).

What this module leaves out on purpose: locking between concurrent writers. Two
processes writing the same path each produce a whole file; the last rename wins.
"""

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from npllm.errors import NpllmError


class FileWriteError(NpllmError):
    """A file the file system would not let us write: a full disk, no permission, a read-only folder."""

    @classmethod
    def of(cls, path: Path, error: OSError) -> "FileWriteError":
        return cls(f"{path}: cannot write it ({error.strerror or error}); nothing already saved was changed")


def fsync_directory(directory: Path) -> None:
    """Flush a folder's entries (new names, renames) to disk, where the OS allows it."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder; its renames are durable enough
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def create_temporary_beside(path: Path) -> tuple[int, str]:
    """A new, empty, hidden file in ``path``'s folder, opened for writing: (descriptor, name)."""
    while True:
        name = str(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), name
        except FileExistsError:  # another writer drew the same name: draw again
            continue


def require_writable_file(path: str | os.PathLike) -> None:
    """Refuse now, with ``FileWriteError``, a ``path`` that ``atomic_write`` could not write later.

    For a command that works for minutes before it saves: it creates (and
    removes) the very temporary file the write will need, so whatever the
    file system would say then (no such folder, no permission, a full disk
    of inodes) it says before the work starts.
    """
    path = Path(path)
    if path.is_dir():
        raise FileWriteError(f"{path}: is a folder, not a file to write")
    try:
        descriptor, temporary_name = create_temporary_beside(path)
    except OSError as error:
        raise FileWriteError.of(path, error) from error
    os.close(descriptor)
    os.remove(temporary_name)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_options) -> Iterator[IO]:
    """Open a temporary file for writing; on success it replaces ``path`` in one step.

    >>> with atomic_write("weights.bin") as f:   # doctest: +SKIP
    ...     f.write(data)

    If the block raises, the temporary file is deleted and ``path`` keeps its old content.
    A failure of the file system itself (a full disk, no permission, a read-only
    folder) becomes a ``FileWriteError`` naming ``path`` and the reason.
    ``open_options`` (``encoding``, ``newline``) go to ``open`` as they are.
    """
    path = Path(path)
    try:
        descriptor, temporary_name = create_temporary_beside(path)
    except OSError as error:
        raise FileWriteError.of(path, error) from error
    try:
        with os.fdopen(descriptor, mode, **open_options) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary_name, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.remove(temporary_name)
        if isinstance(error, OSError):
            raise FileWriteError.of(path, error) from error
        raise
    fsync_directory(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8, ``\\n`` line endings on every OS) atomically."""
    with atomic_write(path, "w", encoding="utf-8", newline="\n") as file:
        file.write(text)
