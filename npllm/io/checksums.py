"""Fingerprints of files: the SHA-256 that says a file is the very one that was written, or downloaded.

A download is checked against the digest its source publishes; a checkpoint
against the digests written beside it (``checksums.json``); LoRA adapters
against the fingerprint of the base weights they were trained on
(``arrays_sha256``).  Files are read
in chunks, so a file of any size is hashed in constant memory; hashlib
releases Python's lock while it hashes, at about 1 GB/s on one core here
(``npllm bench checkpoint``).
"""

import hashlib
from pathlib import Path

import numpy as np

CHUNK_BYTES = 1 << 22  # 4 MB per read


def file_sha256(path: Path) -> str:
    """The SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def arrays_sha256(arrays: dict) -> str:
    """One SHA-256 of named arrays: each name, dtype, shape and bytes in name order (the same values, the same digest)."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name} {array.dtype.str} {array.shape}\n".encode())
        digest.update(array.data)
    return digest.hexdigest()
