"""A corpus of any size as token shards: encoded on every core, written in bounded files, resumable.

``tokens.py`` keeps a small corpus as one token file.  A Wikipedia dump is
tokenized here instead, by ``tokenize_to_shards(source, tokenizer, folder)``:

1. **Documents.** The source (``streams.DocumentSource``) yields pieces of
   documents; each document's ids end with the tokenizer's end-of-text token
   (``<|endoftext|>``, or BERT's ``[SEP]``), so the stream of ids keeps its
   boundaries.  A document whose text is empty (an article that was all
   templates) leaves no ids.
2. **The split**, by document and deterministic: document number ``d`` is held
   out for validation when the SHA-256 of ``d`` falls in the first
   ``validation_fraction`` of its range.  The same source always splits the same
   way, whatever the shard size or the number of processes.
3. **Processes.** Batches of about ``BATCH_CHARS`` characters go to
   ``workers`` processes (``multiprocessing``, spawned), each holding its own
   BPE encoder loaded from the folder's tokenizer file; they clean wiki markup
   and encode.  Results come back in order, and at most ``2 x workers`` batches
   are in flight, so memory stays flat however long the stream.
4. **Shards.** Each split's ids are appended to an open shard file
   (``train-00000.bin``, ``validation-00000.bin``: raw ``uint16`` ids when the
   vocabulary has at most 65,536, else ``uint32``), named ``.partial`` while it
   is written.  When a shard reaches ``shard_tokens`` ids (after the batch that
   fills it, so shards are about that size), every open shard is closed and
   renamed (a batch holds at most ``shard_tokens`` characters, so a shard never
   reaches twice that), and ``index.json`` is replaced atomically with their records: file,
   split, documents, tokens, SHA-256, and how many pieces of the source had been
   read.  That is a *checkpoint*.
5. **Resuming.** A killed tokenization leaves its last checkpoint's index and
   some ``.partial`` files.  Run again with the same source and tokenizer
   (``index.json`` records the source's fingerprint and the tokenizer's), it
   deletes the partial files, checks every listed shard (size and SHA-256),
   drops the first damaged one's checkpoint and all after it, skips the pieces
   already encoded and carries on.  A finished folder is checked the same way,
   so a truncated shard is rebuilt, never trained on.

``open_shards(folder)`` is what training reads: the index checked against the
files (every shard present, at its recorded size, no stray shard), and each
split as ``ShardedTokens``, the shards memory-mapped and read as one sequence,
so the seeded sampler of ``batches.py`` draws windows across shards exactly as
from one array.

Left out on purpose: deduplication, quality filters, and shards shared between
machines (every rank reads the same folder).
"""

import hashlib
import json
import multiprocessing
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path

import numpy as np

from npllm.data.streams import DocumentSource, Piece
from npllm.data.tokens import token_dtype, tokenizer_fingerprint
from npllm.errors import NpllmError, SettingError
from npllm.io.atomic import atomic_write_text, fsync_directory
from npllm.tokenizer import BPETokenizer

FORMAT = "npllm-shards-1"
INDEX_FILE = "index.json"
TOKENIZER_FILE = "tokenizer.txt"
SPLITS = ("train", "validation")
END_OF_TEXT_TOKENS = ("<|endoftext|>", "[SEP]")  # GPT's document end, else BERT's
BATCH_CHARS = 1 << 20  # characters per batch sent to a process: large enough that sending it costs little
DTYPES = {"uint16": np.uint16, "uint32": np.uint32}
# What a folder's shards are made from and how: a resumed tokenization must agree on all of it.
# (Not the shard size: a run resumed with another one continues the same stream of ids in other files.)
SETTINGS = ("source_fingerprint", "text_field", "tokenizer_sha256", "dtype", "validation_fraction")


class ShardError(NpllmError):
    """A shard folder that cannot be used as it is: a damaged shard, an index that disagrees with its files."""


def end_of_text_id(tokenizer: BPETokenizer) -> int:
    """The id that ends every document: ``<|endoftext|>``, or ``[SEP]`` for a BERT's tokenizer."""
    for token in END_OF_TEXT_TOKENS:
        if token in tokenizer.special_tokens:
            return tokenizer.special_tokens[token]
    raise SettingError(f"the tokenizer has none of the special tokens {', '.join(END_OF_TEXT_TOKENS)}"
                       " to end each document with")


def shard_dtype(vocab_size: int, dtype: str = "auto") -> np.dtype:
    """The shards' dtype: ``auto`` is the smallest that holds every id; a named one must hold them."""
    if dtype == "auto":
        dtype = token_dtype(vocab_size).name
    if dtype not in DTYPES:
        raise SettingError(f"`dtype` must be auto, uint16 or uint32, got {dtype!r}")
    if vocab_size > np.iinfo(DTYPES[dtype]).max + 1:
        raise SettingError(f"the vocabulary of {vocab_size:,} ids is too large for `dtype` {dtype}"
                           f" (at most {np.iinfo(DTYPES[dtype]).max + 1:,}); use a wider dtype or auto")
    return np.dtype(DTYPES[dtype])


def in_validation(document: int, fraction: float) -> bool:
    """Whether document number ``document`` is held out: its hash falls in the first ``fraction`` of the range."""
    key = int.from_bytes(hashlib.sha256(str(document).encode()).digest()[:8], "big")
    return key < fraction * 2.0 ** 64


# ---- the processes --------------------------------------------------------

_worker = {}  # in each process: its tokenizer, the end-of-text id and the dtype


def start_worker(tokenizer_path: str, end_of_text: int, dtype: str):
    tokenizer = BPETokenizer.load(tokenizer_path)
    _worker.update(tokenizer=tokenizer, end_of_text=end_of_text, dtype=np.dtype(dtype))


def encode_batch(pieces: list[Piece]) -> tuple[np.ndarray, np.ndarray]:
    """(the ids of every piece, concatenated; how many ids each piece has): cleaned, encoded, documents ended."""
    tokenizer, end_of_text = _worker["tokenizer"], _worker["end_of_text"]
    ids, lengths = [], []
    for piece in pieces:
        piece_ids = tokenizer.encode_ordinary(piece.plain_text())
        if piece.ends_document and piece_ids:
            piece_ids.append(end_of_text)
        ids.extend(piece_ids)
        lengths.append(len(piece_ids))
    return np.asarray(ids, dtype=_worker["dtype"]), np.asarray(lengths, dtype=np.int64)


def ordered_map(function, items, workers: int, initializer, initargs) -> Iterator:
    """``map(function, items)`` on ``workers`` processes, in order, at most ``2 x workers`` items in flight.

    (``Pool.imap`` would read ``items`` to their end at once: a whole corpus in memory.)
    One worker, or a stream of a single item, runs in this process, with no pool to start.
    """
    items = iter(items)
    first = list(islice(items, 2))
    if workers == 1 or len(first) < 2:
        initializer(*initargs)
        yield from map(function, chain(first, items))
        return
    items = chain(first, items)
    with multiprocessing.get_context("spawn").Pool(workers, initializer, initargs) as pool:
        pending = deque()
        for item in items:
            pending.append(pool.apply_async(function, (item,)))
            if len(pending) >= 2 * workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


# ---- writing ----------------------------------------------------------------

class ShardWriter:
    """One shard being written: ids appended to ``NAME.partial``, hashed as they go; renamed when closed."""

    def __init__(self, folder: Path, name: str, split: str):
        self.path, self.split = folder / name, split
        self.partial = self.path.with_name(name + ".partial")
        self.file = open(self.partial, "wb")
        self.digest, self.tokens, self.documents = hashlib.sha256(), 0, 0

    def write(self, ids: np.ndarray, documents: int):
        data = ids.tobytes()
        self.file.write(data)
        self.digest.update(data)
        self.tokens += len(ids)
        self.documents += documents

    def close(self, pieces_read: int, checkpoint: int) -> dict:
        """Flush, rename to its final name, and return its record for the index."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.partial, self.path)
        return {"file": self.path.name, "split": self.split, "documents": self.documents, "tokens": self.tokens,
                "sha256": self.digest.hexdigest(), "pieces_read": pieces_read, "checkpoint": checkpoint}


@dataclass
class Progress:
    """Where a tokenization stands: the index so far, and the open shards."""

    folder: Path
    index: dict
    writers: dict  # split -> ShardWriter or None

    def shard_count(self, split: str) -> int:
        return sum(record["split"] == split for record in self.index["shards"])

    def writer(self, split: str) -> ShardWriter:
        if self.writers.get(split) is None:
            self.writers[split] = ShardWriter(self.folder, f"{split}-{self.shard_count(split):05d}.bin", split)
        return self.writers[split]

    def checkpoint(self, pieces_read: int, complete: bool = False):
        """Close the open shards and record them (and where the source stands) in the index, atomically."""
        number = 1 + max((record["checkpoint"] for record in self.index["shards"]), default=-1)
        for split in SPLITS:
            if self.writers.get(split) is not None:
                self.index["shards"].append(self.writers[split].close(pieces_read, number))
                self.writers[split] = None
        self.index.update(pieces_read=pieces_read, complete=complete)
        fsync_directory(self.folder)
        write_index(self.folder, self.index)


def write_index(folder: Path, index: dict):
    atomic_write_text(folder / INDEX_FILE, json.dumps(index, indent=1) + "\n")


def read_index(folder: Path) -> dict:
    path = folder / INDEX_FILE
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ShardError(f"{path}: not a shard index ({error})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT or not isinstance(index.get("shards"), list):
        raise ShardError(f"{path}: not a shard index written by npllm tokenize")
    return index


def tokenize_to_shards(source: DocumentSource, tokenizer: BPETokenizer, folder, shard_tokens: int = 100_000_000,
                       validation_fraction: float = 0.05, workers: int | None = None, dtype: str = "auto",
                       log=print) -> Path:
    """Encode every document of ``source`` into shards in ``folder`` (see the module docstring); resumable."""
    if not shard_tokens >= 1:
        raise SettingError(f"`shard_tokens` must be at least 1, got {shard_tokens}")
    if not 0 < validation_fraction < 1:
        raise SettingError(f"`validation_fraction` must be between 0 and 1, got {validation_fraction}")
    workers = workers or os.cpu_count() or 1
    if not workers >= 1:
        raise SettingError(f"`workers` must be at least 1, got {workers}")
    token_type = shard_dtype(tokenizer.vocab_size, dtype)
    end_of_text = end_of_text_id(tokenizer)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    settings = {"source_fingerprint": source.fingerprint(), "text_field": source.text_field,
                "tokenizer_sha256": tokenizer_fingerprint(tokenizer), "dtype": token_type.name,
                "validation_fraction": validation_fraction}
    index = resume_index(folder, settings, log) or new_index(source, tokenizer, settings)
    progress = Progress(folder, {**index, "shard_tokens": shard_tokens}, {})
    if progress.index["complete"]:
        return folder
    tokenizer.save(folder / TOKENIZER_FILE)
    write_index(folder, progress.index)  # before any shard: a folder with shards but no index is another's
    skipped = progress.index["pieces_read"]
    if skipped:
        log(f"tokenize: resuming after {skipped:,} pieces ({len(progress.index['shards'])} shards kept)")
    batches = batched(islice(numbered(source.pieces()), skipped, None), min(BATCH_CHARS, shard_tokens))
    pieces_read = skipped
    try:
        for (numbers, pieces), (ids, lengths) in zip_results(batches, workers, folder, end_of_text, token_type):
            write_batch(progress, numbers, pieces, ids, lengths, validation_fraction)
            pieces_read += len(pieces)
            if any(writer is not None and writer.tokens >= shard_tokens for writer in progress.writers.values()):
                progress.checkpoint(pieces_read)
                shards = len(progress.index["shards"])
                log(f"tokenize: {shards} shard{'s' * (shards > 1)} written, {pieces_read:,} pieces read")
    except BaseException:  # a kill, Ctrl-C, a bad line: the partial shards stay behind, to be deleted on resume
        for writer in progress.writers.values():
            if writer is not None:
                writer.file.close()
        raise
    progress.checkpoint(pieces_read, complete=True)
    if not any(record["tokens"] for record in progress.index["shards"] if record["split"] == "train"):
        raise ShardError(f"the corpus {source.description} holds no text to train on")
    return folder


def zip_results(batches, workers, folder, end_of_text, token_type):
    """Each batch beside what the processes made of it, in order."""
    kept = deque()

    def pieces_only():
        for batch in batches:
            kept.append(batch)
            yield batch[1]

    results = ordered_map(encode_batch, pieces_only(), workers, start_worker,
                          (str(folder / TOKENIZER_FILE), end_of_text, token_type.name))
    for result in results:
        yield kept.popleft(), result


def write_batch(progress: Progress, numbers, pieces, ids, lengths, validation_fraction):
    """Append each piece's ids to its document's split."""
    ends = np.cumsum(lengths)
    for number, piece, end, length in zip(numbers, pieces, ends, lengths):
        if length:
            split = "validation" if in_validation(number, validation_fraction) else "train"
            progress.writer(split).write(ids[end - length:end], int(piece.ends_document))


def numbered(pieces) -> Iterator[tuple[int, Piece]]:
    """(the document number, the piece) for each piece."""
    document = 0
    for piece in pieces:
        yield document, piece
        document += piece.ends_document


def batched(numbered_pieces, chars: int) -> Iterator[tuple[list[int], list[Piece]]]:
    """Consecutive pieces grouped until they hold about ``chars`` characters."""
    numbers, pieces, size = [], [], 0
    for number, piece in numbered_pieces:
        numbers.append(number)
        pieces.append(piece)
        size += len(piece.text)
        if size >= chars:
            yield numbers, pieces
            numbers, pieces, size = [], [], 0
    if pieces:
        yield numbers, pieces


def new_index(source: DocumentSource, tokenizer: BPETokenizer, settings: dict) -> dict:
    return {"format": FORMAT, "source": source.description, "source_spec": source.spec, **settings,
            "vocab_size": tokenizer.vocab_size, "end_of_text": end_of_text_id(tokenizer),
            "pieces_read": 0, "complete": False, "shards": []}


def resume_index(folder: Path, settings: dict, log) -> dict | None:
    """The index of an earlier tokenization into ``folder`` with the same settings, its damaged tail dropped.

    None when there is none; refused when the folder holds another corpus's shards.
    """
    for partial in folder.glob("*.partial"):
        partial.unlink()
    if not (folder / INDEX_FILE).is_file():
        if any(folder.glob("*.bin")):
            raise ShardError(f"{folder} holds shard files but no {INDEX_FILE}; choose an empty `out_dir`")
        return None
    index = read_index(folder)
    differing = [name for name in SETTINGS if index.get(name) != settings[name]]
    if differing:
        raise ShardError(f"{folder} holds shards of another corpus or tokenizer ({', '.join(differing)} differ);"
                         " choose another `out_dir` or empty it")
    listed = {record["file"] for record in index["shards"]}
    for stray in folder.glob("*.bin"):  # renamed by a run killed before its index was written: made again
        if stray.name not in listed:
            stray.unlink()
    itemsize = np.dtype(index["dtype"]).itemsize
    for record in index["shards"]:
        problem = shard_problem(folder, record, itemsize, check_sha256=True)
        if problem:
            kept = [shard for shard in index["shards"] if shard["checkpoint"] < record["checkpoint"]]
            log(f"tokenize: {problem}; rebuilding from that shard on")
            for shard in index["shards"][len(kept):]:
                (folder / shard["file"]).unlink(missing_ok=True)
            index.update(shards=kept, complete=False, pieces_read=max((s["pieces_read"] for s in kept), default=0))
            write_index(folder, index)
            break
    return index


def shard_problem(folder: Path, record: dict, itemsize: int, check_sha256: bool) -> str | None:
    """What is wrong with one listed shard (missing, truncated, changed), or None."""
    path = folder / record["file"]
    if not path.is_file():
        return f"{path} is missing"
    expected = record["tokens"] * itemsize
    if path.stat().st_size != expected:
        return f"{path} has {path.stat().st_size:,} bytes, the index says {expected:,} (truncated or damaged)"
    if check_sha256:
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 22), b""):
                digest.update(block)
        if digest.hexdigest() != record["sha256"]:
            return f"{path} does not match its SHA-256 in the index (changed or damaged)"
    return None


# ---- reading ----------------------------------------------------------------

class ShardedTokens:
    """Memory-mapped shards read as one sequence: ``len()`` and integer-array indexing, like one array."""

    def __init__(self, arrays: list[np.ndarray]):
        self.arrays = [array for array in arrays if len(array)]
        lengths = np.array([len(array) for array in self.arrays], dtype=np.int64)
        self.ends = np.cumsum(lengths)
        self.starts = self.ends - lengths
        self.dtype = self.arrays[0].dtype if self.arrays else np.dtype(np.uint16)

    def __len__(self) -> int:
        return int(self.ends[-1]) if len(self.ends) else 0

    def __getitem__(self, index) -> np.ndarray:
        """The ids at the integer positions ``index`` (any shape), gathered from the shards that hold them."""
        index = np.asarray(index)
        if len(self.arrays) == 1:
            return self.arrays[0][index]
        flat = index.reshape(-1)
        shard = np.searchsorted(self.ends, flat, side="right")  # (N,) which shard holds each position
        gathered = np.empty(flat.shape, dtype=self.dtype)
        for number in np.unique(shard):
            here = shard == number
            gathered[here] = self.arrays[number][flat[here] - self.starts[number]]
        return gathered.reshape(index.shape)

    def chunks(self, size: int = 1 << 24) -> Iterator[np.ndarray]:
        """The ids in order, as views of at most ``size``: for a pass over all of them in little memory."""
        for array in self.arrays:
            for first in range(0, len(array), size):
                yield array[first:first + size]


@dataclass(frozen=True)
class Shards:
    """A shard folder opened for training."""

    folder: Path
    index: dict
    train: ShardedTokens
    validation: ShardedTokens

    @property
    def tokenizer_path(self) -> Path:
        return self.folder / TOKENIZER_FILE

    @property
    def end_of_text(self) -> int:
        return self.index["end_of_text"]

    def fingerprint(self) -> str:
        """SHA-256 over the shards' recorded hashes and the tokenizer's: equal fingerprints, equal token streams."""
        listed = " ".join(f"{record['split']}:{record['sha256']}" for record in self.index["shards"])
        return hashlib.sha256(f"{self.index['tokenizer_sha256']} {listed}".encode()).hexdigest()


def is_shard_folder(path) -> bool:
    return (Path(path) / INDEX_FILE).is_file()


def open_shards(folder) -> Shards:
    """The shards of ``folder``, checked against their index (cheaply: presence and size), memory-mapped."""
    folder = Path(folder)
    index = read_index(folder)
    rebuild = f"run npllm tokenize --data {index.get('source_spec', 'SOURCE')} --out {folder} to finish or rebuild it"
    if not index.get("complete"):
        raise ShardError(f"{folder}: the tokenization did not finish; {rebuild}")
    try:
        dtype = np.dtype(DTYPES[index["dtype"]])
        shard_dtype(index["vocab_size"], index["dtype"])
        listed = {record["file"] for record in index["shards"]}
    except (KeyError, TypeError) as error:
        raise ShardError(f"{folder / INDEX_FILE}: a malformed shard index ({error})") from None
    except SettingError as error:
        raise ShardError(f"{folder / INDEX_FILE}: {error}") from None
    stray = sorted({path.name for path in folder.glob("*.bin")} - listed)
    if stray:
        raise ShardError(f"{folder}: the index disagrees with its shards ({stray[0]} is not in {INDEX_FILE})")
    arrays = {split: [] for split in SPLITS}
    for record in index["shards"]:
        problem = shard_problem(folder, record, dtype.itemsize, check_sha256=False)
        if problem:
            raise ShardError(f"{problem}; {rebuild}")
        if record["split"] not in arrays:
            raise ShardError(f"{folder / INDEX_FILE}: shard {record['file']} has an unknown split {record['split']!r}")
        if record["tokens"]:
            arrays[record["split"]].append(np.memmap(folder / record["file"], dtype=dtype, mode="r",
                                                     shape=(record["tokens"],)))
    return Shards(folder, index, ShardedTokens(arrays["train"]), ShardedTokens(arrays["validation"]))
