"""Encoding and decoding: round trips, exact ids against tiktoken, and special-token rules."""

import gc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_tokenizer_corpus import VARIED_TEXT, VARIED_TEXTS

from npllm.data import stdlib_text
from npllm.tokenizer import BPETokenizer
from npllm.tokenizer.encode import NOT_A_TOKEN, PairLookup, encode_chunk, encode_chunks
from npllm.tokenizer.tokenizer import MIN_BATCH, collector_paused

SPECIALS = ["<|endoftext|>", "<|fim_prefix|>"]


@pytest.fixture(scope="module", params=["gpt2", "gpt4"])
def tokenizer(request):
    corpus = [stdlib_text(max_bytes=200_000), *VARIED_TEXTS]
    return BPETokenizer.train(corpus, vocab_size=1024, pattern=request.param, special_tokens=SPECIALS)


ROUND_TRIP_TEXTS = [
    "",
    " ",
    "\r\n\r\n",
    "👩🏾‍💻 wrote 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 and ﷺ",
    "   \t\n  trailing whitespace runs    ",
    "a\u0301\u0302\u0303 stacked combining marks",
    *VARIED_TEXTS,
]


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
def test_decode_inverts_encode(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.decode_bytes(tokenizer.encode_ordinary(text)) == text.encode("utf-8")


@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=80))
def test_decode_inverts_encode_on_arbitrary_unicode(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode_ordinary(text)) == text


def test_lone_surrogates_become_replacement_characters(tokenizer):
    assert tokenizer.decode(tokenizer.encode("a\ud800b")) == "a\ufffdb"


def test_decode_replaces_a_character_cut_between_tokens(tokenizer):
    first_byte_of_e_acute = tokenizer.mergeable_ranks[b"\xc3"]  # "é" is c3 a9 in UTF-8
    assert tokenizer.decode_bytes([first_byte_of_e_acute]) == b"\xc3"
    assert tokenizer.decode([first_byte_of_e_acute]) == "\ufffd"


def test_unknown_ids_are_refused_by_name(tokenizer):
    with pytest.raises(ValueError, match="unknown token id 99999"):
        tokenizer.decode([1, 2, 99999])
    with pytest.raises(ValueError, match="unknown token id -1"):
        tokenizer.decode_bytes([-1])


def test_encoding_bytes_is_a_clear_type_error(tokenizer):
    with pytest.raises(TypeError, match="encode expects str, got bytes"):
        tokenizer.encode(b"bytes")


def test_encode_batch_matches_encode(tokenizer):
    assert tokenizer.encode_batch(VARIED_TEXTS) == [tokenizer.encode(text) for text in VARIED_TEXTS]


def test_frequent_chunks_become_single_tokens(tokenizer):
    assert len(tokenizer.encode(" return")) == 1


# ---- special tokens: tiktoken's rules ----

TEXT_WITH_SPECIAL = "first document<|endoftext|>second <|fim_prefix|> document"


def test_special_text_is_refused_unless_allowed(tokenizer):
    with pytest.raises(ValueError, match=r"special token '<\|endoftext\|>', which is disallowed"):
        tokenizer.encode(TEXT_WITH_SPECIAL)
    with pytest.raises(ValueError, match=r"'<\|fim_prefix\|>'"):
        tokenizer.encode(TEXT_WITH_SPECIAL, allowed_special={"<|endoftext|>"})


def test_allowed_special_text_becomes_the_special_token(tokenizer):
    ids = tokenizer.encode(TEXT_WITH_SPECIAL, allowed_special="all")
    eot, fim = tokenizer.special_tokens["<|endoftext|>"], tokenizer.special_tokens["<|fim_prefix|>"]
    assert ids.count(eot) == 1 and ids.count(fim) == 1
    assert ids[: ids.index(eot)] == tokenizer.encode_ordinary("first document")
    assert tokenizer.decode(ids) == TEXT_WITH_SPECIAL


def test_special_tokens_are_never_produced_from_ordinary_text(tokenizer):
    special_ids = set(tokenizer.special_tokens.values())
    assert not special_ids & set(tokenizer.encode_ordinary(TEXT_WITH_SPECIAL))
    assert not special_ids & set(tokenizer.encode(TEXT_WITH_SPECIAL, disallowed_special="none"))
    partly = tokenizer.encode(TEXT_WITH_SPECIAL, allowed_special={"<|fim_prefix|>"}, disallowed_special=())
    assert tokenizer.special_tokens["<|endoftext|>"] not in partly
    assert tokenizer.special_tokens["<|fim_prefix|>"] in partly


def test_bad_special_arguments_are_named(tokenizer):
    with pytest.raises(ValueError, match="allowed_special names \\['<\\|nope\\|>'\\]"):
        tokenizer.encode("x", allowed_special={"<|nope|>"})
    with pytest.raises(ValueError, match="disallowed_special must be 'all', 'none' or a set"):
        tokenizer.encode("x", disallowed_special="everything")


# ---- exact ids against tiktoken ----


def tiktoken_twin(tokenizer):
    tiktoken = pytest.importorskip("tiktoken")
    return tiktoken.Encoding(
        name="npllm-test",
        pat_str=tokenizer.pattern,
        mergeable_ranks=tokenizer.mergeable_ranks,
        special_tokens=tokenizer.special_tokens,
    )


@pytest.mark.parity
def test_ids_equal_tiktoken_on_a_varied_corpus(tokenizer):
    twin = tiktoken_twin(tokenizer)
    for text in [*ROUND_TRIP_TEXTS, stdlib_text(max_bytes=300_000)[200_000:], VARIED_TEXT * 3]:
        assert tokenizer.encode_ordinary(text) == twin.encode_ordinary(text)
    assert tokenizer.encode(TEXT_WITH_SPECIAL, allowed_special="all") == twin.encode(TEXT_WITH_SPECIAL, allowed_special="all")


@pytest.mark.parity
@settings(max_examples=150, deadline=None)
@given(text=st.text(max_size=80))
def test_ids_equal_tiktoken_on_arbitrary_unicode(tokenizer, text):
    assert tokenizer.encode_ordinary(text) == tiktoken_twin(tokenizer).encode_ordinary(text)



@pytest.mark.parametrize("enabled_before", [True, False])
def test_encoding_leaves_the_cycle_collector_as_it_found_it(tokenizer, enabled_before):
    gc.enable() if enabled_before else gc.disable()
    try:
        tokenizer.encode_ordinary("fresh words never cached before")
        assert gc.isenabled() == enabled_before
        with pytest.raises(ZeroDivisionError), collector_paused():
            assert not gc.isenabled()
            1 / 0
        assert gc.isenabled() == enabled_before
    finally:
        gc.enable()


# ---- many new chunks at once: the lockstep NumPy loop against the per-chunk loop ----

LOCKSTEP_CHUNKS = [
    "", "a", " ", "  ", " " * 81, "\r\n", "\r\n\r\n", "\t\t\n", "aaaa", "abababab", "aaabdaaabac",
    " return", "__init__", "12345", "👩🏾‍💻", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "中文汉字", "e\u0301\u0302", "<|endoftext|>", "x" * 200, "",
]


def test_lockstep_merging_equals_the_per_chunk_loop(tokenizer):
    chunks = [chunk.encode("utf-8") for chunk in [*LOCKSTEP_CHUNKS, *tokenizer._split(VARIED_TEXT + stdlib_text(max_bytes=50_000))]]
    expected = [encode_chunk(chunk, tokenizer._byte_ids, tokenizer._pairs) for chunk in chunks]
    assert encode_chunks(chunks, tokenizer._byte_ids, tokenizer._pair_lookup) == expected
    assert encode_chunks([], tokenizer._byte_ids, tokenizer._pair_lookup) == []


def test_pair_lookup_answers_like_the_pair_table(tokenizer):
    pairs = tokenizer._pairs
    lookup = PairLookup(pairs, tokenizer._byte_ids)
    known = np.array(list(pairs), np.int64)
    unknown = np.array([(0, 0), (999_999, 1), (1, 999_999)], np.int64)
    for left, right in (known.T, unknown.T):
        assert lookup(left, right).tolist() == [pairs.get(pair, NOT_A_TOKEN) for pair in zip(left.tolist(), right.tolist())]
    by_bytes = [[pairs.get((tokenizer._byte_ids[a], tokenizer._byte_ids[b]), NOT_A_TOKEN) for b in range(256)] for a in range(256)]
    assert lookup.byte_pairs.tolist() == by_bytes
    assert PairLookup({}, list(range(256)))(np.array([1]), np.array([2])).tolist() == [NOT_A_TOKEN]


@pytest.mark.parity
def test_a_cold_encode_of_many_chunks_takes_the_lockstep_path_and_equals_tiktoken(tokenizer):
    twin = tiktoken_twin(tokenizer)
    text = stdlib_text(max_bytes=600_000)[300_000:] + "\r\n".join(LOCKSTEP_CHUNKS) + VARIED_TEXT
    fresh = BPETokenizer(tokenizer.mergeable_ranks, tokenizer.pattern, tokenizer.special_tokens)
    new_chunks = set(fresh._split(text))
    assert sum(chunk.encode("utf-8") not in fresh.mergeable_ranks for chunk in new_chunks) >= MIN_BATCH
    assert fresh.encode_ordinary(text) == twin.encode_ordinary(text)
