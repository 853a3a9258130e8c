"""The token cache: encoded once, keyed by text and tokenizer, the smallest dtype, a tail split."""

import numpy as np
import pytest

from npllm.data.tokens import load_or_encode, split_tokens, token_dtype, tokenizer_fingerprint


class ByteTokenizer:
    """A stand-in tokenizer: one id per UTF-8 byte, offset by ``shift``; counts its encode calls."""

    def __init__(self, shift=0, vocab_size=256):
        self.shift, self.vocab_size, self.encode_calls = shift, vocab_size, 0

    def encode_ordinary(self, text):
        self.encode_calls += 1
        return [byte + self.shift for byte in text.encode("utf-8")]

    def save(self, path):
        with open(path, "w") as file:
            file.write(f"byte tokenizer shift={self.shift} vocab={self.vocab_size}\n")


def real_tokenizer_or_skip(text, vocab_size):
    tokenizer = pytest.importorskip("npllm.tokenizer")
    if not hasattr(tokenizer, "BPETokenizer"):
        pytest.skip("npllm.tokenizer.BPETokenizer has not landed yet")
    return tokenizer.BPETokenizer.train(text, vocab_size=vocab_size)


TEXT = "the cat sat on the mat; the dog sat on the log. " * 20


def test_tokens_are_cached_memory_mapped_and_reused(tmp_path):
    tokenizer = ByteTokenizer()
    first = load_or_encode(TEXT, tokenizer, cache_dir=tmp_path)
    assert isinstance(first, np.memmap) and first.dtype == np.uint16
    np.testing.assert_array_equal(first, list(TEXT.encode()))
    second = load_or_encode(TEXT, tokenizer, cache_dir=tmp_path)
    np.testing.assert_array_equal(second, first)
    assert tokenizer.encode_calls == 1
    assert len(list((tmp_path / "tokens").iterdir())) == 1


def test_a_changed_tokenizer_or_text_rebuilds_the_cache(tmp_path):
    load_or_encode(TEXT, ByteTokenizer(shift=0), cache_dir=tmp_path)
    shifted = load_or_encode(TEXT, ByteTokenizer(shift=1), cache_dir=tmp_path)
    np.testing.assert_array_equal(shifted, np.frombuffer(TEXT.encode(), np.uint8) + 1)
    other_text = load_or_encode(TEXT + "!", ByteTokenizer(shift=0), cache_dir=tmp_path)
    assert len(other_text) == len(TEXT) + 1
    assert len(list((tmp_path / "tokens").iterdir())) == 3


def test_a_changed_real_tokenizer_rebuilds_the_cache(tmp_path):
    small, large = real_tokenizer_or_skip(TEXT, 260), real_tokenizer_or_skip(TEXT, 280)
    assert tokenizer_fingerprint(small) != tokenizer_fingerprint(large)
    assert tokenizer_fingerprint(small) == tokenizer_fingerprint(real_tokenizer_or_skip(TEXT, 260))
    for tokenizer in (small, large):
        np.testing.assert_array_equal(load_or_encode(TEXT, tokenizer, cache_dir=tmp_path),
                                      tokenizer.encode_ordinary(TEXT))


@pytest.mark.parametrize("vocab_size, dtype", [(256, np.uint16), (65536, np.uint16), (65537, np.uint32),
                                               (100_277, np.uint32)])
def test_the_smallest_dtype_that_holds_every_id(vocab_size, dtype):
    assert token_dtype(vocab_size) == dtype


def test_a_large_vocabulary_is_stored_as_uint32(tmp_path):
    tokens = load_or_encode(TEXT, ByteTokenizer(shift=70_000, vocab_size=70_256), cache_dir=tmp_path)
    assert tokens.dtype == np.uint32 and tokens.max() == 70_000 + max(TEXT.encode())


def test_the_split_holds_out_the_last_tenth():
    tokens = np.arange(1000, dtype=np.uint16)
    train, validation = split_tokens(tokens)
    np.testing.assert_array_equal(train, np.arange(900))
    np.testing.assert_array_equal(validation, np.arange(900, 1000))
    assert np.shares_memory(train, tokens)  # views, not copies of a memory-mapped file
    assert [len(part) for part in split_tokens(tokens, validation_fraction=0.25)] == [750, 250]
    with pytest.raises(ValueError, match="`validation_fraction` must be between 0 and 1, got 1.5"):
        split_tokens(tokens, 1.5)
