"""Batches: random training windows reproducible from a seed or a saved state, a fixed evaluation
sweep, and sliding windows with a stride."""

import json

import numpy as np
import pytest

from npllm.data.batches import IGNORE_INDEX, DocumentStarts, RandomWindows, SlidingWindows, evaluation_batches

TOKENS = np.arange(100, dtype=np.uint16)  # token i is i, so a window shows where it starts


def test_inputs_and_targets_are_shifted_by_one():
    batch = RandomWindows(TOKENS, context_length=8, batch_size=4, seed=0).next_batch()
    inputs, targets = batch["input_ids"], batch["targets"]
    assert inputs.shape == targets.shape == (4, 8) and inputs.dtype == np.int64
    np.testing.assert_array_equal(targets, inputs + 1)
    np.testing.assert_array_equal(np.diff(inputs, axis=1), 1)  # consecutive tokens
    assert inputs.min() >= 0 and targets.max() <= 99


def test_the_same_seed_gives_the_same_batches_and_another_seed_others():
    def draw(seed):
        windows = RandomWindows(TOKENS, context_length=8, batch_size=4, seed=seed)
        return np.stack([windows.next_batch()["input_ids"] for _ in range(5)])
    np.testing.assert_array_equal(draw(1), draw(1))
    assert not np.array_equal(draw(1), draw(2))


def test_every_start_is_reachable_including_the_last():
    windows = RandomWindows(np.arange(12), context_length=8, batch_size=200, seed=0)
    assert set(windows.next_batch()["input_ids"][:, 0]) == {0, 1, 2, 3}


def test_a_saved_state_resumes_bit_exactly_through_json():
    uninterrupted = RandomWindows(TOKENS, context_length=8, batch_size=4, seed=7)
    for _ in range(3):
        uninterrupted.next_batch()
    saved = json.loads(json.dumps(uninterrupted.state_dict()))  # as it travels through state.json
    resumed = RandomWindows(TOKENS, context_length=8, batch_size=4, seed=12345)
    resumed.load_state_dict(saved)
    for _ in range(3):
        expected, got = uninterrupted.next_batch(), resumed.next_batch()
        assert expected.keys() == got.keys() == {"input_ids", "targets"}
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name])


def test_sliding_windows_with_a_stride():
    dataset = SlidingWindows(np.arange(20), context_length=4, stride=3)
    assert len(dataset) == 6  # starts 0, 3, 6, 9, 12, 15; the window at 15 ends at token 19
    window = dataset[5]
    np.testing.assert_array_equal(window["input_ids"], [15, 16, 17, 18])
    np.testing.assert_array_equal(window["targets"], [16, 17, 18, 19])
    np.testing.assert_array_equal(dataset[-1]["input_ids"], window["input_ids"])
    with pytest.raises(IndexError, match="window 6 out of range for 6 windows"):
        dataset[6]
    assert len(SlidingWindows(np.arange(20), context_length=4)) == 4  # stride defaults to T: starts 0, 4, 8, 12


def test_the_evaluation_sweep_is_fixed_disjoint_and_limited():
    batches = list(evaluation_batches(TOKENS, context_length=10, batch_size=4))
    assert [len(batch["input_ids"]) for batch in batches] == [4, 4, 1]  # 9 windows: starts 0, 10, ..., 80
    starts = np.concatenate([batch["input_ids"][:, 0] for batch in batches])
    np.testing.assert_array_equal(starts, np.arange(0, 90, 10))
    limited = list(evaluation_batches(TOKENS, context_length=10, batch_size=4, max_windows=5))
    assert [len(batch["input_ids"]) for batch in limited] == [4, 1]


def test_too_few_tokens_for_one_window_is_a_clear_error():
    with pytest.raises(ValueError, match=r"the validation tokens \(10\) are too few for one window"):
        evaluation_batches(np.arange(10), context_length=10, batch_size=2)
    with pytest.raises(ValueError, match="the training tokens"):
        RandomWindows(np.arange(5), context_length=8, batch_size=2, seed=0)


def test_windows_that_respect_documents_lie_inside_one_or_ignore_what_follows_its_end():
    eot = 99
    lengths = [3, 30, 5, 40, 2, 12]  # documents, each ending with eot; some shorter than the window
    tokens = np.concatenate([np.append(np.arange(1, n), eot) for n in lengths])
    starts = DocumentStarts(tokens, eot, length=9).draw(np.random.default_rng(0), 4000)
    document_starts = np.cumsum([0] + lengths[:-1])
    fits = {s for first, n in zip(document_starts, lengths) for s in range(first, first + max(n - 8, 1))}
    assert set(starts.tolist()) == fits  # every allowed start is drawn, and no other
    windows = RandomWindows(tokens, context_length=8, batch_size=64, seed=3, boundary_id=eot)
    batch = windows.next_batch()
    after = np.cumsum(batch["input_ids"] == eot, axis=1) > 0
    assert (batch["targets"][after] == IGNORE_INDEX).all() and (batch["targets"][~after] != IGNORE_INDEX).all()
    resumed = RandomWindows(tokens, context_length=8, batch_size=64, seed=3, boundary_id=eot)
    resumed.load_state_dict(windows.state_dict())
    np.testing.assert_array_equal(resumed.next_batch()["targets"], windows.next_batch()["targets"])
