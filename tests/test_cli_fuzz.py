"""Random combinations of flag values: every command ends in success or one clear line with exit 2, never a traceback.

Each value is drawn from a pool that mixes sensible values with the kinds of
wrong ones people type (zero, negative, NaN, infinity, a word, a huge number),
for every numeric flag of ``npllm train`` and ``npllm generate``.  The draws
are seeded, so a failure repeats.  A run that is accepted trains for at most
two steps of a tiny model, so the whole test takes a few seconds.
"""

import numpy as np
import pytest

from npllm.cli import main

pytestmark = pytest.mark.slow

BAD_NUMBERS = ["0", "-1", "-5", "nan", "inf", "-inf", "1e30", "word", "1.5"]
TRAIN_FLAGS = {  # flag -> sensible values (the bad ones are added to each)
    "--lr": ["0.01", "0.002"], "--min-lr": ["0.0001", "0"], "--warmup-steps": ["0", "1"],
    "--decay-steps": ["2", "10"], "--weight-decay": ["0", "0.1"], "--beta2": ["0.95", "0.9"],
    "--grad-clip": ["1", "0.5"], "--dropout": ["0", "0.1"], "--batch-size": ["2", "4"], "--grad-accum": ["1", "2"],
    "--eval-interval": ["1", "2"], "--eval-windows": ["2", "4"], "--validation-fraction": ["0.05", "0.2"],
    "--tokenizer-chars": ["100000", "2000"], "--seed": ["0", "7"], "--workers": ["1", "2"],
}
GENERATE_FLAGS = {
    "--max-new-tokens": ["0", "3"], "--temperature": ["0", "0.8"], "--top-k": ["1", "5"], "--top-p": ["0.5", "1"],
    "--seed": ["0", "3"],
}
SHAPE = ["--vocab-size", "300", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--context-length", "8",
         "--max-steps", "2", "--quiet"]


def random_flags(rng, table, count):
    flags = []
    for flag in rng.choice(sorted(table), size=count, replace=False):
        pool = table[flag] + BAD_NUMBERS
        flags += [flag, str(pool[rng.integers(len(pool))])]
    return flags


def run_ends_cleanly(argv, capsys):
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse refusing a value that is not a number
        status = exit_.code
    err = capsys.readouterr().err
    assert status in (0, 2), (argv, err)
    if status == 2:  # one line saying what is wrong (argparse puts its usage lines before it)
        last = err.strip().splitlines()[-1]
        assert "Traceback" not in err and last.startswith(f"npllm {argv[0]}") and ": error: " in last, (argv, err)
    return status


def test_random_train_flags_end_in_success_or_one_line(tiny_corpus, tmp_path, capsys):
    rng = np.random.default_rng(12)
    outcomes = []
    for case in range(30):
        argv = ["train", "--data", str(tiny_corpus), "--out", str(tmp_path / f"run{case}"), *SHAPE,
                *random_flags(rng, TRAIN_FLAGS, count=int(rng.integers(1, 4)))]
        outcomes.append(run_ends_cleanly(argv, capsys))
    assert 0 in outcomes and 2 in outcomes  # the pools really reach both ends


def test_random_generate_flags_end_in_success_or_one_line(tiny_corpus, tmp_path, capsys):
    assert main(["train", "--data", str(tiny_corpus), "--out", str(tmp_path / "run"), *SHAPE]) == 0
    rng = np.random.default_rng(5)
    outcomes = [run_ends_cleanly(["generate", "--checkpoint", str(tmp_path / "run"), "--prompt", "the ",
                                  *random_flags(rng, GENERATE_FLAGS, count=int(rng.integers(1, 4)))], capsys)
                for _ in range(40)]
    assert 0 in outcomes and 2 in outcomes


DISTILL_FLAGS = {"--temperature": ["2", "0.5"], "--alpha": ["0.5", "1"], "--student-init": ["random", "teacher-layers"],
                 "--lr": ["0.01"], "--batch-size": ["2"], "--n-layer": ["1"]}
CLASSIFY_FLAGS = {"--train": ["all", "last-blocks", "lora"], "--last-blocks": ["1", "2"], "--lora-rank": ["2", "4"],
                  "--lora-alpha": ["4"], "--init": ["pretrained", "random"], "--batch-size": ["4"], "--lr": ["0.01"]}


def test_random_distill_and_finetune_flags_end_in_success_or_one_line(tiny_corpus, tmp_path, capsys):
    teacher = str(tmp_path / "teacher")
    assert main(["train", "--data", str(tiny_corpus), "--out", teacher, *SHAPE]) == 0
    labelled = tmp_path / "labelled.jsonl"
    labelled.write_text("\n".join(f'{{"text": "{word} {i}", "label": "{word}"}}' for word in ("up", "down")
                                  for i in range(10)))
    rng = np.random.default_rng(3)
    outcomes = []
    for case in range(12):
        outcomes.append(run_ends_cleanly(
            ["distill", "--teacher", teacher, "--data", str(tiny_corpus), "--out", str(tmp_path / f"d{case}"),
             "--n-head", "2", "--n-embd", "16", "--max-steps", "2", "--quiet",
             *random_flags(rng, DISTILL_FLAGS, count=int(rng.integers(1, 4)))], capsys))
        outcomes.append(run_ends_cleanly(
            ["finetune", "classify", "--checkpoint", teacher, "--data", str(labelled), "--out",
             str(tmp_path / f"c{case}"), "--max-steps", "2", "--quiet",
             *random_flags(rng, CLASSIFY_FLAGS, count=int(rng.integers(1, 4)))], capsys))
    assert 0 in outcomes and 2 in outcomes
