"""Tokenizer files: our format, tiktoken rank files, GPT-2's encoder.json + vocab.bpe, and corrupt files."""

import json

import pytest
import regex
from test_tokenizer_corpus import VARIED_TEXT, VARIED_TEXTS

from npllm.tokenizer import BPETokenizer, TokenizerFileError
from npllm.tokenizer.naive import count_chunks, token_bytes
from npllm.tokenizer.train import train_bpe


@pytest.fixture(scope="module")
def tokenizer():
    return BPETokenizer.train(VARIED_TEXTS * 3, vocab_size=400, special_tokens=["<|endoftext|>", "<|pad|>"])


def test_save_then_load_gives_the_same_tokenizer(tokenizer, tmp_path):
    path = tmp_path / "tok.npllm-bpe"
    tokenizer.save(path)
    loaded = BPETokenizer.load(path)
    assert loaded.pattern == tokenizer.pattern
    assert loaded.mergeable_ranks == tokenizer.mergeable_ranks
    assert loaded.special_tokens == tokenizer.special_tokens
    assert loaded.encode(VARIED_TEXT + "<|pad|>", allowed_special="all") == tokenizer.encode(VARIED_TEXT + "<|pad|>", allowed_special="all")
    assert path.read_text(encoding="utf-8").startswith("npllm-bpe 1\npattern ")


def test_saving_replaces_the_file_and_leaves_no_temporary_behind(tokenizer, tmp_path):
    path = tmp_path / "tok.npllm-bpe"
    path.write_text("old contents")
    tokenizer.save(path)
    assert BPETokenizer.load(path).mergeable_ranks == tokenizer.mergeable_ranks
    assert [p.name for p in tmp_path.iterdir()] == ["tok.npllm-bpe"]


def test_tiktoken_rank_file_round_trip(tokenizer, tmp_path):
    path = tmp_path / "tok.tiktoken"
    tokenizer.save_tiktoken(path)
    loaded = BPETokenizer.from_tiktoken_file(path, pattern=tokenizer.pattern, special_tokens=tokenizer.special_tokens)
    assert loaded.mergeable_ranks == tokenizer.mergeable_ranks
    assert loaded.encode_ordinary(VARIED_TEXT) == tokenizer.encode_ordinary(VARIED_TEXT)
    first_line = path.read_text().splitlines()[0]
    assert first_line == "AA== 0"  # base64 of the byte 0x00, rank 0


@pytest.mark.parity
def test_tiktoken_reads_our_rank_file(tokenizer, tmp_path):
    tiktoken_load = pytest.importorskip("tiktoken.load")
    path = tmp_path / "tok.tiktoken"
    tokenizer.save_tiktoken(path)
    assert tiktoken_load.load_tiktoken_bpe(str(path)) == tokenizer.mergeable_ranks


# ---- GPT-2's files, written here in GPT-2's format ----

GPT2_ORIGINAL_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def gpt2_style_byte_chars() -> dict[int, str]:
    """GPT-2's byte -> character table, built the way GPT-2 built it: three printable ranges stay, the rest shift past 255."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [byte for byte in range(256) if byte not in kept]
    return {**{byte: chr(byte) for byte in kept}, **{byte: chr(256 + n) for n, byte in enumerate(shifted)}}


def write_gpt2_files(directory, num_merges=200):
    """A GPT-2-format encoder.json + vocab.bpe learned from the varied corpus; returns paths and the merges as strings."""
    to_chars = gpt2_style_byte_chars()
    spell = lambda token: "".join(to_chars[byte] for byte in token)  # noqa: E731
    merge_ids = train_bpe(count_chunks(VARIED_TEXTS * 3, GPT2_ORIGINAL_PATTERN), num_merges)
    vocabulary = token_bytes(merge_ids)
    byte_strings = [spell(bytes([byte])) for byte in to_chars]  # GPT-2 numbers the bytes in table order
    merges = [(spell(vocabulary[left]), spell(vocabulary[right])) for left, right in merge_ids]
    encoder = {token: i for i, token in enumerate(byte_strings + [left + right for left, right in merges])}
    encoder["<|endoftext|>"] = len(encoder)
    encoder_path, vocab_path = directory / "encoder.json", directory / "vocab.bpe"
    encoder_path.write_text(json.dumps(encoder, ensure_ascii=False), encoding="utf-8")
    vocab_path.write_text("#version: 0.2\n" + "".join(f"{left} {right}\n" for left, right in merges), encoding="utf-8")
    return encoder_path, vocab_path, encoder, merges


def gpt2_reference_encode(text: str, encoder: dict[str, int], merges: list[tuple[str, str]]) -> list[int]:
    """GPT-2's original algorithm: on each chunk, repeatedly merge the adjacent pair learned earliest."""
    to_chars, merge_rank = gpt2_style_byte_chars(), {pair: rank for rank, pair in enumerate(merges)}
    ids = []
    for chunk in regex.findall(GPT2_ORIGINAL_PATTERN, text):
        word = [to_chars[byte] for byte in chunk.encode("utf-8")]
        while len(word) > 1:
            pair = min(zip(word, word[1:]), key=lambda p: merge_rank.get(p, float("inf")))
            if pair not in merge_rank:
                break
            merged, i = [], 0
            while i < len(word):
                if tuple(word[i : i + 2]) == pair:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        ids += [encoder[token] for token in word]
    return ids


def test_gpt2_files_give_gpt2s_exact_ids(tmp_path):
    encoder_path, vocab_path, encoder, merges = write_gpt2_files(tmp_path)
    gpt2 = BPETokenizer.from_gpt2_files(encoder_path, vocab_path)
    assert gpt2.special_tokens == {"<|endoftext|>": encoder["<|endoftext|>"]}
    assert gpt2.mergeable_ranks[b"!"] == 0 and gpt2.mergeable_ranks[b" "] == encoder["Ġ"]
    for text in [*VARIED_TEXTS, "Ġ is a space in GPT-2's files, ĊĊ two newlines"]:
        assert gpt2.encode_ordinary(text) == gpt2_reference_encode(text, encoder, merges)
        assert gpt2.decode(gpt2.encode_ordinary(text)) == text
    assert gpt2.encode("<|endoftext|>", allowed_special="all") == [encoder["<|endoftext|>"]]


@pytest.mark.parity
def test_gpt2_files_match_tiktokens_reader(tmp_path):
    tiktoken_load = pytest.importorskip("tiktoken.load")
    encoder_path, vocab_path, _, _ = write_gpt2_files(tmp_path)
    expected = tiktoken_load.data_gym_to_mergeable_bpe_ranks(str(vocab_path), str(encoder_path))
    assert BPETokenizer.from_gpt2_files(encoder_path, vocab_path).mergeable_ranks == expected


# ---- corrupt files name the file and the line ----


def corrupt(path, line_number, replacement):
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[line_number - 1] = replacement
    path.write_text("\n".join(lines), encoding="utf-8")


@pytest.mark.parametrize(
    "line_number, replacement, message",
    [
        (1, "npllm-bpe 99", "line 1: expected the header 'npllm-bpe 1'"),
        (2, 'pattern "unterminated', "line 2: pattern is not a valid JSON string"),
        (3, "special_tokens two", "line 3: special token count must be a non-negative integer"),
        (4, '"<|endoftext|>"', "line 4: expected '\"token\" id'"),
        (7, "!!!not-base64!!! 0", "line 7: token '!!!not-base64!!!' is not valid base64"),
        (8, "AA== 1", "line 8: token b'\\\\x00' appears twice"),
        (9, "AQ== x", "line 9: rank must be a non-negative integer"),
    ],
)
def test_corrupt_tokenizer_file_names_file_and_line(tokenizer, tmp_path, line_number, replacement, message):
    path = tmp_path / "tok.npllm-bpe"
    tokenizer.save(path)
    corrupt(path, line_number, replacement)
    with pytest.raises(TokenizerFileError, match=regex.escape(str(path)) + ", " + regex.escape(message).replace(r"\\\\", r"\\")):
        BPETokenizer.load(path)


@pytest.mark.parametrize("line_number, replacement, message", [
    (2, 'pattern "(unclosed"', "is not a valid regex"),
    (4, '"<|endoftext|>" 5', "has id 5, which another token already uses"),
])
def test_tokenizer_file_that_parses_but_makes_no_tokenizer_names_the_file(tokenizer, tmp_path, line_number,
                                                                          replacement, message):
    path = tmp_path / "tok.npllm-bpe"
    tokenizer.save(path)
    corrupt(path, line_number, replacement)
    with pytest.raises(TokenizerFileError, match=regex.escape(f"{path}: ") + ".*" + regex.escape(message)):
        BPETokenizer.load(path)


def test_truncated_tokenizer_file_is_detected(tokenizer, tmp_path):
    path = tmp_path / "tok.npllm-bpe"
    tokenizer.save(path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-10]) + "\n")
    with pytest.raises(TokenizerFileError, match=f"line {len(lines) - 10}: file ends early"):
        BPETokenizer.load(path)


def test_tokenizer_file_with_trailing_garbage_is_refused(tokenizer, tmp_path):
    path = tmp_path / "tok.npllm-bpe"
    tokenizer.save(path)
    with path.open("a") as file:
        file.write("AAAA 9999\n")
    with pytest.raises(TokenizerFileError, match="unexpected extra line"):
        BPETokenizer.load(path)


def test_corrupt_tiktoken_files_name_the_line(tokenizer, tmp_path):
    path = tmp_path / "tok.tiktoken"
    tokenizer.save_tiktoken(path)
    corrupt(path, 5, "AQ== 0")
    with pytest.raises(TokenizerFileError, match=r"tok.tiktoken, line 5: token b'\\x01' appears twice"):
        BPETokenizer.from_tiktoken_file(path)
    path.write_bytes(b"\xff\xfe not text")
    with pytest.raises(TokenizerFileError, match="tok.tiktoken: not UTF-8"):
        BPETokenizer.from_tiktoken_file(path)
    path.write_text("")
    with pytest.raises(TokenizerFileError, match="no ranks found"):
        BPETokenizer.from_tiktoken_file(path)


def test_a_rank_file_missing_single_bytes_is_refused(tmp_path):
    path = tmp_path / "tok.tiktoken"
    path.write_text("YQ== 0\nYg== 1\n")
    with pytest.raises(ValueError, match="lacks 254 single-byte tokens"):
        BPETokenizer.from_tiktoken_file(path)


def test_corrupt_gpt2_files_name_the_file_and_line(tmp_path):
    encoder_path, vocab_path, encoder, merges = write_gpt2_files(tmp_path, num_merges=20)
    corrupt(vocab_path, 4, "a b c")
    with pytest.raises(TokenizerFileError, match=r"vocab.bpe, line 4: expected two tokens separated by one space"):
        BPETokenizer.from_gpt2_files(encoder_path, vocab_path)
    corrupt(vocab_path, 4, "q z")
    with pytest.raises(TokenizerFileError, match=r"vocab.bpe, line 4: merge 'q z' makes 'qz', which encoder.json does not contain"):
        BPETokenizer.from_gpt2_files(encoder_path, vocab_path)
    encoder_path.write_text('{\n"a": 1,\n"b" 2}')
    with pytest.raises(TokenizerFileError, match=r"encoder.json, line 3: not valid JSON"):
        BPETokenizer.from_gpt2_files(encoder_path, vocab_path)
    encoder_path.write_text('{"a": 0}')
    with pytest.raises(TokenizerFileError, match=r"encoder.json: no entry for byte 0x21 \(written '!'\)"):
        BPETokenizer.from_gpt2_files(encoder_path, vocab_path)
