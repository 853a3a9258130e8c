"""BPE training: a hand-checked example, the fast trainer against the naive one, and bad arguments."""

import pytest
from test_tokenizer_corpus import VARIED_TEXT, VARIED_TEXTS

from npllm.tokenizer import BPETokenizer
from npllm.tokenizer.naive import count_chunks, merge_pair, token_bytes, train_naive
from npllm.tokenizer.train import train_bpe

a, b, c, d = b"abcd"


def test_aaabdaaabac_three_merges_by_hand():
    # Counts: aa 4, ab 2 -> merge aa=256. Then (256, a) 2 and (a, b) 2 tie: the smaller pair,
    # (a, b), wins -> ab=257. Then (256, 257) occurs twice -> aaab=258. Leaves "X d X a c".
    chunk_counts = count_chunks("aaabdaaabac", "gpt4")
    assert chunk_counts == {b"aaabdaaabac": 1}
    assert train_bpe(chunk_counts, 3) == [(a, a), (a, b), (256, 257)]
    tokenizer = BPETokenizer.train("aaabdaaabac", vocab_size=256 + 3)
    assert tokenizer.encode("aaabdaaabac") == [258, d, 258, a, c]
    assert token_bytes(train_bpe(chunk_counts, 3))[256:] == [b"aa", b"ab", b"aaab"]


def test_merge_pair_goes_left_to_right_without_overlap():
    assert merge_pair([a, a, a], (a, a), 256) == [256, a]
    assert merge_pair([a, b, a, b, c], (a, b), 300) == [300, 300, c]
    assert merge_pair([c], (a, b), 300) == [c]


SMALL_CORPORA = {
    "varied": VARIED_TEXT,
    "ties everywhere": "ab cd ef gh ij kl mn op",  # every pair occurs once
    "overlapping runs": "aaaa aaa aa a bbbbbbbb abababab aaaaaaaaaaaa",
    "repeated word": "the the the then them there these " * 5,
    "one chunk per text": VARIED_TEXTS,
}


@pytest.mark.parametrize("name", sorted(SMALL_CORPORA))
@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_fast_trainer_learns_exactly_the_naive_merges(name, pattern):
    chunk_counts = count_chunks(SMALL_CORPORA[name], pattern)
    num_merges = 150
    assert train_bpe(chunk_counts, num_merges) == train_naive(chunk_counts, num_merges)


def test_training_stops_when_no_pairs_are_left():
    merges = train_bpe(count_chunks("ab ab", "gpt4"), 100)
    assert merges == train_naive(count_chunks("ab ab", "gpt4"), 100) == [(a, b), (32, 256)]
    tokenizer = BPETokenizer.train("ab ab", vocab_size=1000, special_tokens=["<|endoftext|>"])
    assert tokenizer.vocab_size == 256 + 2 + 1
    assert tokenizer.special_tokens == {"<|endoftext|>": 258}


def test_training_is_deterministic_and_accepts_an_iterable_of_texts():
    first = BPETokenizer.train(iter(VARIED_TEXTS), vocab_size=400)
    second = BPETokenizer.train(VARIED_TEXTS, vocab_size=400)
    assert first.mergeable_ranks == second.mergeable_ranks
    assert len(first.mergeable_ranks) == 400


def test_special_tokens_take_the_last_ids_of_the_vocabulary():
    tokenizer = BPETokenizer.train(VARIED_TEXT, vocab_size=300, special_tokens=["<|endoftext|>", "<|pad|>"])
    assert tokenizer.vocab_size == 300
    assert tokenizer.special_tokens == {"<|endoftext|>": 298, "<|pad|>": 299}
    assert max(tokenizer.mergeable_ranks.values()) == 297


def test_special_tokens_may_come_with_their_own_ids():
    tokenizer = BPETokenizer.train(VARIED_TEXT, vocab_size=300, special_tokens={"<|endoftext|>": 1000})
    assert tokenizer.special_tokens == {"<|endoftext|>": 1000}
    assert len(tokenizer.mergeable_ranks) == 299 and tokenizer.vocab_size == 1001


def test_vocab_size_below_bytes_plus_special_tokens_is_refused():
    with pytest.raises(ValueError, match=r"at least 256 .* \+ 2 .* = 258, got 257"):
        BPETokenizer.train("hello", vocab_size=257, special_tokens=["<|a|>", "<|b|>"])
    with pytest.raises(ValueError, match="at least 256"):
        BPETokenizer.train("hello", vocab_size=100)


def test_duplicate_special_tokens_are_refused():
    with pytest.raises(ValueError, match=r"'<\|endoftext\|>' is listed twice"):
        BPETokenizer.train("hello", vocab_size=300, special_tokens=["<|endoftext|>", "<|endoftext|>"])
    ranks = BPETokenizer.train("hello", vocab_size=260).mergeable_ranks
    with pytest.raises(ValueError, match="id 500, which another token already uses"):
        BPETokenizer(ranks, special_tokens={"<|a|>": 500, "<|b|>": 500})
    with pytest.raises(ValueError, match="id 3, which another token already uses"):
        BPETokenizer(ranks, special_tokens={"<|a|>": 3})


def test_bad_patterns_and_texts_are_refused():
    with pytest.raises(ValueError, match="not a valid regex"):
        BPETokenizer.train("hello", vocab_size=260, pattern="(unclosed")
    with pytest.raises(TypeError, match="must be str, got bytes"):
        BPETokenizer.train([b"bytes are not text"], vocab_size=260)


def test_a_custom_pattern_is_used_as_given():
    tokenizer = BPETokenizer.train("ab ab ab", vocab_size=258, pattern=r"\S+|\s+")
    assert tokenizer.pattern == r"\S+|\s+"
    assert tokenizer.encode("ab ab") == [256, 32, 256]
