"""Seq2seq fine-tuning: a tiny BART learns a task of pairs, reports ROUGE-L beside the name baseline, resumes, refuses."""

import json

import pytest

from npllm.cli import main
from npllm.data.pairs import write_jsonl
from npllm.errors import SettingError
from npllm.models import BARTForConditionalGeneration
from npllm.training.finetune_seq2seq import Seq2SeqFinetuneConfig, finetune, resume
from npllm.training.pretrain_seq2seq import load_model

from tests.training.test_pretrain_seq2seq import tiny_seq2seq_command


def silent(*_):
    pass


@pytest.fixture
def pretrained(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "run"
    assert main(tiny_seq2seq_command(tiny_corpus, out, steps=2)) == 0
    return out


@pytest.fixture
def pairs_file(tmp_path):
    """A task with a rule to learn: the source's words, reversed."""
    words = ["alpha", "beta", "gamma", "delta", "omega"]
    rows = [(f"{a} {b}", f"{b} {a}") for a in words for b in words if a != b]
    path = tmp_path / "pairs.jsonl"
    write_jsonl(rows * 2, path)
    return path


def tiny(pretrained, pairs_file, tmp_path, name="ft", **changes):
    settings = dict(checkpoint=str(pretrained), data=str(pairs_file), batch_size=8, max_steps=6, decay_steps=6, eval_interval=3,
                    warmup_steps=1, eval_pairs=4, max_new_tokens=6, workers=2, out_dir=str(tmp_path / name))
    return Seq2SeqFinetuneConfig(**{**settings, **changes})


def test_finetuning_reports_rouge_beside_the_baseline_and_loads_back(pretrained, pairs_file, tmp_path):
    messages = []
    run = finetune(tiny(pretrained, pairs_file, tmp_path), progress=False, log=messages.append)
    report = json.loads((run.out_dir / "report.json").read_text())
    assert [row["name"] for row in report["results"]] == ["this model (greedy)", "name baseline"]
    assert report["decoded_pairs"] == 4 and len(report["examples"]) == 4
    assert all(0 <= row["rouge_l"] <= 1 and 0 <= row["exact_match"] <= 1 for row in report["results"])
    assert any("of the source and" in m and "padding" in m for m in messages)
    model, tokenizer = load_model(run.out_dir)
    assert isinstance(model, BARTForConditionalGeneration) and model.config.dropout == 0.1


def test_resume_is_bit_identical_and_beams_decode(pretrained, pairs_file, tmp_path):
    whole = finetune(tiny(pretrained, pairs_file, tmp_path, "whole"), progress=False, log=silent)
    half = finetune(tiny(pretrained, pairs_file, tmp_path, "half", max_steps=3, beams=2), progress=False, log=silent)
    resume(half.out_dir, {"max_steps": 6}, progress=False, log=silent)
    lines = lambda run: [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"}
                         for line in (run.out_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines(whole) == lines(half)
    report = json.loads((half.out_dir / "report.json").read_text())
    assert report["results"][0]["name"] == "this model (beam search, 2 beams)"


def test_random_init_and_settings(pretrained, pairs_file, tmp_path):
    run = finetune(tiny(pretrained, pairs_file, tmp_path, init="random", max_steps=2), progress=False, log=silent)
    assert run.step == 2
    with pytest.raises(SettingError, match="`beams` must be at least 1"):
        tiny(pretrained, pairs_file, tmp_path, beams=0)
    with pytest.raises(SettingError, match="`init` must be one of pretrained, random"):
        tiny(pretrained, pairs_file, tmp_path, init="other")


def test_cli_finetunes_and_refuses_bad_pairs_in_one_line(pretrained, pairs_file, tmp_path, capsys):
    argv = ["finetune", "seq2seq", "--checkpoint", str(pretrained), "--max-steps", "1", "--eval-pairs", "2",
            "--max-new-tokens", "3", "--quiet"]
    assert main([*argv, "--data", str(pairs_file), "--out", str(tmp_path / "ok")]) == 0
    assert "report.json" in capsys.readouterr().out
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"source": "a b", "target": "b a"}\n{"source": "a b", "target": ""}\n')
    assert main([*argv, "--data", str(bad), "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.jsonl, line 2: the target is empty" in err
    assert main([*argv, "--data", str(pairs_file), "--beams", "0", "--out", str(tmp_path / "b")]) == 2
    assert "--beams must be at least 1" in capsys.readouterr().err
