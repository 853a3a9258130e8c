"""BPETokenizer: the pieces put together behind one object, with tiktoken's behaviour.

A tokenizer is three things: a split pattern, a ranked vocabulary of byte strings, and a
few special tokens. Encoding cuts text into chunks with the pattern, turns each chunk into
token ids by merging bytes lowest rank first (``encode.py``), and concatenates. Decoding
looks each id up and joins the bytes.

Special tokens such as ``<|endoftext|>`` mark document boundaries and other control
signals. They must never appear by accident: if a web page happens to contain the text
"<|endoftext|>", encoding it as the special token would let ordinary text forge a control
signal. So, as in tiktoken:

* ``encode_ordinary`` treats all text as ordinary text;
* ``encode`` raises ``ValueError`` when the text contains a special token's string that is
  disallowed (by default: all of them), and encodes it as the special token only when it
  is allowed (``allowed_special={"<|endoftext|>"}`` or ``"all"``). With
  ``disallowed_special="none"`` (or ``()``) the text is silently encoded as ordinary text.

Decoding joins bytes, and a token boundary can fall inside a UTF-8 character, so
``decode_bytes`` returns the exact bytes and ``decode`` replaces invalid sequences with
U+FFFD rather than failing: a model's sampled ids must always be printable.

Encoding keeps a cache from chunk to ids. Natural text repeats its words, code repeats
its keywords and indentation, so most chunks are found in the cache and never merged.
Filling that cache makes tens of thousands of small lists, and each batch of new objects
wakes Python's cycle collector, which then walks every live object (the cache included)
looking for reference cycles that lists of ints cannot form. Encoding therefore pauses
the collector while it runs (``collector_paused``): about a tenth of the time, saved.

Left out on purpose: normalization (NFC and friends), which byte-level BPE does not need,
and threads (encode_batch runs in one thread and shares the cache).
"""

import contextlib
import gc
import re
from itertools import chain

from npllm.errors import SettingError
from npllm.tokenizer import files
from npllm.tokenizer.encode import PairLookup, encode_chunk, encode_chunks, pair_table
from npllm.tokenizer.naive import NUM_BYTES, count_chunks, token_bytes, without_lone_surrogates
from npllm.tokenizer.patterns import PATTERNS, resolve_pattern
from npllm.tokenizer.splitter import compile_splitter
from npllm.tokenizer.train import train_bpe

MAX_CACHED_CHUNKS = 1 << 20  # the chunk cache is emptied when it grows past this many chunks
MIN_BATCH = 1000  # from this many new chunks to merge, NumPy's lockstep loop beats one loop per chunk


class BPETokenizer:
    """Byte-level BPE with a regex pre-split; ids are identical to tiktoken's for the same ranks."""

    def __init__(self, mergeable_ranks: dict[bytes, int], pattern: str = "gpt4", special_tokens: dict[str, int] | None = None):
        self._pattern = resolve_pattern(pattern)
        self._ranks = check_ranks(mergeable_ranks)
        self._special_tokens = check_special_tokens(special_tokens or {}, self._ranks)
        self._id_to_bytes = {rank: token for token, rank in self._ranks.items()}
        self._id_to_bytes.update({token_id: token.encode("utf-8") for token, token_id in self._special_tokens.items()})
        self._split = compile_splitter(self._pattern)
        self._byte_ids = [self._ranks[bytes([byte])] for byte in range(NUM_BYTES)]
        self._pairs = pair_table(self._ranks)
        self._pair_lookup = PairLookup(self._pairs, self._byte_ids)
        self._chunk_cache = {}

    # ---- training ----

    @classmethod
    def train(cls, text_or_texts, vocab_size: int, pattern: str = "gpt4", special_tokens=None, verbose: bool = False) -> "BPETokenizer":
        """Learn a tokenizer of ``vocab_size`` ids (256 bytes + merges + special tokens) from text.

        ``special_tokens`` is a list of strings, numbered right after the learned tokens, or a
        dict from string to id. Training stops early if the text runs out of pairs to merge.
        """
        special_list = list(special_tokens or ())
        num_merges = vocab_size - NUM_BYTES - len(special_list) if isinstance(vocab_size, int) else -1
        if num_merges < 0:
            raise SettingError(
                f"`vocab_size` must be an integer of at least 256 (the bytes) + {len(special_list)} (special tokens)"
                f" = {NUM_BYTES + len(special_list)}, got {vocab_size!r}"
            )
        pattern = resolve_pattern(pattern)
        merges = train_bpe(count_chunks(text_or_texts, pattern), num_merges, verbose=verbose)
        ranks = {}
        for token in token_bytes(merges):
            ranks.setdefault(token, len(ranks))  # two merges can spell the same bytes; keep the first
        if not isinstance(special_tokens, dict):
            special_tokens = number_special_tokens(special_list, first_id=len(ranks))
        return cls(ranks, pattern, special_tokens)

    # ---- properties ----

    @property
    def pattern(self) -> str:
        """The split regex, as a string (tiktoken's ``pat_str``)."""
        return self._pattern

    @property
    def mergeable_ranks(self) -> dict[bytes, int]:
        """A copy of the ranked vocabulary: token bytes -> rank (which is also the token id)."""
        return dict(self._ranks)

    @property
    def special_tokens(self) -> dict[str, int]:
        """A copy of the special tokens: string -> id."""
        return dict(self._special_tokens)

    @property
    def vocab_size(self) -> int:
        """One more than the largest id, so an embedding table of this many rows covers every id."""
        return max(self._id_to_bytes) + 1

    def unused_ids(self) -> list[int]:
        """The ids below ``vocab_size`` that stand for nothing: no text encodes to them.

        Training leaves them when the text runs out of pairs to merge before the
        vocabulary is full (the special tokens keep their places at its top).
        A model has rows for them, and an untrained one may score them, so a
        writer of text must never choose one (``generate_tokens``' ``banned_tokens``).
        """
        return sorted(set(range(self.vocab_size)) - set(self._id_to_bytes))

    def __repr__(self) -> str:
        pattern_name = next((name for name, regex in PATTERNS.items() if regex == self._pattern), "custom")
        return f"BPETokenizer(vocab_size={self.vocab_size}, pattern={pattern_name!r}, special_tokens={list(self._special_tokens)})"

    # ---- encoding ----

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids for ``text``, treating any special token strings in it as ordinary text."""
        require_str(text)
        with collector_paused():
            chunks = self._split(without_lone_surrogates(text))
            cache = self._chunk_cache
            try:
                return list(chain.from_iterable(map(cache.__getitem__, chunks)))
            except KeyError:
                pass  # some chunks are new: encode each distinct new chunk once, then look all up again
            if len(cache) > MAX_CACHED_CHUNKS:
                cache.clear()
            cache.update(self._encode_new_chunks(set(chunks).difference(cache)))
            return list(chain.from_iterable(map(cache.__getitem__, chunks)))

    def _encode_new_chunks(self, chunks) -> dict[str, list[int]]:
        """chunk -> ids for distinct chunks: whole tokens looked up, the rest merged (in lockstep when many)."""
        encoded, to_merge = {}, {}
        for chunk in chunks:
            chunk_bytes = chunk.encode("utf-8")
            rank = self._ranks.get(chunk_bytes)
            if rank is not None:
                encoded[chunk] = [rank]  # the whole chunk is a token: common for frequent words
            else:
                to_merge[chunk] = chunk_bytes
        if len(to_merge) >= MIN_BATCH:
            merged = encode_chunks(list(to_merge.values()), self._byte_ids, self._pair_lookup)
        else:
            merged = [encode_chunk(chunk, self._byte_ids, self._pairs) for chunk in to_merge.values()]
        encoded.update(zip(to_merge, merged))
        return encoded

    def encode(self, text: str, allowed_special="none", disallowed_special="all") -> list[int]:
        """Token ids for ``text`` with tiktoken's rules for special tokens (see the module docstring).

        ``allowed_special`` and ``disallowed_special`` each take "all", "none", or a set of
        special token strings. Disallowed special text raises ValueError naming the token.
        """
        require_str(text)
        allowed = self._special_token_set(allowed_special, "allowed_special")
        disallowed = self._special_token_set(disallowed_special, "disallowed_special")
        if disallowed_special == "all":
            disallowed -= allowed
        if disallowed:
            found = special_token_regex(disallowed).search(text)
            if found:
                raise SettingError(
                    f"the text contains the special token {found.group()!r}, which is disallowed; pass "
                    f"allowed_special={{{found.group()!r}}} to encode it as that token, or "
                    f"disallowed_special='none' to encode it as ordinary text"
                )
        if not allowed:
            return self.encode_ordinary(text)
        ids, start = [], 0
        for found in special_token_regex(allowed).finditer(text):
            ids += self.encode_ordinary(text[start : found.start()])
            ids.append(self._special_tokens[found.group()])
            start = found.end()
        return ids + self.encode_ordinary(text[start:])

    def encode_batch(self, texts: list[str], allowed_special="none", disallowed_special="all") -> list[list[int]]:
        """``encode`` applied to each text in turn."""
        return [self.encode(text, allowed_special, disallowed_special) for text in texts]

    def _special_token_set(self, choice, argument_name: str) -> set[str]:
        if choice == "all":
            return set(self._special_tokens)
        if choice == "none":
            return set()
        if isinstance(choice, str):
            raise ValueError(f"{argument_name} must be 'all', 'none' or a set of special tokens, got the string {choice!r}")
        unknown = set(choice) - set(self._special_tokens)
        if unknown:
            raise ValueError(f"{argument_name} names {sorted(unknown)}, which are not special tokens of this tokenizer")
        return set(choice)

    # ---- decoding ----

    def decode_bytes(self, ids) -> bytes:
        """The exact bytes the ids stand for."""
        try:
            return b"".join([self._id_to_bytes[token_id] for token_id in ids])
        except KeyError as error:
            raise SettingError(f"unknown token id {error.args[0]!r}: this tokenizer has no such id") from None

    def decode(self, ids, errors: str = "replace") -> str:
        """The text the ids stand for; invalid UTF-8 (a character cut between tokens) becomes U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    # ---- files ----

    def save(self, path) -> None:
        """Write pattern, special tokens and ranks to ``path`` (format: see ``files.py``)."""
        files.write_tokenizer_file(path, self._pattern, self._ranks, self._special_tokens)

    @classmethod
    def load(cls, path) -> "BPETokenizer":
        """Read a tokenizer written by ``save``; a file that reads but does not make a tokenizer names itself too."""
        pattern, ranks, special_tokens = files.read_tokenizer_file(path)
        try:
            return cls(ranks, pattern, special_tokens)
        except ValueError as error:  # a bad regex, a missing byte, an id used twice
            raise files.TokenizerFileError(path, str(error)) from error

    def save_tiktoken(self, path) -> None:
        """Write the ranks as a tiktoken rank file (the pattern and special tokens are not part of that format)."""
        files.write_tiktoken_file(path, self._ranks)

    @classmethod
    def from_tiktoken_file(cls, path, pattern: str = "gpt4", special_tokens: dict[str, int] | None = None) -> "BPETokenizer":
        """A tokenizer from a tiktoken rank file, with the pattern and special tokens given here."""
        return cls(files.read_tiktoken_file(path), pattern, special_tokens)

    @classmethod
    def from_gpt2_files(cls, encoder_json_path, vocab_bpe_path, pattern: str = "gpt2") -> "BPETokenizer":
        """GPT-2's own tokenizer, from its ``encoder.json`` and ``vocab.bpe``."""
        ranks, special_tokens = files.read_gpt2_files(encoder_json_path, vocab_bpe_path)
        return cls(ranks, pattern, special_tokens)


@contextlib.contextmanager
def collector_paused():
    """Switch off the cycle collector inside the block (if it was on), and back on after, even on error."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def require_str(text) -> None:
    if not isinstance(text, str):
        raise TypeError(f"encode expects str, got {type(text).__name__}")


def special_token_regex(tokens: set[str]) -> re.Pattern:
    """A regex matching any of ``tokens``, longest first so that a longer token wins over its prefix."""
    return re.compile("|".join(re.escape(token) for token in sorted(tokens, key=lambda token: (-len(token), token))))


def number_special_tokens(tokens: list[str], first_id: int) -> dict[str, int]:
    """Give a list of special token strings consecutive ids from ``first_id``; a repeat is an error."""
    numbered = {}
    for token in tokens:
        if token in numbered:
            raise ValueError(f"special token {token!r} is listed twice")
        numbered[token] = first_id + len(numbered)
    return numbered


def check_ranks(ranks: dict[bytes, int]) -> dict[bytes, int]:
    """A validated copy of a ranked vocabulary: bytes keys, distinct non-negative int ranks, all 256 bytes present."""
    ranks = dict(ranks)
    for token, rank in ranks.items():
        if not isinstance(token, bytes) or not token:
            raise ValueError(f"mergeable_ranks keys must be non-empty bytes, got {token!r}")
        if not isinstance(rank, int) or rank < 0:
            raise ValueError(f"rank of {token!r} must be a non-negative integer, got {rank!r}")
    if len(set(ranks.values())) != len(ranks):
        raise ValueError("mergeable_ranks gives the same rank to two tokens")
    missing = [byte for byte in range(NUM_BYTES) if bytes([byte]) not in ranks]
    if missing:
        raise ValueError(f"mergeable_ranks lacks {len(missing)} single-byte tokens (first: {bytes([missing[0]])!r}); byte-level BPE needs all 256")
    return ranks


def check_special_tokens(special_tokens: dict[str, int], ranks: dict[bytes, int]) -> dict[str, int]:
    """A validated copy of the special tokens: non-empty strings with distinct ids that no ranked token uses."""
    if not isinstance(special_tokens, dict):
        raise ValueError(f"special_tokens must be a dict from string to id, got {type(special_tokens).__name__}")
    used_ids = set(ranks.values())
    for token, token_id in special_tokens.items():
        if not isinstance(token, str) or not token:
            raise ValueError(f"special tokens must be non-empty strings, got {token!r}")
        if not isinstance(token_id, int) or token_id < 0:
            raise ValueError(f"special token {token!r} needs a non-negative integer id, got {token_id!r}")
        if token_id in used_ids:
            raise ValueError(f"special token {token!r} has id {token_id}, which another token already uses")
        used_ids.add(token_id)
    return dict(special_tokens)
