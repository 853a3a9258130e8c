"""The command line: help, each subcommand end to end on a tiny configuration, and bad input.

Every mistake a user can make (a missing file, an empty corpus, a checkpoint that is
missing, damaged or from another configuration, an impossible setting) ends with
exit status 2 and exactly one line on stderr, never a traceback.
"""

import argparse
import io
import json
import shutil

import numpy as np
import pytest

from npllm.cli import BENCHMARKS, main
from npllm.generation import generate_tokens
from npllm.training.pretrain import END_OF_TEXT, load_model

TINY_FLAGS = ["--vocab-size", "300", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--context-length", "16",
              "--batch-size", "4", "--eval-windows", "4", "--warmup-steps", "1", "--quiet"]


def test_help_lists_commands(capsys):
    assert main([]) == 0
    assert "bench" in capsys.readouterr().out


def test_unknown_command_is_one_clear_line(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def expected_continuation(run_dir, prompt, max_new_tokens, temperature, seed):
    """What npllm generate should print after the prompt, computed through the Python API."""
    model, tokenizer = load_model(run_dir)
    stop = tokenizer.special_tokens[END_OF_TEXT]
    tokens = list(generate_tokens(model, tokenizer.encode(prompt), max_new_tokens, temperature, seed=seed,
                                  stop_token=stop))
    return tokenizer.decode([token for token in tokens if token != stop])


def test_train_resume_and_generate_end_to_end(tiny_corpus, tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    assert main(["train", "--data", str(tiny_corpus), "--out", run_dir, "--max-steps", "2", *TINY_FLAGS]) == 0
    assert f"done: step 2; checkpoint in {run_dir}/checkpoint" in capsys.readouterr().out
    assert main(["train", "--resume", "--out", run_dir, "--max-steps", "3", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"resumed {run_dir} at step 2" in out and "done: step 3" in out

    generate = ["generate", "--checkpoint", run_dir, "--prompt", "the cat", "--max-new-tokens", "8", "--seed", "3"]
    for extra in ([], ["--no-cache"]):
        assert main(generate + extra) == 0
        assert capsys.readouterr().out == "the cat" + expected_continuation(run_dir, "the cat", 8, 0.8, 3) + "\n"


def test_optional_integer_flag_parses_as_an_integer(tiny_corpus, tmp_path):
    run_dir = tmp_path / "run"
    assert main(["train", "--data", str(tiny_corpus), "--out", str(run_dir), "--max-steps", "1", "--decay-steps", "5",
                 *TINY_FLAGS]) == 0
    assert json.loads((run_dir / "checkpoint" / "state.json").read_text())["config"]["decay_steps"] == 5


def test_tokenizer_train_encode_decode_round_trip(tiny_corpus, tmp_path, capsys, monkeypatch):
    tokenizer = str(tmp_path / "tokenizer.txt")
    assert main(["tokenizer", "train", "--data", str(tiny_corpus), "--vocab-size", "280", "--out", tokenizer]) == 0
    assert f"wrote {tokenizer}" in capsys.readouterr().out
    text = "the cat met a fish <|endoftext|> ünïcode"
    assert main(["tokenizer", "encode", "--tokenizer", tokenizer, text]) == 0
    ids = capsys.readouterr().out.split()
    assert all(0 <= int(token) < 280 for token in ids) and len(ids) < len(text.encode())  # merges were used
    monkeypatch.setattr("sys.stdin", io.StringIO(" ".join(ids)))  # decode reads standard input
    assert main(["tokenizer", "decode", "--tokenizer", tokenizer]) == 0
    assert capsys.readouterr().out == text + "\n"


@pytest.mark.parametrize("argv, printed", [
    (["ops", "--length", "20", "--repeats", "1"], "us/op"),
    (["generate", "--preset", "tiny", "--new-tokens", "2"], "with KV cache"),
    (["tokenizer", "--megabytes", "0.005", "--vocab-size", "270"], "vocab 270"),
    (["train", "--preset", "tiny", "--steps", "1", "--warmup", "0"], "tokens/s"),
    (["train", "--preset", "tiny", "--steps", "1", "--warmup", "0", "--workers", "1"], "npllm on 1 worker thread "),
    (["products", "--preset", "tiny", "--repeats", "1"], "numpy, one shard per core:"),
    (["checkpoint", "--shape", "tiny", "--repeats", "1"], "SHA-256 of the weights file alone"),
], ids=["ops", "generate", "tokenizer", "train", "train on one thread", "products", "checkpoint"])
@pytest.mark.bench
def test_bench_runs_with_tiny_settings(argv, printed, capsys):
    assert main(["bench", *argv]) == 0
    assert printed in capsys.readouterr().out


@pytest.mark.bench
@pytest.mark.parity
def test_bench_train_compares_with_torch_and_ends_with_json(capsys):
    pytest.importorskip("torch")
    assert main(["bench", "train", "--preset", "tiny", "--steps", "1", "--warmup", "0", "--compare-torch", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["tokens_per_s"] > 0 and summary["torch"]["tokens_per_s"] > 0
    assert summary["speedup_vs_torch"] == pytest.approx(summary["tokens_per_s"] / summary["torch"]["tokens_per_s"])


@pytest.mark.bench
@pytest.mark.parity
def test_bench_train_runs_a_bert_beside_torch(capsys):
    pytest.importorskip("torch")
    assert main(["bench", "train", "--model", "bert", "--preset", "tiny", "--steps", "1", "--warmup", "0",
                 "--compare-torch", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["model"] == "bert" and summary["tokens_per_s"] > 0 and summary["torch"]["tokens_per_s"] > 0


@pytest.mark.bench
@pytest.mark.parity
def test_bench_train_runs_a_seq2seq_beside_torch(capsys):
    pytest.importorskip("torch")
    assert main(["bench", "train", "--model", "seq2seq", "--preset", "tiny", "--steps", "1", "--warmup", "0",
                 "--compare-torch", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["model"] == "seq2seq" and summary["tokens_per_s"] > 0 and summary["torch"]["tokens_per_s"] > 0


@pytest.mark.bench
@pytest.mark.parity
def test_bench_products_compares_with_torch_and_ends_with_json(capsys):
    pytest.importorskip("torch")
    assert main(["bench", "products", "--preset", "tiny", "--repeats", "1", "--compare-torch", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    sharded, torch_figures = summary["numpy, one shard per core"], summary["torch"]
    assert summary["torch_speedup_over_numpy_sharded"] == pytest.approx(sharded["ms"] / torch_figures["ms"])


@pytest.mark.bench
@pytest.mark.parametrize("what", sorted(BENCHMARKS))
def test_bench_help_is_the_benchmarks_own(what, capsys):
    with pytest.raises(SystemExit) as exit_status:
        main(["bench", what, "--help"])
    assert exit_status.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: npllm bench {what} ")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_text):
    """A trained run, a damaged copy of it, an empty folder and a corpus file, with the cache isolated."""
    folder = tmp_path_factory.mktemp("cli")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NPLLM_CACHE", str(folder / "cache"))
        (folder / "tiny.txt").write_text(tiny_text, encoding="utf-8")
        (folder / "empty").mkdir()
        assert main(["train", "--data", str(folder / "tiny.txt"), "--out", str(folder / "run"), "--max-steps", "1",
                     *TINY_FLAGS]) == 0
        shutil.copytree(folder / "run", folder / "corrupt")
        (folder / "corrupt" / "checkpoint" / "model.safetensors").write_bytes(b"not safetensors at all")
        yield folder


BAD_INPUT = {
    "missing data file": (["train", "--data", "{w}/missing.txt", "--out", "{w}/new", *TINY_FLAGS],
                          "no such file or folder: {w}/missing.txt"),
    "empty corpus folder": (["train", "--data", "{w}/empty", "--out", "{w}/new", *TINY_FLAGS],
                            "no readable .txt .md .py .rst files in {w}/empty"),
    "context longer than the corpus": (["train", "--data", "{w}/tiny.txt", "--out", "{w}/new", *TINY_FLAGS,
                                        "--context-length", "100000"], "too few for one window"),
    "batch size of zero": (["train", "--data", "{w}/tiny.txt", "--out", "{w}/new", *TINY_FLAGS, "--batch-size", "0"],
                           "--batch-size must be at least 1, got 0"),
    "eval interval of zero": (["train", "--data", "{w}/tiny.txt", "--out", "{w}/new", *TINY_FLAGS,
                               "--eval-interval", "0"], "--eval-interval must be at least 1, got 0"),
    "no worker threads": (["train", "--data", "{w}/tiny.txt", "--out", "{w}/new", *TINY_FLAGS, "--workers", "0"],
                          "--workers must be at least 1, got 0"),
    "heads that do not divide the width": (["train", "--data", "{w}/tiny.txt", "--out", "{w}/new", *TINY_FLAGS,
                                            "--n-head", "3"], "--n-embd 16 is not divisible by --n-head 3"),
    "run folder inside a file": (["train", "--data", "{w}/tiny.txt", "--out", "{w}/tiny.txt/run", *TINY_FLAGS],
                                 "--out {w}/tiny.txt/run: {w}/tiny.txt is a file, not a folder"),
    "run folder that is a file": (["train", "--data", "{w}/tiny.txt", "--out", "{w}/tiny.txt", *TINY_FLAGS],
                                  "--out {w}/tiny.txt: {w}/tiny.txt is a file, not a folder"),
    "resume into the checkpoint folder": (["train", "--resume", "--out", "{w}/run/checkpoint"],
                                          "--out {w}/run/checkpoint is a checkpoint folder; resume its run folder"),
    "gradient ascent": (["train", *TINY_FLAGS, "--grad-clip", "-1"], "--grad-clip must be a positive number"),
    "no clipping room": (["train", *TINY_FLAGS, "--grad-clip", "0"], "--grad-clip must be a positive number"),
    "negative learning rate": (["train", *TINY_FLAGS, "--lr", "-0.1"], "--lr must be a positive number, got -0.1"),
    "nan learning rate": (["train", *TINY_FLAGS, "--lr", "nan"], "--lr must be a positive number, got nan"),
    "floor above the peak": (["train", *TINY_FLAGS, "--lr", "0.01", "--min-lr", "0.1"],
                             "--min-lr must be between 0 and --lr (0.01), got 0.1"),
    "beta2 of 1.5": (["train", *TINY_FLAGS, "--beta2", "1.5"], "--beta2 must be in [0, 1), got 1.5"),
    "negative steps": (["train", *TINY_FLAGS, "--max-steps", "-5"], "--max-steps must be at least 1, got -5"),
    "zero steps": (["train", *TINY_FLAGS, "--max-steps", "0"], "--max-steps must be at least 1, got 0"),
    "negative warm-up": (["train", *TINY_FLAGS, "--warmup-steps", "-5"], "--warmup-steps must be at least 0, got -5"),
    "no characters for the tokenizer": (["train", *TINY_FLAGS, "--tokenizer-chars", "0"],
                                        "--tokenizer-chars must be at least 1, got 0"),
    "dropout of one": (["train", *TINY_FLAGS, "--dropout", "1"], "--dropout must be in [0, 1), got 1.0"),
    "vocabulary below the bytes": (["train", "--vocab-size", "100"], "--vocab-size must be at least 257"),
    "negative new tokens": (["generate", "--checkpoint", "{w}/run", "--max-new-tokens", "-1"],
                            "--max-new-tokens must be at least 0, got -1"),
    "nan temperature": (["generate", "--checkpoint", "{w}/run", "--temperature", "nan"],
                        "--temperature must be a number >= 0 (0: greedy), got nan"),
    "negative seed": (["generate", "--checkpoint", "{w}/run", "--seed", "-1"], "--seed must be at least 0, got -1"),
    "run folder already used": (["train", "--data", "{w}/tiny.txt", "--out", "{w}/run", *TINY_FLAGS],
                                "{w}/run already holds a run"),
    "checkpoint from another config": (["train", "--resume", "--out", "{w}/run", "--n-embd", "32"],
                                       "checkpoint is from another configuration: n_embd=16 (this run: 32)"),
    "missing checkpoint (resume)": (["train", "--resume", "--out", "{w}/nowhere"], "{w}/nowhere: no checkpoint here"),
    "missing checkpoint (generate)": (["generate", "--checkpoint", "{w}/nowhere"], "{w}/nowhere: no checkpoint here"),
    "corrupt checkpoint (resume)": (["train", "--resume", "--out", "{w}/corrupt"],
                                    "{w}/corrupt/checkpoint/model.safetensors: damaged: its SHA-256 is not"),
    "corrupt checkpoint (generate)": (["generate", "--checkpoint", "{w}/corrupt"],
                                      "{w}/corrupt/checkpoint/model.safetensors: damaged"),
    "empty prompt": (["generate", "--checkpoint", "{w}/run", "--prompt", ""], "prompt must hold at least one"),
    "top-p of zero": (["generate", "--checkpoint", "{w}/run", "--top-p", "0"], "--top-p must be in (0, 1]"),
    "top-k of zero": (["generate", "--checkpoint", "{w}/run", "--top-k", "0"], "--top-k must be at least 1"),
    "missing tokenizer file": (["tokenizer", "encode", "--tokenizer", "{w}/missing.tok", "hi"], "missing.tok"),
    "non-integer id": (["tokenizer", "decode", "--tokenizer", "{w}/run/checkpoint/tokenizer.txt", "1", "x"],
                       "token ids must be integers"),
    "unknown id": (["tokenizer", "decode", "--tokenizer", "{w}/run/checkpoint/tokenizer.txt", "99999"],
                   "unknown token id 99999"),
    "no characters to learn from": (["tokenizer", "train", "--max-chars", "0", "--out", "{w}/t.tok"],
                                    "--max-chars must be at least 1, got 0"),
    "tokenizer file in a missing folder": (["tokenizer", "train", "--out", "{w}/nowhere/t.tok"],
                                           "{w}/nowhere/t.tok: cannot write it"),  # refused before any training
    "tokenizer file that is a folder": (["tokenizer", "train", "--out", "{w}/empty"], "{w}/empty: is a folder"),
    "a GPT run asked to fill masks": (["fill-mask", "--checkpoint", "{w}/run", "--text", "a [MASK]"],
                                      "not a checkpoint written by npllm train --model bert"),
}


@pytest.mark.parametrize("argv, message", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_one_line_on_stderr_with_status_2(workspace, argv, message, capsys):
    argv = [part.replace("{w}", str(workspace)) for part in argv]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"npllm {argv[0]}: error: ") and err.count("\n") == 1
    assert message.replace("{w}", str(workspace)) in err
    if argv[0] == "generate":
        assert out == ""  # it checks every setting before it prints the prompt


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_bench_products_are_the_products_of_every_weight_matrix_and_of_attention(preset):
    from npllm.bench.products import linear_shapes, step_products
    from npllm.bench.train import PRESETS, _model_config
    from npllm.models import GPT

    settings = PRESETS[preset]
    model = GPT(_model_config(settings))
    matrices = sorted(param.data.size for name, param in model.named_parameters()
                      if param.data.ndim == 2 and name != "wpe.weight")  # wpe is a lookup: no product
    shapes = linear_shapes(settings, sequences=3)
    assert sorted(n_in * n_out for _, n_in, n_out in shapes) == matrices
    assert {rows for rows, _, _ in shapes} == {3 * settings["context_length"]}
    calls, flops = step_products(settings, 3, np.asarray)
    tokens = 3 * settings["context_length"]
    attention = 12 * settings["n_layer"] * settings["n_embd"] * settings["context_length"] * tokens
    assert flops == 6 * sum(matrices) * tokens + attention * 3 // 4  # two causal blocks skip a quarter
    assert len(calls) == 3 * len(shapes) + 6 * 2 * settings["n_layer"]


def test_bench_products_of_bert_are_its_weight_matrices_attention_over_every_key_and_the_head_where_masked():
    from npllm.bench.products import linear_shapes, masked_rows, step_products
    from npllm.bench.train import PRESETS, _bert_config, _masked_batch
    from npllm.models import BERTForMaskedLM

    settings = PRESETS["tiny"]
    model = BERTForMaskedLM(_bert_config(settings))
    weights = sum(param.data.size for name, param in model.named_parameters()
                  if param.data.ndim == 2 and "embeddings" not in name)  # the three tables are lookups
    shapes = linear_shapes(settings, sequences=2, model="bert")  # (query, key and value joined in one product)
    assert sum(n_in * n_out for _, n_in, n_out in shapes[:-1]) == weights
    assert shapes[-1][1:] == (settings["n_embd"], settings["vocab_size"])  # the decoder, tied to the word table
    masked = int((_masked_batch(settings)["targets"][:2] != -100).sum())
    assert masked_rows(settings, 2) == masked and 0.1 < masked / (2 * settings["context_length"]) < 0.2
    assert [rows for rows, _, _ in shapes[-2:]] == [masked, masked]
    tokens = 2 * settings["context_length"]
    calls, flops = step_products(settings, 2, np.asarray, model="bert")
    attention = 12 * settings["n_layer"] * settings["n_embd"] * settings["context_length"] * tokens
    assert flops == sum(6 * rows * n_in * n_out for rows, n_in, n_out in shapes) + attention  # every key: no block skipped
    assert len(calls) == 3 * len(shapes) + 6 * settings["n_layer"]


def test_a_bug_keeps_its_traceback(monkeypatch):
    """Only errors a user can fix become one line: anything else is a bug, and must show where it happened."""
    import npllm.training.pretrain as pretrain

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(pretrain, "train", broken)
    with pytest.raises(ZeroDivisionError, match="a bug"):
        main(["train", "--max-steps", "1"])


def test_settings_named_in_errors_are_shown_as_the_flags_that_set_them(capsys, monkeypatch):
    import npllm.training.pretrain as pretrain
    from npllm.errors import SettingError

    def refuse(*args, **kwargs):
        raise SettingError("`out_dir` and `max_steps` disagree with `lr`")

    monkeypatch.setattr(pretrain, "train", refuse)
    assert main(["train"]) == 2
    assert capsys.readouterr().err == "npllm train: error: --out and --max-steps disagree with --lr\n"


COMMAND_LINES = [["train"], ["generate"], ["tokenizer", "encode"], *(["bench", what] for what in sorted(BENCHMARKS))]


class ParsedHere(Exception):
    """Raised in place of parsing, carrying the parser a command built."""


def every_parser(parser):
    """``parser`` and the parsers of its subcommands (``npllm tokenizer train|encode|decode``)."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                yield from every_parser(subparser)


@pytest.mark.parametrize("argv", COMMAND_LINES, ids=" ".join)
def test_every_flag_of_every_command_says_what_it_does(argv, monkeypatch):
    original = argparse.ArgumentParser.parse_args

    def capture(parser, *args, **kwargs):
        if parser.prog == "npllm bench":  # the dispatcher: let it hand over to the benchmark's own parser
            return original(parser, *args, **kwargs)
        raise ParsedHere(parser)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(ParsedHere) as parsed:
        main(argv)
    for parser in every_parser(parsed.value.args[0]):
        undocumented = [action.option_strings[0] for action in parser._actions
                        if action.option_strings and not action.help]
        assert undocumented == [], parser.prog
        assert "``" not in (parser.description or ""), parser.prog  # plain text, not reStructuredText


def test_generate_needs_no_optimizer_file(workspace, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(workspace / "run", run)
    (run / "checkpoint" / "optimizer.safetensors").write_bytes(b"cut short")
    assert main(["generate", "--checkpoint", str(run), "--prompt", "the ", "--max-new-tokens", "3", "--seed", "0"]) == 0
    assert capsys.readouterr().out.startswith("the ")


def test_a_full_disk_while_training_is_one_line_naming_the_file(tiny_corpus, tmp_path, monkeypatch, capsys):
    import errno
    import os

    def full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    assert main(["train", "--data", str(tiny_corpus), "--out", str(tmp_path / "run"), *TINY_FLAGS,
                 "--max-steps", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ": cannot write it (No space left on device); nothing already saved" in err


@pytest.mark.bench
@pytest.mark.parametrize("model", ["gpt", "bert"])
def test_bench_distill_runs_with_tiny_settings(tiny_corpus, capsys, model):
    figures = main(["bench", "distill", "--model", model, "--data", str(tiny_corpus), "--teacher-steps", "2",
                    "--student-steps", "2", "--writing-tokens", "3", "--share-repeats", "1", "--json"])
    out = capsys.readouterr().out
    assert figures == 0 and "held-out loss   teacher" in out and "of a distillation step" in out
    reported = json.loads(out.strip().splitlines()[-1])
    assert reported["student_parameters"] < reported["teacher_parameters"] and reported["steps"] == 2
    assert ("distilled_val_accuracy" in reported) == (model == "bert")


def test_a_cache_folder_that_cannot_be_made_is_one_line(tiny_corpus, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("NPLLM_CACHE", str(blocker / "cache"))
    assert main(["train", "--data", str(tiny_corpus), "--out", str(tmp_path / "run"), *TINY_FLAGS]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{blocker / 'cache'}: Not a directory" in err


@pytest.mark.bench
@pytest.mark.parametrize("what", ["train", "products"])
def test_compare_torch_without_torch_is_refused_before_any_work(what, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(SystemExit) as exit_status:
        main(["bench", what, "--preset", "tiny", "--compare-torch", "--repeats", "1"])
    assert exit_status.value.code == 2
    assert "--compare-torch needs PyTorch, which is not installed" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["train", "--max-steps", "many"], "npllm train: error: argument --max-steps: invalid int value: 'many'"),
    (["generate", "--frobnicate"], "npllm generate: error: unrecognized arguments: --frobnicate"),
    (["bench", "train", "--preset", "huge"], "npllm bench train: error: argument --preset: invalid choice"),
])
def test_a_flag_argparse_refuses_is_one_line_too(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_status:
        main(argv)
    assert exit_status.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1 and "usage:" not in err


def test_ctrl_c_saves_and_exits_130_saying_how_to_continue(tiny_corpus, tmp_path, monkeypatch, capsys):
    from npllm.training import loop

    def stop_at_once(run, progress, log):  # the loop returns early, as after Ctrl-C
        log("interrupted: saved step 0")
        return run
    monkeypatch.setattr(loop, "train", stop_at_once)
    argv = ["train", "--data", str(tiny_corpus), "--out", str(tmp_path / "run"), "--max-steps", "5", *TINY_FLAGS]
    assert main(argv) == 130
    assert "stopped at step 0 of 5; continue with the same command and --resume" in capsys.readouterr().out


def test_a_gpt2_folder_asked_to_fill_masks_is_named_a_gpt(workspace, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(workspace / "run"), "--out", str(tmp_path / "hf")]) == 0
    assert main(["fill-mask", "--checkpoint", str(tmp_path / "hf"), "--text", "a [MASK]"]) == 2
    assert "holds a GPT; filling masks needs a BERT with its masked-LM head" in capsys.readouterr().err
@pytest.mark.bench
def test_bench_generate_times_trained_checkpoints_side_by_side(tiny_corpus, tmp_path, capsys):
    for name, layers in (("one", "1"), ("two", "2")):
        flags = [*TINY_FLAGS, "--n-layer", layers, "--max-steps", "1"]
        assert main(["train", "--data", str(tiny_corpus), "--out", str(tmp_path / name), *flags]) == 0
    capsys.readouterr()
    assert main(["bench", "generate", "--checkpoint", str(tmp_path / "two"), "--checkpoint", str(tmp_path / "one"),
                 "--new-tokens", "4", "--repeats", "2", "--json"]) == 0
    out = capsys.readouterr().out
    reported = json.loads(out.strip().splitlines()[-1])["checkpoints"]
    assert [entry["path"].rsplit("/", 1)[-1] for entry in reported] == ["two", "one"]
    assert reported[0]["parameters"] > reported[1]["parameters"] and "1.00x the first" in out
