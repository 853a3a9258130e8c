"""Pairs: stdlib-docstrings (split by module, docstrings removed), user JSONL, framing, bucketing, resumable epochs."""

import ast
import json

import numpy as np
import pytest

from npllm.data.pairs import (IGNORE_INDEX, BucketedPairs, Framing, encode_pairs, first_sentence, load_pairs, pair_batch,
                              pair_batches, padding_fraction, read_pairs_file, source_without_docstring,
                              stdlib_docstrings, write_jsonl)
from npllm.data.sources import DataSourceError

FRAMING = Framing(pad_id=0, bos_id=1, eos_id=2)


def test_first_sentence_stops_at_a_full_stop_followed_by_a_space():
    assert first_sentence("Return the size\nof the chunk.  More text.\n\nDetails.") == "Return the size of the chunk."
    assert first_sentence("Compute os.path.join(a, b) for each pair. Then more.") == \
        "Compute os.path.join(a, b) for each pair."
    assert first_sentence("No full stop here\nat all") == "No full stop here at all"
    assert first_sentence("Is it? Yes.") == "Is it?"


def test_the_docstring_is_removed_from_the_source():
    text = 'class A:\n    @property\n    def size(self):\n        """Return the size.\n\n        Long.\n        """\n' \
           '        # the size\n        return self._size\n'
    tree = ast.parse(text)
    function = tree.body[0].body[0]
    assert source_without_docstring(function, text.splitlines()) == "def size(self):\n    # the size\n    return self._size"
    only = ast.parse('def f():\n    """Only a docstring."""\n').body[0]
    assert source_without_docstring(only, ['def f():', '    """Only a docstring."""']) is None


def test_stdlib_docstrings_is_several_thousand_pairs_split_by_module(tmp_path):
    # a small standard library of three modules: the split must keep each module on one side
    for name in ("alpha", "beta", "gamma", "delta", "epsilon"):
        functions = "".join(f'def {name}_{i}(x):\n    """Compute the {name} number {i} of x."""\n    return x + {i}\n\n'
                            for i in range(4))
        (tmp_path / f"{name}.py").write_text(functions)
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "test_alpha.py").write_text('def t():\n    """A test helper function."""\n    return 1\n')
    pairs = stdlib_docstrings(tmp_path)
    assert len(pairs.train) + len(pairs.test) == 20 and len(pairs.test) == 4  # one module of five held out
    held_out_module = pairs.test_names[0].split(".")[0]
    assert all(name.startswith(held_out_module + ".") for name in pairs.test_names)
    assert not any(held_out_module in source for source, _ in pairs.train)
    assert all('"""' not in source and source.startswith("def ") for source, _ in pairs.train + pairs.test)
    assert pairs.test[0][1].startswith(f"Compute the {held_out_module} number")


def test_the_real_stdlib_docstrings():
    pairs = load_pairs("stdlib-docstrings")
    assert len(pairs.train) > 3000 and len(pairs.test) > 500
    assert not {source for source, _ in pairs.test} & {source for source, _ in pairs.train}
    test_modules = {name.rsplit(".", 1)[0].split(".")[0] for name in pairs.test_names}
    assert len(test_modules) > 10


def test_a_user_jsonl_round_trips_and_holds_a_fifth_out(tmp_path):
    rows = [(f"def f{i}(): return {i}", f"Return {i}.") for i in range(20)]
    write_jsonl(rows, tmp_path / "pairs.jsonl")
    pairs = read_pairs_file(tmp_path / "pairs.jsonl", seed=0)
    assert len(pairs.test) == 4 and sorted(pairs.train + pairs.test) == sorted(rows)
    assert all(name.startswith("pairs.jsonl:") for name in pairs.test_names)


@pytest.mark.parametrize("line, message", [
    ('{"source": "x", "text": "y"}', "line 2: no field 'target'"),
    ('{"source": "", "target": "y"}', "line 2: the source is empty"),
    ('{"source": "x", "target": "  "}', "line 2: the target is empty"),
    ('{"source": 3, "target": "y"}', "line 2: the source is not a string"),
    ('[1, 2]', "line 2: a JSON record must be an object"),
])
def test_a_bad_pairs_file_names_the_file_and_the_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"source": "a", "target": "b"}) + "\n" + line + "\n")
    with pytest.raises(DataSourceError, match=f"bad.jsonl, {message}"):
        read_pairs_file(path, 0)


def test_a_batch_frames_pads_and_shifts_the_target_right():
    batch = pair_batch([[5, 6, 7], [8]], [[10, 11], [12, 13, 14]], FRAMING)
    np.testing.assert_array_equal(batch["input_ids"], [[1, 5, 6, 7, 2], [1, 8, 2, 0, 0]])
    np.testing.assert_array_equal(batch["attention_mask"], [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(batch["decoder_input_ids"], [[1, 10, 11, 0], [1, 12, 13, 14]])
    np.testing.assert_array_equal(batch["targets"], [[10, 11, 2, IGNORE_INDEX], [12, 13, 14, 2]])
    np.testing.assert_array_equal(batch["decoder_attention_mask"], [[1, 1, 1, 0], [1, 1, 1, 1]])


def _random_pairs(n, seed=0):
    rng = np.random.default_rng(seed)
    return [(list(range(rng.integers(1, 60))), list(range(rng.integers(1, 20)))) for _ in range(n)]


def test_bucketing_sees_every_pair_once_an_epoch_with_less_padding():
    pairs = _random_pairs(230)
    bucketed = BucketedPairs(pairs, 8, FRAMING, seed=0)
    seen = []
    for _ in range(len(bucketed.order)):
        chosen = bucketed.order[bucketed.position]
        seen += chosen.tolist()
        bucketed.next_batch()
    assert sorted(seen) == list(range(230))
    rng = np.random.default_rng(0)
    unsorted = [pair_batch(*zip(*[pairs[i] for i in rng.permutation(230)[:8]]), FRAMING) for _ in range(30)]
    assert bucketed.padding_fraction()[0] < 0.5 * padding_fraction(unsorted)[0]


def test_bucketed_batches_resume_mid_epoch_and_across_epochs():
    pairs = _random_pairs(50)
    first = BucketedPairs(pairs, 8, FRAMING, seed=3)
    for _ in range(5):
        first.next_batch()
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint keeps
    expected = [first.next_batch() for _ in range(10)]  # crosses into the next epoch (7 batches an epoch)
    again = BucketedPairs(pairs, 8, FRAMING, seed=99)
    again.load_state_dict(state)
    for batch, wanted in zip([again.next_batch() for _ in range(10)], expected):
        np.testing.assert_array_equal(batch["input_ids"], wanted["input_ids"])
        np.testing.assert_array_equal(batch["targets"], wanted["targets"])


def test_evaluation_sweep_covers_every_pair_once():
    pairs = _random_pairs(21)
    batches = list(pair_batches(pairs, 8, FRAMING))
    assert [len(b["input_ids"]) for b in batches] == [8, 8, 5]
    assert sum(int((b["targets"] != IGNORE_INDEX).sum()) for b in batches) == sum(len(t) + 1 for _, t in pairs)


class _Letters:
    """A tokenizer of one id per character, enough to count lengths."""

    def encode_ordinary(self, text):
        return [ord(c) % 50 for c in text]


def test_pairs_over_the_position_table_are_cut_with_one_warning_each_side():
    pairs = [("a" * 30, "b" * 3), ("c" * 5, "d" * 12), ("e" * 4, "f" * 2)]
    with pytest.warns(UserWarning) as caught:
        encoded = encode_pairs(pairs, _Letters(), max_source=10, max_target=8, what="training pairs")
    messages = [str(w.message) for w in caught]
    assert messages == ["training pairs: 1 of 3 sources are longer than the 10 tokens the model's positions allow"
                        " (the longest has 30); they are cut to 10",
                        "training pairs: 1 of 3 targets are longer than the 8 tokens the model's positions allow"
                        " (the longest has 12); they are cut to 8"]
    assert [(len(s), len(t)) for s, t in encoded] == [(10, 3), (5, 8), (4, 2)]


def test_cli_exports_stdlib_docstrings_as_jsonl(tmp_path, capsys):
    from npllm.cli import main

    out = tmp_path / "test.jsonl"
    assert main(["data", "export", "stdlib-docstrings", "--split", "test", "--out", str(out)]) == 0
    assert "pairs (test;" in capsys.readouterr().out
    pairs = read_pairs_file(out, seed=0)
    assert len(pairs.train) + len(pairs.test) == len(stdlib_docstrings().test)
