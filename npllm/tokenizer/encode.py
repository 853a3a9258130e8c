"""Encoding one chunk: apply the learned merges, lowest rank first.

Training produced a ranked vocabulary: every token is a byte string, and its rank (its
id) says when it was learned. To encode a chunk, start from its single bytes and keep
joining the adjacent pair whose joined bytes have the lowest rank, until no adjacent
pair joins into a known token. Replaying merges in the order they were learned
reproduces, on a chunk never seen in training, the choices training would have made.

This is tiktoken's rule, and it needs only the ranks, not the merge list: the candidate
for two neighbours is simply their concatenation, looked up in the vocabulary. That is why
a tokenizer can be saved as nothing but (token bytes, rank) lines. When two candidates have
the same rank (they are the same bytes, e.g. "ab" twice in "abab"), the leftmost wins.

To avoid building and hashing byte strings in the inner loop, ``pair_table`` precomputes,
for every token that can be cut into two tokens, (left id, right id) -> the token's id.
Looking up a pair of ids there is the same question as looking up the concatenated bytes
in the ranks, and since a token's id is its rank, the merged part is just that id.

Left out on purpose: the priority-queue and linked-list versions that are faster on long
inputs. A chunk is a word or a run of spaces, about seven bytes on average, and the caller
caches chunks it has seen, so the plain loop below runs once per distinct chunk.

Many chunks at once. A cold cache still meets tens of thousands of distinct chunks in a
few megabytes (35,000 in 5 MB of Python source), and the loop above then costs about as
much as cutting the whole text into chunks. ``encode_chunks`` runs the *same* loop on all
of them in lockstep with NumPy: every round, each chunk finds its lowest-ranked pair
(leftmost on a tie) and merges it, exactly the step ``encode_chunk`` takes; a chunk with
nothing left to merge leaves the batch. So a round costs a few passes over flat arrays
instead of a Python loop per chunk, and the rounds number the merges of the longest chunk.
Pair lookups become a binary search in the sorted pair keys (``PairLookup``). The
per-chunk loop stays the reference, and the tests check that both give the same ids.
"""

import sys

import numpy as np

NOT_A_TOKEN = sys.maxsize  # the "rank" of a pair that does not join into a token; above every real rank


def pair_table(ranks: dict[bytes, int]) -> dict[tuple[int, int], int]:
    """(left id, right id) -> id of their concatenation, for every pair of tokens that joins into a token."""
    table = {}
    for token, rank in ranks.items():
        for cut in range(1, len(token)):
            left, right = ranks.get(token[:cut]), ranks.get(token[cut:])
            if left is not None and right is not None:
                table[left, right] = rank
    return table


def encode_chunk(chunk: bytes, byte_ids: list[int], pairs: dict[tuple[int, int], int]) -> list[int]:
    """The token ids for one chunk's bytes: merge by lowest rank until nothing merges.

    ``byte_ids[b]`` is the id of the single byte b; ``pairs`` comes from ``pair_table``.
    """
    parts = [byte_ids[byte] for byte in chunk]
    pair_ranks = [pairs.get(pair, NOT_A_TOKEN) for pair in zip(parts, parts[1:])]
    while pair_ranks:
        merged = min(pair_ranks)
        if merged == NOT_A_TOKEN:
            break
        i = pair_ranks.index(merged)
        parts[i] = merged  # parts[i] and parts[i + 1] become one token, whose id is its rank
        del parts[i + 1], pair_ranks[i]
        if i > 0:
            pair_ranks[i - 1] = pairs.get((parts[i - 1], merged), NOT_A_TOKEN)
        if i < len(pair_ranks):
            pair_ranks[i] = pairs.get((merged, parts[i + 1]), NOT_A_TOKEN)
    return parts



class PairsBelow:
    """``pairs`` as if only the tokens with ids below ``limit`` had been learned (a ``dict.get`` look-alike)."""

    def __init__(self, pairs: dict[tuple[int, int], int], limit: int):
        self.pairs, self.limit = pairs, limit

    def get(self, pair: tuple[int, int], default: int) -> int:
        merged = self.pairs.get(pair, default)
        return merged if merged < self.limit else default


def merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge list a ranked vocabulary stands for: the two tokens each multi-byte token is made of, by rank.

    Formats such as GPT-2's ``merges.txt`` store merges, not ranks.  A token of
    rank r was made, when it was learned, from two tokens learned before it:
    the two parts that encoding its bytes with only the ranks below r leaves
    (``PairsBelow``).  A token whose bytes do not come down to two such parts
    could never be produced by encoding; it is refused, naming it.
    """
    pairs = pair_table(ranks)
    byte_ids = [ranks[bytes([byte])] for byte in range(256)]
    id_to_bytes = {rank: token for token, rank in ranks.items()}
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) == 1:
            continue
        parts = encode_chunk(token, byte_ids, PairsBelow(pairs, rank))
        if len(parts) != 2:
            raise ValueError(f"token {token!r} (id {rank}) is not the merge of two tokens learned before it:"
                             f" its bytes encode to {len(parts)} earlier tokens")
        merges.append((id_to_bytes[parts[0]], id_to_bytes[parts[1]]))
    return merges

class PairLookup:
    """``pair_table`` as sorted NumPy arrays: look up many (left, right) pairs in one call.

    ``byte_pairs[a, b]`` answers directly for the tokens of two single bytes a and b, the
    pairs every chunk starts from (the largest batch of lookups).
    """

    def __init__(self, pairs: dict[tuple[int, int], int], byte_ids: list[int]):
        self.base = max(map(max, pairs), default=0) + 1  # key = left * base + right is unique per pair
        keys = np.fromiter((left * self.base + right for left, right in pairs), np.int64, len(pairs))
        order = np.argsort(keys)
        # A last key above every real one, so that a search never runs off the end.
        self.keys = np.append(keys[order], NOT_A_TOKEN)
        self.ids = np.append(np.fromiter(pairs.values(), np.int64, len(pairs))[order], NOT_A_TOKEN)
        byte_ids = np.asarray(byte_ids, np.int64)
        self.byte_pairs = self(byte_ids[:, None], byte_ids[None, :])  # (256, 256)

    def __call__(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Elementwise ``pairs.get((left, right), NOT_A_TOKEN)``."""
        wanted = left * self.base + right
        found = np.searchsorted(self.keys, wanted)
        return np.where(self.keys[found] == wanted, self.ids[found], NOT_A_TOKEN)


def encode_chunks(chunks: list[bytes], byte_ids: list[int], pairs: PairLookup) -> list[list[int]]:
    """``[encode_chunk(chunk, ...) for chunk in chunks]``, computed for all chunks at once.

    The chunks' parts sit side by side in flat arrays: ``parts`` (token ids), ``owner`` (which
    chunk a part belongs to), ``first`` (is it its chunk's first part) and ``pair_ranks``
    (the id its pair with the next part joins into, NOT_A_TOKEN at a chunk's last part).
    """
    lengths = np.fromiter(map(len, chunks), np.int64, len(chunks))
    raw = np.frombuffer(b"".join(chunks), np.uint8)
    parts = np.asarray(byte_ids, np.int64)[raw]
    owner = np.repeat(np.arange(len(chunks)), lengths)
    first = np.zeros(len(parts), bool)
    first[(np.cumsum(lengths) - lengths)[lengths > 0]] = True
    pair_ranks = np.full(len(parts), NOT_A_TOKEN)
    inner = np.flatnonzero(~first[1:])  # parts followed by a part of the same chunk
    pair_ranks[inner] = pairs.byte_pairs[raw[inner], raw[inner + 1]]
    finished_owner, finished_parts = [], []
    while len(parts):
        starts = np.flatnonzero(first)
        lowest = np.minimum.reduceat(pair_ranks, starts)  # each chunk's lowest pair rank
        lowest = np.repeat(lowest, np.diff(starts, append=len(parts)))  # ... beside each of its parts
        finished = lowest == NOT_A_TOKEN
        candidates = np.flatnonzero(pair_ranks == lowest)
        candidates = candidates[~finished[candidates]]
        at = candidates[np.diff(owner[candidates], prepend=-1) != 0]  # the leftmost in each chunk
        parts[at] = pair_ranks[at]  # parts at and at + 1 become one token, whose id is its rank
        keep = ~finished
        keep[at + 1] = False
        finished_owner.append(owner[finished])
        finished_parts.append(parts[finished])
        at = np.cumsum(keep)[at] - 1  # where the merged parts will sit once the others are gone
        parts, owner, first, pair_ranks = parts[keep], owner[keep], first[keep], pair_ranks[keep]
        has_right = ~np.append(first, True)[at + 1]
        pair_ranks[at] = NOT_A_TOKEN
        pair_ranks[at[has_right]] = pairs(parts[at[has_right]], parts[at[has_right] + 1])
        has_left = at[~first[at]]
        pair_ranks[has_left - 1] = pairs(parts[has_left - 1], parts[has_left])
    owner = np.concatenate([*finished_owner, np.zeros(0, np.int64)])
    ids = np.concatenate([*finished_parts, np.zeros(0, np.int64)])[np.argsort(owner, kind="stable")].tolist()
    ends = np.cumsum(np.bincount(owner, minlength=len(chunks))).tolist()
    return [ids[start:end] for start, end in zip([0, *ends], ends)]
