"""Tokenize a corpus once, keep the ids in a memory-mapped file, split them for validation.

Encoding megabytes of text with a pure-Python BPE takes a while, and every training
run on the same corpus would repeat it. So the token ids are written once to a
``.npy`` file in the cache folder and opened with ``np.load(mmap_mode="r")`` after
that: the operating system pages in only the windows a batch touches, so even a
corpus larger than memory works.

**The cache key.** A token file is only valid for the exact text *and* the exact
tokenizer that produced it: retrain the tokenizer with another vocabulary size and
the same text maps to different ids. The file name is therefore a hash of both:
the SHA-256 of the text's UTF-8 bytes and the SHA-256 of the tokenizer's own saved
file (``tokenizer.save``), so a changed tokenizer can never reuse stale tokens.

**The dtype.** Ids are stored as ``uint16`` when every id fits (a vocabulary of at
most 65,536 tokens, which GPT-2's 50,257 does), halving the file against ``uint32``,
the fallback for larger vocabularies. Batches convert windows to ``int64``.

**The split.** The last ``validation_fraction`` of the tokens (10% by default) are
held out for validation. A contiguous tail, not a random sample, so no training
window overlaps a validation window except at the single boundary.

What this module leaves out on purpose: sharding into several files, parallel
encoding, and document boundaries (the corpus is one stream of text): a corpus
too large for one string is tokenized by ``shards.py`` instead.  ``token_chunks``
and ``token_counts`` read either kind a bounded piece at a time.
"""

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from npllm.data.download import user_cache_dir
from npllm.errors import SettingError
from npllm.io.atomic import atomic_write
from npllm.tokenizer import save_tokenizer_file

UINT16_VOCABULARY_LIMIT = 1 << 16
CHUNK_TOKENS = 1 << 24  # a pass over all the ids reads this many at a time


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id below ``vocab_size``."""
    return np.dtype(np.uint16 if vocab_size <= UINT16_VOCABULARY_LIMIT else np.uint32)


def tokenizer_fingerprint(tokenizer) -> str:
    """SHA-256 of the tokenizer's saved form: equal fingerprints mean equal tokenizers."""
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tokenizer.txt"
        save_tokenizer_file(tokenizer, path)
        digest.update(path.name.encode() + b"\0" + path.read_bytes())  # (the name: the keys of older caches stay)
    return digest.hexdigest()


def text_sha256(text: str) -> str:
    """SHA-256 of the text's UTF-8 bytes: equal fingerprints mean equal texts."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def token_cache_path(text: str, tokenizer, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the token ids of ``text`` under ``tokenizer`` are (or will be) cached."""
    key = hashlib.sha256(f"{text_sha256(text)} {tokenizer_fingerprint(tokenizer)}".encode()).hexdigest()
    folder = user_cache_dir(cache_dir) / "tokens"
    folder.mkdir(exist_ok=True)
    return folder / f"{key[:32]}.npy"


def encode_to_array(text: str, tokenizer) -> np.ndarray:
    """All of ``text`` as token ids, in the smallest dtype the vocabulary allows."""
    return np.asarray(tokenizer.encode_ordinary(text), dtype=token_dtype(tokenizer.vocab_size))


def load_or_encode(text: str, tokenizer, cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """The token ids of ``text``, memory-mapped from the cache; encoded and cached on first use."""
    path = token_cache_path(text, tokenizer, cache_dir)
    if not path.is_file():
        with atomic_write(path) as file:
            np.save(file, encode_to_array(text, tokenizer))
    return np.load(path, mmap_mode="r")


def split_tokens(tokens: np.ndarray, validation_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation): the first tokens and the last ``validation_fraction`` of them, as views."""
    if not 0.0 < validation_fraction < 1.0:
        raise SettingError(f"`validation_fraction` must be between 0 and 1, got {validation_fraction}")
    n_train = len(tokens) - int(len(tokens) * validation_fraction)
    return tokens[:n_train], tokens[n_train:]


def token_chunks(tokens):
    """The ids in order, ``CHUNK_TOKENS`` at a time: of an array, or of shards (``ShardedTokens.chunks``)."""
    if hasattr(tokens, "chunks"):
        return tokens.chunks(CHUNK_TOKENS)
    return (tokens[first:first + CHUNK_TOKENS] for first in range(0, len(tokens), CHUNK_TOKENS))


def token_counts(tokens, vocab_size: int) -> np.ndarray:
    """How often each id below ``vocab_size`` occurs, in int64, counted a chunk at a time."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for chunk in token_chunks(tokens):
        counts += np.bincount(chunk, minlength=vocab_size)[:vocab_size]
    return counts
