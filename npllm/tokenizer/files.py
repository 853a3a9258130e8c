"""Tokenizer files: our own format, tiktoken's rank files, and GPT-2's encoder.json + vocab.bpe.

A byte-level BPE tokenizer is fully described by three things: the split pattern, the
ranked vocabulary (token bytes -> rank), and the special tokens (string -> id). Our
format writes exactly those, as UTF-8 text that can be read in an editor::

    npllm-bpe 1                      <- magic word and format version
    pattern "<the regex, as a JSON string>"
    special_tokens 1                 <- how many lines follow
    "<|endoftext|>" 4095             <- JSON string, space, id
    mergeable_ranks 4095             <- how many lines follow
    AA== 0                           <- base64 of the token bytes, space, rank
    ...

Token bytes are base64 because a token can be any byte string, including half of a
UTF-8 character or a newline. The counts make a truncated file detectable.

tiktoken's ``.tiktoken`` files are just the ``mergeable_ranks`` lines, with no header.

GPT-2 shipped its tokenizer as ``encoder.json`` (token string -> id) and ``vocab.bpe`` (a
``#version`` line, then one merge per line: two token strings separated by a space). Its
token strings are bytes in disguise: GPT-2 mapped each of the 256 byte values to a
printable Unicode character (printable ASCII and Latin-1 stand for themselves; the rest,
such as space and control bytes, are shifted to code points 256 and up, so a space is
'Ġ'). ``gpt2_byte_to_char`` rebuilds that table. Entries of encoder.json that are neither a
byte nor made by a merge (``<|endoftext|>``) are the special tokens, taken as written.

Every reader raises ``TokenizerFileError`` naming the file and line when something is off.
Every writer is atomic: it writes a temporary file in the same directory and renames it
over the target, so a crash never leaves a half-written tokenizer behind.

Hugging Face's ``tokenizer.json``, which holds the same vocabulary and merges beside the
split pattern, is read and written in ``huggingface.py``.
"""

import base64
import binascii
import json
from pathlib import Path

from npllm.errors import NpllmError
from npllm.io.atomic import atomic_write_text
from npllm.tokenizer.encode import merges_from_ranks

FORMAT_MAGIC = "npllm-bpe"
FORMAT_VERSION = 1


class TokenizerFileError(NpllmError, ValueError):
    """A tokenizer file that cannot be read; the message names the file and, when known, the line."""

    def __init__(self, path, problem: str, line_number: int | None = None):
        where = f"{path}" if line_number is None else f"{path}, line {line_number}"
        super().__init__(f"{where}: {problem}")


# ---- reading and writing text ----


def read_lines(path) -> list[str]:
    """The file's lines without line endings; a final empty line (after the last newline) is dropped."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise TokenizerFileError(path, f"not UTF-8 text ({error.reason} at byte {error.start})") from error
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


class LineCursor:
    """Hands out a file's lines one by one, and knows the line number for error messages."""

    def __init__(self, path, lines: list[str]):
        self.path, self.lines, self.line_number = path, lines, 0

    def next(self, expected: str) -> str:
        if self.line_number >= len(self.lines):
            raise self.error(f"file ends early: expected {expected} (truncated file?)")
        self.line_number += 1
        return self.lines[self.line_number - 1]

    def error(self, problem: str) -> TokenizerFileError:
        return TokenizerFileError(self.path, problem, self.line_number)


def split_two(cursor: LineCursor, line: str, expected: str) -> tuple[str, str]:
    """Split a line at its last space into two non-empty fields."""
    first, space, second = line.rpartition(" ")
    if not space or not first or not second:
        raise cursor.error(f"expected {expected}, got {line[:80]!r}")
    return first, second


def parse_int(cursor: LineCursor, text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise cursor.error(f"{what} must be a non-negative integer, got {text[:40]!r}")
    return int(text)


# ---- ranked vocabularies: "base64 rank" lines, shared by our format and tiktoken's ----


def rank_line(token: bytes, rank: int) -> str:
    return f"{base64.b64encode(token).decode('ascii')} {rank}"


def read_rank_lines(cursor: LineCursor, count: int | None) -> dict[bytes, int]:
    """Read ``count`` "base64 rank" lines (all remaining lines if ``count`` is None)."""
    ranks, seen_ranks = {}, set()
    remaining = len(cursor.lines) - cursor.line_number if count is None else count
    for _ in range(remaining):
        line = cursor.next("a 'base64-token rank' line")
        encoded, rank_text = split_two(cursor, line, "'base64-token rank'")
        try:
            token = base64.b64decode(encoded, validate=True)
        except binascii.Error as error:
            raise cursor.error(f"token {encoded[:40]!r} is not valid base64 ({error})") from error
        rank = parse_int(cursor, rank_text, "rank")
        if token in ranks:
            raise cursor.error(f"token {token!r} appears twice (first with rank {ranks[token]})")
        if rank in seen_ranks:
            raise cursor.error(f"rank {rank} appears twice")
        ranks[token] = rank
        seen_ranks.add(rank)
    return ranks


def read_tiktoken_file(path) -> dict[bytes, int]:
    """Read a tiktoken rank file: one "base64-token rank" per line."""
    cursor = LineCursor(path, read_lines(path))
    ranks = read_rank_lines(cursor, count=None)
    if not ranks:
        raise TokenizerFileError(path, "no ranks found (empty file?)")
    return ranks


def write_tiktoken_file(path, ranks: dict[bytes, int]) -> None:
    """Write ranks in tiktoken's format, lowest rank first."""
    atomic_write_text(path, "".join(rank_line(token, rank) + "\n" for token, rank in sorted_by_rank(ranks)))


def sorted_by_rank(ranks: dict[bytes, int]) -> list[tuple[bytes, int]]:
    return sorted(ranks.items(), key=lambda item: item[1])


# ---- our own format ----


def write_tokenizer_file(path, pattern: str, ranks: dict[bytes, int], special_tokens: dict[str, int]) -> None:
    """Write pattern, special tokens and ranks in the versioned format described above."""
    lines = [f"{FORMAT_MAGIC} {FORMAT_VERSION}", f"pattern {json.dumps(pattern)}", f"special_tokens {len(special_tokens)}"]
    lines += [f"{json.dumps(token)} {token_id}" for token, token_id in sorted(special_tokens.items(), key=lambda item: item[1])]
    lines.append(f"mergeable_ranks {len(ranks)}")
    lines += [rank_line(token, rank) for token, rank in sorted_by_rank(ranks)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_header_value(cursor: LineCursor, keyword: str) -> str:
    """Read a "keyword value" line and return the value."""
    line = cursor.next(f"a '{keyword} ...' line")
    found, _, value = line.partition(" ")
    if found != keyword or not value:
        raise cursor.error(f"expected a '{keyword} ...' line, got {line[:80]!r}")
    return value


def read_json_string(cursor: LineCursor, text: str, what: str) -> str:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise cursor.error(f"{what} is not a valid JSON string ({error.msg})") from error
    if not isinstance(value, str):
        raise cursor.error(f"{what} must be a JSON string, got {text[:40]}")
    return value


def read_special_token_lines(cursor: LineCursor, count: int) -> dict[str, int]:
    special_tokens = {}
    for _ in range(count):
        line = cursor.next("a special token line")
        token_json, id_text = split_two(cursor, line, "'\"token\" id'")
        token = read_json_string(cursor, token_json, "special token")
        if token in special_tokens:
            raise cursor.error(f"special token {token!r} appears twice")
        special_tokens[token] = parse_int(cursor, id_text, "special token id")
    return special_tokens


def read_tokenizer_file(path) -> tuple[str, dict[bytes, int], dict[str, int]]:
    """Read (pattern, ranks, special tokens) from a file written by ``write_tokenizer_file``."""
    cursor = LineCursor(path, read_lines(path))
    header = cursor.next("the header line")
    if header != f"{FORMAT_MAGIC} {FORMAT_VERSION}":
        raise cursor.error(f"expected the header {FORMAT_MAGIC + ' ' + str(FORMAT_VERSION)!r}, got {header[:80]!r}")
    pattern = read_json_string(cursor, read_header_value(cursor, "pattern"), "pattern")
    special_count = parse_int(cursor, read_header_value(cursor, "special_tokens"), "special token count")
    special_tokens = read_special_token_lines(cursor, special_count)
    rank_count = parse_int(cursor, read_header_value(cursor, "mergeable_ranks"), "rank count")
    ranks = read_rank_lines(cursor, rank_count)
    if cursor.line_number < len(cursor.lines):
        cursor.line_number += 1
        raise cursor.error(f"unexpected extra line after {rank_count} ranks")
    return pattern, ranks, special_tokens


# ---- GPT-2's encoder.json + vocab.bpe ----


def gpt2_byte_to_char() -> dict[int, str]:
    """GPT-2's table from byte values to the printable characters that stand for them in its files."""
    printable = [byte for byte in range(256) if chr(byte).isprintable() and chr(byte) != " "]
    byte_to_char = {byte: chr(byte) for byte in printable}
    others = [byte for byte in range(256) if byte not in byte_to_char]
    byte_to_char.update({byte: chr(256 + shift) for shift, byte in enumerate(others)})
    return byte_to_char


GPT2_BYTE_TO_CHAR = gpt2_byte_to_char()


def read_encoder_json(path) -> dict[str, int]:
    try:
        encoder = json.loads(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise TokenizerFileError(path, f"not UTF-8 text ({error.reason} at byte {error.start})") from error
    except json.JSONDecodeError as error:
        raise TokenizerFileError(path, f"not valid JSON: {error.msg} (column {error.colno})", error.lineno) from error
    if not isinstance(encoder, dict) or not all(isinstance(v, int) and v >= 0 for v in encoder.values()):
        raise TokenizerFileError(path, "expected a JSON object mapping token strings to non-negative integer ids")
    return encoder


def read_gpt2_files(encoder_json_path, vocab_bpe_path) -> tuple[dict[bytes, int], dict[str, int]]:
    """Read GPT-2's file pair into (ranks, special tokens); the ranks are GPT-2's own ids.

    The merges must create tokens in increasing id order, because encoding replays them by
    rank; a pair of files that disagrees about this is rejected.  (Hugging Face calls the
    same two files vocab.json and merges.txt.)
    """
    merges = LineCursor(vocab_bpe_path, read_lines(vocab_bpe_path))
    return gpt2_ranks(read_encoder_json(encoder_json_path), merges, encoder_json_path)


def gpt2_ranks(encoder: dict[str, int], merges: LineCursor, encoder_where) -> tuple[dict[bytes, int], dict[str, int]]:
    """(ranks, special tokens) from GPT-2's token strings -> ids and its merge lines, wherever they were read."""
    char_to_byte = {char: byte for byte, char in GPT2_BYTE_TO_CHAR.items()}
    ranks = {}
    for byte, char in GPT2_BYTE_TO_CHAR.items():
        if char not in encoder:
            raise TokenizerFileError(encoder_where, f"no entry for byte {byte:#04x} (written {char!r})")
        ranks[bytes([byte])] = encoder[char]
    made_by_merges = read_vocab_bpe(merges, encoder, char_to_byte, ranks)
    special_tokens = {token: token_id for token, token_id in encoder.items() if token not in made_by_merges}
    for byte_char in char_to_byte:
        special_tokens.pop(byte_char, None)
    return ranks, special_tokens


def write_gpt2_files(encoder_json_path, vocab_bpe_path, ranks: dict[bytes, int], special_tokens: dict[str, int]) -> None:
    """Write ranks and special tokens as GPT-2's file pair (Hugging Face's vocab.json and merges.txt).

    The merges are the ones the ranks imply (``merges_from_ranks``), so GPT-2's
    merge-replaying algorithm gives the ids our encoder gives.
    """
    atomic_write_text(encoder_json_path, json.dumps(gpt2_encoder(ranks, special_tokens), ensure_ascii=False))
    lines = [f"{left} {right}" for left, right in gpt2_merges(ranks)]
    atomic_write_text(vocab_bpe_path, "\n".join(["#version: 0.2", *lines]) + "\n")


def gpt2_spelling(token: bytes) -> str:
    """A token's bytes written in GPT-2's printable characters (b" the" -> "Ġthe")."""
    return "".join(map(GPT2_BYTE_TO_CHAR.__getitem__, token))


def gpt2_encoder(ranks: dict[bytes, int], special_tokens: dict[str, int]) -> dict[str, int]:
    """GPT-2's token string -> id table: every ranked token spelled in GPT-2's characters, then the special tokens."""
    encoder = {gpt2_spelling(token): rank for token, rank in sorted_by_rank(ranks)}
    clashing = sorted(token for token in special_tokens if token in encoder)
    if clashing:
        raise ValueError(f"special token {clashing[0]!r} is spelled like an ordinary token in GPT-2's characters")
    return {**encoder, **dict(sorted(special_tokens.items(), key=lambda item: item[1]))}


def gpt2_merges(ranks: dict[bytes, int]) -> list[tuple[str, str]]:
    """The merges the ranks imply, each pair of tokens spelled in GPT-2's characters."""
    return [(gpt2_spelling(left), gpt2_spelling(right)) for left, right in merges_from_ranks(ranks)]


def read_vocab_bpe(cursor: LineCursor, encoder: dict[str, int], char_to_byte: dict[str, int],
                   ranks: dict[bytes, int]) -> set[str]:
    """Add the token made by each merge line to ``ranks``; return the merged token strings."""
    made, previous_id = set(), max(ranks.values())
    for line, merged, token in read_merge_lines(cursor, encoder, char_to_byte):
        if encoder[merged] <= previous_id:
            raise cursor.error(f"merge {line!r} makes id {encoder[merged]}, not above the previous merge's id {previous_id}")
        ranks[token] = previous_id = encoder[merged]
        made.add(merged)
    return made


def read_merge_lines(cursor: LineCursor, encoder: dict[str, int], char_to_byte: dict[str, int]):
    """Yield (line, merged token string, its bytes) for each merge line, earliest first, each checked.

    A merge must make a token that ``encoder`` lists, and no token twice.
    """
    if cursor.lines and cursor.lines[0].startswith("#version"):
        cursor.next("the version line")
    made = set()
    while cursor.line_number < len(cursor.lines):
        line = cursor.next("a merge line")
        if not line:
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not all(parts):
            raise cursor.error(f"expected two tokens separated by one space, got {line[:80]!r}")
        merged = parts[0] + parts[1]
        if merged not in encoder:
            raise cursor.error(f"merge {line!r} makes {merged!r}, which encoder.json does not contain")
        if merged in made:
            raise cursor.error(f"merge {line!r} makes {merged!r} a second time")
        try:
            token = bytes(char_to_byte[char] for char in merged)
        except KeyError as error:
            raise cursor.error(f"character {error.args[0]!r} is not one of GPT-2's 256 byte characters") from error
        made.add(merged)
        yield line, merged, token
