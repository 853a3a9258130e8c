"""Text infilling: spans cover the masked share, one <mask> per span, the kept tokens in order; seeded and resumable."""

import itertools

import numpy as np
import pytest

from npllm.data.denoising import (DenoisingWindows, InfillingRule, denoising_evaluation_batches, infill,
                                  permute_sentences, span_lengths)
from npllm.data.pairs import IGNORE_INDEX, Framing
from npllm.errors import SettingError

MASK = 99
RULE = InfillingRule(mask_id=MASK)
FRAMING = Framing(pad_id=96, bos_id=97, eos_id=98)


def test_spans_cover_thirty_percent_and_each_becomes_one_mask():
    rng = np.random.default_rng(0)
    ids = np.arange(200) % 90
    corrupted, kept = infill(ids, RULE, rng)
    assert (~kept).sum() == 60  # round(0.3 x 200) tokens inside spans, exactly
    np.testing.assert_array_equal(corrupted[corrupted != MASK], ids[kept])  # the kept tokens, in their order
    # every run of masked tokens in the original is one <mask> in the corrupted text (zero-length spans add more)
    runs = np.count_nonzero(np.diff(np.concatenate([[0], (~kept).astype(int)])) == 1)
    assert (corrupted == MASK).sum() >= runs
    assert len(corrupted) <= len(ids)


def test_span_lengths_are_poisson_with_mean_lambda_and_sum_to_the_masked_count():
    rng = np.random.default_rng(1)
    lengths = np.concatenate([span_lengths(300, 1000, 3.0, rng)[:-1] for _ in range(200)])  # the last is cut
    assert abs(lengths.mean() - 3.0) < 0.1 and abs((lengths == 0).mean() - np.exp(-3)) < 0.01
    for n_masked in (1, 7, 30):
        assert span_lengths(n_masked, 100, 3.0, rng).sum() == n_masked


def test_a_zero_length_span_inserts_a_mask_where_nothing_is_missing():
    found = False
    for seed in range(200):
        corrupted, kept = infill(np.arange(40), RULE, np.random.default_rng(seed))
        masks_between_kept = np.flatnonzero(corrupted == MASK)
        spans = np.count_nonzero(np.diff(np.concatenate([[0], (~kept).astype(int)])) == 1)
        if len(masks_between_kept) > spans:
            found = True
            break
    assert found, "no seed drew a zero-length span"


def test_never_more_spans_than_masked_tokens_so_the_source_is_never_longer():
    for seed in range(100):
        for n in (2, 3, 5, 10):
            corrupted, kept = infill(np.arange(n), RULE, np.random.default_rng(seed))
            assert len(corrupted) <= n


def test_sentence_permutation_moves_whole_lines():
    ids = np.array([1, 2, 0, 3, 0, 4, 5, 6, 0, 7])  # 0 ends a line
    sentences = [[1, 2, 0], [3, 0], [4, 5, 6, 0], [7]]
    orders = set()
    for seed in range(30):
        shuffled = permute_sentences(ids, [0], np.random.default_rng(seed)).tolist()
        order = next(order for order in itertools.permutations(range(4))
                     if sum((sentences[i] for i in order), []) == shuffled)
        orders.add(order)
    assert len(orders) > 5


def test_windows_are_framed_padded_and_resume_where_they_stopped():
    tokens = np.random.default_rng(0).integers(0, 90, size=600)
    first = DenoisingWindows(tokens, 20, 4, seed=5, rule=RULE, framing=FRAMING)
    first.next_batch()
    state = first.state_dict()
    expected = [first.next_batch() for _ in range(3)]
    again = DenoisingWindows(tokens, 20, 4, seed=123, rule=RULE, framing=FRAMING)
    again.load_state_dict(state)
    for batch, wanted in zip([again.next_batch() for _ in range(3)], expected):
        assert batch.keys() == wanted.keys()
        for name in batch:
            np.testing.assert_array_equal(batch[name], wanted[name])
    batch = expected[0]
    assert batch["decoder_input_ids"].shape == (4, 19) and (batch["decoder_input_ids"][:, 0] == 97).all()
    assert (batch["targets"][:, -1] == 98).all() and (batch["input_ids"][:, 0] == 97).all()
    np.testing.assert_array_equal(batch["targets"][:, :-1], batch["decoder_input_ids"][:, 1:])  # shifted right
    assert batch["input_ids"].shape[1] <= 20 and (batch["kept"][:, -1] == 1).all()  # </s> is copied
    assert ((batch["kept"] == 1).sum(axis=1) == 18 - 5 + 1).all()  # round(0.3 x 18) = 5 masked of 18


def test_evaluation_windows_are_corrupted_the_same_way_every_time():
    tokens = np.random.default_rng(0).integers(0, 90, size=300)
    one, two = (list(denoising_evaluation_batches(tokens, 12, 4, 10, RULE, FRAMING)) for _ in range(2))
    assert len(one) == 3 and sum(len(b["targets"]) for b in one) == 10
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    assert (one[0]["targets"] != IGNORE_INDEX).all()  # windows are full: no target padding


@pytest.mark.parametrize("settings, message", [
    (dict(mask_ratio=0.0), "`mask_ratio` must be in"), (dict(mask_ratio=1.0), "`mask_ratio` must be in"),
    (dict(poisson_lambda=0), "`poisson_lambda` must be"), (dict(poisson_lambda=float("nan")), "`poisson_lambda`"),
])
def test_bad_infilling_settings_name_the_setting(settings, message):
    with pytest.raises(SettingError, match=message):
        InfillingRule(mask_id=MASK, **settings)


def test_too_few_tokens_for_a_window_is_one_line():
    with pytest.raises(SettingError, match="too few for one window"):
        DenoisingWindows(np.arange(5), 20, 2, 0, RULE, FRAMING)
