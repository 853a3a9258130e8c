"""Masked-LM batches: how many positions are chosen and where, 80/10/10, framing, seeded and resumable masks."""

import numpy as np
import pytest

from npllm.data.masking import (IGNORE_INDEX, Boundaries, MaskedWindows, MaskingRule, framed_windows, mask_tokens,
                                masked_evaluation_batches)
from npllm.errors import SettingError

RULE = MaskingRule(mask_id=99, random_ids=90)


def test_each_row_chooses_its_share_of_the_choosable_positions_only():
    ids = np.arange(4 * 40).reshape(4, 40) % 90
    choosable = np.ones(ids.shape, dtype=bool)
    choosable[:, :2] = False
    choosable[3] = False  # a row of padding: nothing to choose
    choosable[2, 10:] = False  # 8 choosable: round(1.2) = 1
    masked, targets = mask_tokens(ids, choosable, RULE, np.random.default_rng(0))
    chosen = targets != IGNORE_INDEX
    assert chosen.sum(axis=1).tolist() == [round(0.15 * 38), round(0.15 * 38), 1, 0]
    assert not (chosen & ~choosable).any()
    np.testing.assert_array_equal(targets[chosen], ids[chosen])
    np.testing.assert_array_equal(masked[~chosen], ids[~chosen])


def test_chosen_positions_are_80_percent_mask_10_random_10_kept():
    ids = np.random.default_rng(1).integers(0, 90, size=(400, 100))
    masked, targets = mask_tokens(ids, np.ones(ids.shape, dtype=bool), RULE, np.random.default_rng(2))
    chosen = targets != IGNORE_INDEX
    as_mask = (masked == 99)[chosen].mean()
    kept = (masked == ids)[chosen].mean()  # (a random token equal to the original counts as kept)
    assert abs(as_mask - 0.8) < 0.01 and abs(kept - (0.1 + 0.1 / 90)) < 0.01
    assert masked.max() <= 99 and not ((masked >= 90) & (masked != 99)).any()  # random tokens are ordinary ids


def test_framed_windows_add_cls_and_sep():
    tokens = np.arange(20)
    np.testing.assert_array_equal(framed_windows(tokens, np.array([0, 5]), 3, 101, 102),
                                  [[101, 0, 1, 2, 102], [101, 5, 6, 7, 102]])


def test_masked_windows_resume_where_they_stopped_and_never_mask_cls_or_sep():
    tokens = np.random.default_rng(0).integers(0, 90, size=500)
    first = MaskedWindows(tokens, 12, 4, seed=3, rule=RULE, cls_id=91, sep_id=92)
    first.next_batch()
    state = first.state_dict()
    expected = [first.next_batch() for _ in range(3)]
    again = MaskedWindows(tokens, 12, 4, seed=999, rule=RULE, cls_id=91, sep_id=92)
    again.load_state_dict(state)
    for batch, wanted in zip([again.next_batch() for _ in range(3)], expected):
        for name in ("input_ids", "targets"):
            np.testing.assert_array_equal(batch[name], wanted[name])
    batch = expected[0]
    assert batch["input_ids"].shape == (4, 12) and (batch["input_ids"][:, 0] == 91).all()
    assert (batch["input_ids"][:, -1] == 92).all() and (batch["targets"][:, [0, -1]] == IGNORE_INDEX).all()


def test_evaluation_batches_mask_the_same_positions_every_time():
    tokens = np.random.default_rng(0).integers(0, 90, size=300)
    sweeps = [list(masked_evaluation_batches(tokens, 12, 4, 10, RULE, 91, 92)) for _ in range(2)]
    assert [len(b["input_ids"]) for b in sweeps[0]] == [4, 4, 2]
    for a, b in zip(*sweeps):
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
        np.testing.assert_array_equal(a["targets"], b["targets"])


@pytest.mark.parametrize("make, message", [
    (lambda: MaskingRule(99, 90, rate=0.0), "`mask_rate` must be in"),
    (lambda: MaskingRule(99, 90, mask_share=0.9, random_share=0.2), "sum to at most 1"),
    (lambda: MaskedWindows(np.arange(5), 2, 1, 0, RULE, 91, 92), "`context_length` must be at least 3"),
    (lambda: MaskedWindows(np.arange(5), 12, 1, 0, RULE, 91, 92), "too few for one window"),
])
def test_bad_settings_are_named(make, message):
    with pytest.raises(SettingError, match=message):
        make()


def test_windows_that_respect_documents_pad_after_the_first_boundary_and_never_choose_it():
    sep, pad = 92, 90
    tokens = np.concatenate([np.append(np.arange(1, n), sep) for n in [4, 20, 6, 3, 25]])
    windows = MaskedWindows(tokens, 12, 64, seed=1, rule=RULE, cls_id=91, sep_id=sep, boundaries=Boundaries(sep, pad))
    batch = windows.next_batch()
    padded = batch["attention_mask"] == 0
    assert padded.any() and (batch["input_ids"][padded] == pad).all() and (batch["targets"][padded] == IGNORE_INDEX).all()
    for row, mask in zip(batch["input_ids"], batch["attention_mask"]):
        kept = row[mask == 1]
        assert kept[0] == 91 and kept[-1] == sep and sep not in kept[1:-1]  # [CLS] one document's text [SEP]
