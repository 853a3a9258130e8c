"""Byte-pair encoding, learned the slow and obvious way: the reference trainer.

Start from bytes. Any text is a sequence of UTF-8 bytes, so a vocabulary that begins
with the 256 possible byte values can already spell everything: no unknown tokens, no
special cases for emoji or Chinese. Then learn shortcuts. Count every adjacent pair of
tokens in the training text, take the most frequent pair, give it a new token id, and
replace the pair everywhere by the new token. Repeat until the vocabulary is as large
as wanted. Each step is one "merge"; the list of merges, in order, *is* the tokenizer.

Two refinements make this practical:

* Text is first cut into chunks by a regex (see ``patterns.py``) and pairs are counted
  inside chunks only. Identical chunks are identical work, so each distinct chunk is
  stored once, with the number of times it occurs.
* Ties must be broken the same way every time, or two runs on the same text could learn
  different tokenizers. The rule here, and in the fast trainer: **the pair with the
  highest count wins; among pairs with equal counts, the smaller (left id, right id)
  wins.** Because ids are handed out in order, that prefers older, shorter tokens.

A pair is replaced left to right without overlaps: merging (a, a) in "a a a" gives
"aa a", not "a aa".

This trainer recounts every pair in every chunk after every merge, which costs
(number of merges) x (size of the corpus). It is kept because it is short enough to
check by eye; ``train.py`` computes exactly the same merges incrementally, and the tests
hold the two to that.
"""

from collections import Counter
from collections.abc import Iterable

from npllm.tokenizer.patterns import resolve_pattern
from npllm.tokenizer.splitter import compile_splitter

Pair = tuple[int, int]

NUM_BYTES = 256  # token ids 0..255 are the single bytes; merged tokens are numbered from here


def as_texts(text_or_texts: str | Iterable[str]) -> Iterable[str]:
    """A single string becomes a one-element sequence; an iterable of strings passes through."""
    return [text_or_texts] if isinstance(text_or_texts, str) else text_or_texts


def without_lone_surrogates(text: str) -> str:
    """The text, with any surrogate code points that cannot be written as UTF-8 repaired.

    A Python string may hold surrogates (halves of UTF-16 pairs), which have no UTF-8 form.
    A well-formed high/low pair becomes the character it encodes; a lone half becomes
    U+FFFD, the replacement character. This is what tiktoken does, so ids stay comparable.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", errors="surrogatepass").decode("utf-16", errors="replace")


def count_chunks(text_or_texts: str | Iterable[str], pattern: str) -> dict[bytes, int]:
    """How often each chunk of ``pattern`` (a name or a regex) occurs in the text(s), as UTF-8 bytes.

    Chunks never span two texts.
    """
    split = compile_splitter(resolve_pattern(pattern))
    chunk_counts = Counter()
    for text in as_texts(text_or_texts):
        if not isinstance(text, str):
            raise TypeError(f"training texts must be str, got {type(text).__name__}")
        chunk_counts.update(split(without_lone_surrogates(text)))
    return {chunk.encode("utf-8"): count for chunk, count in chunk_counts.items()}


def merge_pair(ids: list[int], pair: Pair, new_id: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids`` by ``new_id``, scanning left to right."""
    merged, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged


def best_pair(pair_counts: dict[Pair, int]) -> Pair:
    """The most frequent pair; on a tie, the smallest (left id, right id)."""
    return min(pair_counts, key=lambda pair: (-pair_counts[pair], pair))


def count_pairs(words: list[list[int]], word_counts: list[int]) -> Counter:
    """Occurrences of every adjacent pair, each chunk weighted by how often it appears."""
    pair_counts = Counter()
    for ids, count in zip(words, word_counts):
        for pair in zip(ids, ids[1:]):
            pair_counts[pair] += count
    return pair_counts


def train_naive(chunk_counts: dict[bytes, int], num_merges: int) -> list[Pair]:
    """Learn up to ``num_merges`` merges; merge i creates token id 256 + i.

    Stops early when no chunk has two tokens left to merge.
    """
    words = [list(chunk) for chunk in chunk_counts]
    word_counts = list(chunk_counts.values())
    merges = []
    for new_id in range(NUM_BYTES, NUM_BYTES + num_merges):
        pair_counts = count_pairs(words, word_counts)
        if not pair_counts:
            break
        pair = best_pair(pair_counts)
        words = [merge_pair(ids, pair, new_id) for ids in words]
        merges.append(pair)
    return merges


def token_bytes(merges: list[Pair]) -> list[bytes]:
    """The bytes each token id stands for: 256 single bytes, then one entry per merge."""
    vocabulary = [bytes([byte]) for byte in range(NUM_BYTES)]
    for left, right in merges:
        vocabulary.append(vocabulary[left] + vocabulary[right])
    return vocabulary
