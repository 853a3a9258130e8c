"""Sentence pairs for next-sentence prediction: the layout, true and random second segments, seeded and resumable."""

import numpy as np
import pytest

from npllm.data.masking import IGNORE_INDEX, MaskingRule
from npllm.data.sentence_pairs import (IS_NEXT, IS_RANDOM, SentencePairs, sentence_pair_batch,
                                       sentence_pair_evaluation_batches)
from npllm.errors import SettingError

RULE = MaskingRule(mask_id=99, random_ids=90, rate=1e-9)  # (one masked position per row: the rest is readable)
CLS, SEP = 91, 92


def test_rows_are_cls_a_sep_b_sep_with_token_types_and_half_are_the_true_continuation():
    tokens = np.arange(2000) % 90  # a token's value says where it came from (mod 90)
    batch = sentence_pair_batch(tokens, 400, 13, RULE, CLS, SEP, np.random.default_rng(0))
    ids = np.where(batch["targets"] != IGNORE_INDEX, batch["targets"], batch["input_ids"])  # unmasked
    assert ids.shape == (400, 16) and (ids[:, 0] == CLS).all() and (ids[:, -1] == SEP).all()
    labels = batch["next_sentence_labels"]
    assert abs((labels == IS_NEXT).mean() - 0.5) < 0.08
    for row, types, label in zip(ids, batch["token_type_ids"], labels):
        a = int(np.flatnonzero(row == SEP)[0]) - 1  # |A|: the first [SEP] closes it
        assert 1 <= a <= 12 and (types[:a + 2] == 0).all() and (types[a + 2:] == 1).all()
        first, second = row[1:a + 1], row[a + 2:-1]
        assert (np.diff(first) % 90 == 1).all() and (np.diff(second) % 90 == 1).all()  # contiguous segments
        if label == IS_NEXT:
            assert (second[0] - first[-1]) % 90 == 1
    assert (batch["targets"][:, [0, -1]] == IGNORE_INDEX).all()


def test_a_random_second_segment_never_lies_near_the_first():
    tokens = np.arange(600)  # every token's value is its position
    batch = sentence_pair_batch(tokens, 500, 13, RULE, 1000, 1001, np.random.default_rng(1))
    ids = np.where(batch["targets"] != IGNORE_INDEX, batch["targets"], batch["input_ids"])
    for row, label in zip(ids, batch["next_sentence_labels"]):
        if label == IS_RANDOM:
            a = int(np.flatnonzero(row == 1001)[0]) - 1
            start, b_start, b_end = row[1], row[a + 2], row[-2]
            assert b_end < start - 13 or b_start >= start + 26


def test_pairs_resume_where_they_stopped_and_evaluation_pairs_are_the_same_every_time():
    tokens = np.random.default_rng(0).integers(0, 90, size=500)
    first = SentencePairs(tokens, 12, 4, seed=3, rule=MaskingRule(99, 90), cls_id=CLS, sep_id=SEP)
    first.next_batch()
    state = first.state_dict()
    expected = [first.next_batch() for _ in range(3)]
    again = SentencePairs(tokens, 12, 4, seed=999, rule=MaskingRule(99, 90), cls_id=CLS, sep_id=SEP)
    again.load_state_dict(state)
    for batch, wanted in zip([again.next_batch() for _ in range(3)], expected):
        for name in wanted:
            np.testing.assert_array_equal(batch[name], wanted[name])
    sweeps = [list(sentence_pair_evaluation_batches(tokens, 12, 4, 10, MaskingRule(99, 90), CLS, SEP))
              for _ in range(2)]
    assert [len(b["next_sentence_labels"]) for b in sweeps[0]] == [4, 4, 2]
    for one, other in zip(*sweeps):
        for name in one:
            np.testing.assert_array_equal(one[name], other[name])


def test_too_short_a_window_or_a_stream_is_one_line():
    with pytest.raises(SettingError, match="`context_length` must be at least 5"):
        SentencePairs(np.arange(100), 4, 2, 0, RULE, CLS, SEP)
    with pytest.raises(SettingError, match=r"the training tokens \(30\) are too few for sentence pairs"):
        SentencePairs(np.arange(30), 12, 2, 0, RULE, CLS, SEP)
