"""Byte-pair encoding, learned fast: the same merges as ``naive.py``, found incrementally.

The naive trainer recounts every pair of every chunk after each merge, yet a merge of
(a, b) only changes the chunks that contain a next to b, usually a tiny fraction. So keep,
between merges:

* ``pair_counts``: pair -> how often it occurs, weighted by chunk counts;
* ``chunks_with``: pair -> the indices of the chunks that (may) contain it;
* ``heap``: entries (-count, left, right), so the smallest entry is the best pair under
  the tie-breaking rule of ``naive.py`` (highest count, then smallest pair).

To merge (a, b) into z, visit only ``chunks_with[(a, b)]``: take the chunk's old pairs out of
the counts, merge, put the new pairs in. Two facts keep the heap simple:

1. A pair that does not involve z can only lose occurrences in a merge, never gain
   them, because the only adjacencies a merge creates are those next to z.
2. Every pair involving z is new, and all its occurrences are created by this merge,
   so its count is complete when the merge is done.

So each new pair is pushed once, with its final count, and a count that drops is
corrected lazily: when the top of the heap disagrees with ``pair_counts``, the stale
entry is pushed back with the current count and the next one is tried. An entry that
agrees is the true best pair, because every entry's stored count is at least its pair's
real count.

``chunks_with`` is lazy too: a chunk index stays in a pair's set after the pair has gone
from that chunk, and merging leaves such a chunk unchanged, so it is skipped.

Left out on purpose: parallelism and the textbook trick of a doubly linked list of
symbols inside each chunk. Chunks are short (a word, a run of spaces), so rebuilding a
merged chunk as a new list is cheap and easier to read.
"""

import heapq

from tqdm import tqdm

from npllm.tokenizer.naive import NUM_BYTES, Pair, count_pairs, merge_pair


def index_pairs(words: list[list[int]]) -> dict[Pair, set[int]]:
    """For every pair, the set of chunk indices that contain it."""
    chunks_with = {}
    for index, ids in enumerate(words):
        for pair in zip(ids, ids[1:]):
            chunks_with.setdefault(pair, set()).add(index)
    return chunks_with


def pop_best_pair(heap: list, pair_counts: dict[Pair, int]) -> Pair | None:
    """The pair with the highest current count (ties: smallest pair), or None if no pair is left."""
    while heap:
        negative_count, left, right = heapq.heappop(heap)
        current = pair_counts.get((left, right), 0)
        if current == -negative_count:
            return left, right
        if current > 0:
            heapq.heappush(heap, (-current, left, right))
    return None


def apply_merge(pair: Pair, new_id: int, words, word_counts, pair_counts, chunks_with) -> set[Pair]:
    """Merge ``pair`` into ``new_id`` in every chunk containing it; return the pairs this created."""
    created = set()
    for index in chunks_with.pop(pair):
        old_ids = words[index]
        new_ids = merge_pair(old_ids, pair, new_id)
        if len(new_ids) == len(old_ids):
            continue  # a stale index: the pair has already gone from this chunk
        count = word_counts[index]
        for old_pair in zip(old_ids, old_ids[1:]):
            pair_counts[old_pair] -= count
        for new_pair in zip(new_ids, new_ids[1:]):
            pair_counts[new_pair] = pair_counts.get(new_pair, 0) + count
            if new_id in new_pair:
                created.add(new_pair)
                chunks_with.setdefault(new_pair, set()).add(index)
        words[index] = new_ids
    return created


def train_bpe(chunk_counts: dict[bytes, int], num_merges: int, verbose: bool = False) -> list[Pair]:
    """Learn up to ``num_merges`` merges from chunk counts; identical to ``naive.train_naive``."""
    words = [list(chunk) for chunk in chunk_counts]
    word_counts = list(chunk_counts.values())
    pair_counts = dict(count_pairs(words, word_counts))
    chunks_with = index_pairs(words)
    heap = [(-count, left, right) for (left, right), count in pair_counts.items()]
    heapq.heapify(heap)
    merges = []
    with tqdm(total=num_merges, desc="BPE merges", unit="merge", disable=not verbose) as progress:
        for new_id in range(NUM_BYTES, NUM_BYTES + num_merges):
            pair = pop_best_pair(heap, pair_counts)
            if pair is None:
                break
            merges.append(pair)
            for created in apply_merge(pair, new_id, words, word_counts, pair_counts, chunks_with):
                heapq.heappush(heap, (-pair_counts[created], *created))
            del pair_counts[pair]
            progress.update()
    return merges
