"""BART's tokenizer: GPT-2's byte-level BPE, with fairseq's ids and ``<s> ... </s>`` around every text.

BART (like RoBERTa) kept GPT-2's merges, its split pattern and its 256 byte
characters, but renumbered the tokens: fairseq's dictionary lists them by
frequency in its training data, after four special tokens, so ``vocab.json``
reads ``{"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, ".": 4, "Ġthe": 5, ...}``
and ends with ``"<mask>"``.  The ids no longer follow the merges' order,
which is what ``BPETokenizer`` ranks by (its id *is* its merge priority), so
this tokenizer keeps two numberings:

    text --BPETokenizer, ranked by merges.txt's order--> ranks --id_of_rank--> BART's ids

The ``BPETokenizer`` inside ranks the 256 bytes 0..255 and the token made by
merge line i at 256 + i, which merges exactly as GPT-2's files say; a table
maps each rank to the id ``vocab.json`` gives its token, and back.  (GPT-2's
own files need no table: their ids are in merge order, see ``files.py``.)

Special tokens are BART's five, found in ``vocab.json`` by name: ``<s>``
(bos), ``<pad>``, ``</s>`` (eos), ``<unk>`` and ``<mask>``.  ``encode``
frames the text as ``<s> text </s>`` (what ``BartTokenizer`` does by
default) and reads a special token's string in the text as that token,
spaces around it left as they are (``transformers`` 5's ``BartTokenizer``
does the same; older versions stripped the spaces before ``<mask>``).
``decode`` leaves the special tokens out unless asked to keep them.

``save`` writes vocab.json, merges.txt and the two small json files that
make ``AutoTokenizer`` build a ``BartTokenizer``.  Left out: the
``add_prefix_space`` option (a leading space added to the text), and
tokenizer.json (BART folders carry vocab.json and merges.txt).
"""

import json
import re
from pathlib import Path

import numpy as np

from npllm.errors import SettingError
from npllm.io.atomic import atomic_write_text
from npllm.tokenizer.files import (GPT2_BYTE_TO_CHAR, LineCursor, TokenizerFileError, gpt2_merges, gpt2_spelling,
                                   read_encoder_json, read_lines, read_merge_lines)
from npllm.tokenizer.naive import NUM_BYTES
from npllm.tokenizer.patterns import GPT2_PATTERN
from npllm.tokenizer.tokenizer import BPETokenizer

VOCAB_FILE, MERGES_FILE = "vocab.json", "merges.txt"
TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_FILE = "tokenizer_config.json", "special_tokens_map.json"
ROLES = {"bos_token": "<s>", "pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>", "mask_token": "<mask>"}
MASK = ROLES["mask_token"]


class BARTTokenizer:
    """Byte-level BPE with GPT-2's merges and BART's ids: ``encode(text)`` -> ``[<s>, ..., </s>]``."""

    def __init__(self, bpe: BPETokenizer, id_of_rank: dict[int, int], special_tokens: dict[str, int],
                 unmerged: dict[str, int] | None = None):
        """``bpe`` ranks tokens by merge order; ``id_of_rank`` gives each rank's BART id; ``special_tokens`` BART's five.

        ``unmerged``: entries of vocab.json that no merge makes (``<|endoftext|>``
        in BART's): never written by ``encode``, decoded as their text.
        """
        missing = [token for token in ROLES.values() if token not in special_tokens]
        if missing:
            raise ValueError(f"BARTTokenizer: no id for the special token {missing[0]!r}")
        ranks = sorted(id_of_rank)
        if ranks != sorted(bpe.mergeable_ranks.values()):
            raise ValueError("BARTTokenizer: id_of_rank must give an id to every rank of the BPE tokenizer")
        self.bpe, self.special_tokens = bpe, dict(special_tokens)
        self._ids = np.zeros(max(ranks) + 1, dtype=np.int64)  # rank -> id
        self._ids[ranks] = [id_of_rank[rank] for rank in ranks]
        self._rank_of_id = {token_id: rank for rank, token_id in id_of_rank.items()}
        self._token_of_special = {token_id: token for token, token_id in special_tokens.items()}
        self.unmerged = dict(unmerged or {})
        self._bytes_of_unmerged = {token_id: _spelled_bytes(token) for token, token_id in self.unmerged.items()}
        taken = [*self._rank_of_id, *self._token_of_special, *self._bytes_of_unmerged]
        if len(self._rank_of_id) != len(ranks) or len(set(taken)) != len(taken):
            raise ValueError("BARTTokenizer: two tokens share an id")
        specials = sorted(special_tokens, key=len, reverse=True)  # the longest first, when one contains another
        self._special_regex = re.compile("|".join(map(re.escape, specials)))

    @classmethod
    def from_files(cls, vocab_path, merges_path) -> "BARTTokenizer":
        """BART's tokenizer from its ``vocab.json`` and ``merges.txt``."""
        vocab = read_encoder_json(vocab_path)
        char_to_byte = {char: byte for byte, char in GPT2_BYTE_TO_CHAR.items()}
        ranks, id_of_rank = {}, {}
        for byte, char in GPT2_BYTE_TO_CHAR.items():
            if char not in vocab:
                raise TokenizerFileError(vocab_path, f"no entry for byte {byte:#04x} (written {char!r})")
            ranks[bytes([byte])], id_of_rank[byte] = byte, vocab[char]
        cursor = LineCursor(merges_path, read_lines(merges_path))
        for rank, (_, merged, token) in enumerate(read_merge_lines(cursor, vocab, char_to_byte), start=NUM_BYTES):
            ranks[token], id_of_rank[rank] = rank, vocab[merged]
        special_tokens = {token: vocab[token] for token in ROLES.values() if token in vocab}
        placed = {*id_of_rank.values(), *special_tokens.values()}
        unmerged = {token: token_id for token, token_id in vocab.items() if token_id not in placed}
        try:
            return cls(BPETokenizer(ranks, GPT2_PATTERN), id_of_rank, special_tokens, unmerged)
        except ValueError as error:
            raise TokenizerFileError(vocab_path, str(error).removeprefix("BARTTokenizer: ")) from error

    @classmethod
    def from_bpe(cls, tokenizer: BPETokenizer) -> "BARTTokenizer":
        """A BPETokenizer whose special tokens include BART's five, as a BARTTokenizer (its ids unchanged)."""
        ranks = tokenizer.mergeable_ranks
        specials = {token: token_id for token, token_id in tokenizer.special_tokens.items() if token in ROLES.values()}
        return cls(BPETokenizer(ranks, tokenizer.pattern), {rank: rank for rank in ranks.values()}, specials)

    # ---- the special tokens ----

    @property
    def bos_id(self) -> int:
        return self.special_tokens["<s>"]

    @property
    def pad_id(self) -> int:
        return self.special_tokens["<pad>"]

    @property
    def eos_id(self) -> int:
        return self.special_tokens["</s>"]

    @property
    def mask_id(self) -> int:
        return self.special_tokens[MASK]

    @property
    def vocab_size(self) -> int:
        """One more than the largest id."""
        return int(max(self._ids.max(), *self.special_tokens.values(), *self.unmerged.values())) + 1

    def __repr__(self) -> str:
        return f"BARTTokenizer(vocab_size={self.vocab_size})"

    # ---- encoding and decoding ----

    def encode_ordinary(self, text: str) -> list[int]:
        """BART's ids for ``text`` as ordinary text (special tokens' strings too), without ``<s>`` and ``</s>``."""
        return self._ids[self.bpe.encode_ordinary(text)].tolist()

    def encode(self, text: str) -> list[int]:
        """``<s>`` + the ids of ``text`` + ``</s>``; a special token's string in the text is that token."""
        ids, start = [self.bos_id], 0
        for found in self._special_regex.finditer(text):
            ids += self.encode_ordinary(text[start:found.start()])
            ids.append(self.special_tokens[found.group()])
            start = found.end()
        return ids + self.encode_ordinary(text[start:]) + [self.eos_id]

    def decode(self, ids, skip_special_tokens: bool = True, errors: str = "replace") -> str:
        """The text of ``ids``: special tokens left out (or written as their strings); bad UTF-8 becomes U+FFFD."""
        pieces, run = [], []
        for token_id in (int(i) for i in ids):
            if token_id in self._token_of_special:
                pieces.append(self.bpe.decode_bytes(run))
                run = []
                if not skip_special_tokens:
                    pieces.append(self._token_of_special[token_id].encode("utf-8"))
            elif token_id in self._rank_of_id:
                run.append(self._rank_of_id[token_id])
            elif token_id in self._bytes_of_unmerged:
                pieces += [self.bpe.decode_bytes(run), self._bytes_of_unmerged[token_id]]
                run = []
            else:
                raise SettingError(f"unknown token id {token_id}: this tokenizer has no such id")
        pieces.append(self.bpe.decode_bytes(run))
        return b"".join(pieces).decode("utf-8", errors=errors)

    # ---- files ----

    def save(self, folder, model_max_length: int = 1024) -> None:
        """Write vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json into ``folder``."""
        folder = Path(folder)
        if self.bpe.pattern != GPT2_PATTERN:
            raise ValueError("BART's files hold GPT-2's split pattern only; this tokenizer splits with another")
        by_rank = sorted(self.bpe.mergeable_ranks.items(), key=lambda item: item[1])
        vocab = {gpt2_spelling(token): int(self._ids[rank]) for token, rank in by_rank}
        vocab.update({**self.special_tokens, **self.unmerged})
        vocab = dict(sorted(vocab.items(), key=lambda item: item[1]))
        merges = [f"{left} {right}" for left, right in gpt2_merges(self.bpe.mergeable_ranks)]  # earliest first
        atomic_write_text(folder / VOCAB_FILE, json.dumps(vocab, ensure_ascii=False))
        atomic_write_text(folder / MERGES_FILE, "\n".join(["#version: 0.2", *merges]) + "\n")
        config = {"tokenizer_class": "BartTokenizer", "model_max_length": model_max_length,
                  "add_prefix_space": False, "errors": "replace", **ROLES}
        atomic_write_text(folder / TOKENIZER_CONFIG_FILE, json.dumps(config, indent=2) + "\n")
        atomic_write_text(folder / SPECIAL_TOKENS_FILE, json.dumps(ROLES, indent=2) + "\n")

    @classmethod
    def from_folder(cls, folder) -> "BARTTokenizer":
        return cls.from_files(Path(folder) / VOCAB_FILE, Path(folder) / MERGES_FILE)


def _spelled_bytes(token: str) -> bytes:
    """A vocab.json entry's bytes: GPT-2's byte characters undone, or (not spelled in them) its UTF-8."""
    char_to_byte = {char: byte for byte, char in GPT2_BYTE_TO_CHAR.items()}
    if all(char in char_to_byte for char in token):
        return bytes(char_to_byte[char] for char in token)
    return token.encode("utf-8")


__all__ = ["BARTTokenizer"]
