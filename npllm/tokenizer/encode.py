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
"""

import sys

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
