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

Left out on purpose: the cleverer priority-queue and linked-list versions. A chunk is a
word or a run of spaces, a handful of bytes, and the caller caches chunks it has seen,
so the plain loop below runs once per distinct chunk and is fast enough.
"""

BYTE_STRINGS = [bytes([byte]) for byte in range(256)]  # BYTE_STRINGS[b] == bytes([b]), built once

NOT_A_TOKEN = float("inf")


def encode_chunk(chunk: bytes, ranks: dict[bytes, int]) -> list[int]:
    """The token ids for one chunk's bytes: merge by lowest rank until nothing merges."""
    rank = ranks.get(chunk)
    if rank is not None:
        return [rank]  # the whole chunk is a token: the common case for frequent words
    parts = [BYTE_STRINGS[byte] for byte in chunk]
    pair_ranks = [ranks.get(left + right, NOT_A_TOKEN) for left, right in zip(parts, parts[1:])]
    while pair_ranks:
        best_rank = min(pair_ranks)
        if best_rank == NOT_A_TOKEN:
            break
        i = pair_ranks.index(best_rank)
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
        del pair_ranks[i]
        if i > 0:
            pair_ranks[i - 1] = ranks.get(parts[i - 1] + parts[i], NOT_A_TOKEN)
        if i < len(pair_ranks):
            pair_ranks[i] = ranks.get(parts[i] + parts[i + 1], NOT_A_TOKEN)
    return [ranks[part] for part in parts]
