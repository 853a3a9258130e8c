"""Instruction tuning: the data, the batches, the recipe, LoRA adapters and ``npllm chat`` keep their promises.

The template is applied the same way everywhere; only the response's targets
count when the prompt is masked; a long prompt is cut from the left with a
warning; every arithmetic answer is the ``decimal`` module's, and no
held-out problem is trained on; a run resumes bit for bit, refuses another
base, and a LoRA run's adapters file goes back onto its base and no other.
How *well* a model follows instructions is a measurement (the README's table).
"""

import json
import shutil
import warnings
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np
import pytest

from npllm.cli import main
from npllm.data.instructions import (IGNORE_INDEX, Example, Record, arithmetic, answer_sentence, format_prompt,
                                     instruction_batch, load_instructions, stdlib_functions, tokenize)
from npllm.data.sources import DataSourceError
from npllm.errors import NpllmError, SettingError
from npllm.nn.lora import apply_saved_adapters, lora_layers
from npllm.training.instruct import ADAPTERS_FILE, InstructConfig, instruct, resume
from npllm.training.checkpoint import load_checkpoint
from npllm.training.pretrain import load_model


def silent(*_):
    pass


def test_the_template_has_an_input_section_only_when_there_is_an_input():
    with_input, without = format_prompt("Add these.", "1 + 2"), format_prompt("Add these.")
    assert with_input.endswith("### Instruction:\nAdd these.\n\n### Input:\n1 + 2\n\n### Response:\n")
    assert without.endswith("### Instruction:\nAdd these.\n\n### Response:\n") and "### Input" not in without


def test_a_masked_batch_counts_only_the_responses_and_pads_to_the_longest():
    examples = [Example(prompt=[1, 2, 3], response=[7, 8, 0]), Example(prompt=[4, 5], response=[9, 0])]
    masked = instruction_batch(examples, pad_id=0, mask_prompt=True)(np.array([0, 1]))
    assert masked["input_ids"].tolist() == [[1, 2, 3, 7, 8], [4, 5, 9, 0, 0]]
    x = IGNORE_INDEX
    assert masked["targets"].tolist() == [[x, x, 7, 8, 0], [x, 9, 0, x, x]]  # end-of-text (0) closes each response
    included = instruction_batch(examples, pad_id=0, mask_prompt=False)(np.array([0, 1]))
    assert included["targets"].tolist() == [[2, 3, 7, 8, 0], [5, 9, 0, x, x]]


class Letters:
    """A tokenizer of one id per character, for counting tokens by eye."""

    def encode_ordinary(self, text):
        return [ord(c) % 250 for c in text]


def test_a_prompt_longer_than_the_context_is_cut_from_the_left_with_a_warning():
    record = Record("x" * 200, "", "abc", "mine.jsonl", 7)
    with pytest.warns(UserWarning, match=r"1 of 1 prompts .* cut from the left \(the first: mine.jsonl, record 7\)"):
        (example,) = tokenize([record], Letters(), end_of_text=255, context_length=64)
    assert len(example.prompt) + len(example.response) == 65 and example.response == [97, 98, 99, 255]
    assert example.prompt[-len("### Response:\n"):] == Letters().encode_ordinary("### Response:\n")
    with pytest.raises(DataSourceError, match="mine.jsonl, record 7: the output is 4 tokens"):
        tokenize([record], Letters(), end_of_text=255, context_length=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a prompt that fits: no warning
        tokenize([Record("add", "", "3", "m", 1)], Letters(), end_of_text=255, context_length=200)


def test_json_and_jsonl_files_of_records(tmp_path):
    rows = [{"instruction": f"Say {i}.", "output": str(i), **({"input": "now"} if i % 2 else {})} for i in range(10)]
    (tmp_path / "r.json").write_text(json.dumps(rows))
    (tmp_path / "r.jsonl").write_text("\n".join(map(json.dumps, rows)))
    for name in ("r.json", "r.jsonl"):
        data = load_instructions(str(tmp_path / name), seed=3)
        assert len(data.train) == 8 and len(data.test) == 2
        assert {r.output for r in data.train + data.test} == {str(i) for i in range(10)}
        assert {r.input for r in data.train + data.test} == {"", "now"}


@pytest.mark.parametrize("content, message", [
    ('{"instruction": "a", "output": "b"}\n{"instruction": "c", "input": "d"}', "r.jsonl, record 2: no 'output'"),
    ('{"output": "b"}', "record 1: no 'instruction'"),
    ('["a list"]', "record 1: a record must be a JSON object"),
    ('{"instruction": "a", "output": " "}\n{"instruction": "a", "output": "b"}', "record 1: the output is empty"),
    ('{"instruction": "a", "output": 3}', "record 1: 'output' must be a string"),
    ('{"instruction": "a", "output": "b"}', "1 record; at least two are needed"),
    ("{oops", "line 1: not a JSON record"),
], ids=["no output", "no instruction", "not an object", "empty output", "not a string", "too few", "not JSON"])
def test_a_bad_record_is_one_line_naming_the_file_and_the_record(tmp_path, content, message):
    (tmp_path / "r.jsonl").write_text(content)
    with pytest.raises(DataSourceError, match=message):
        load_instructions(str(tmp_path / "r.jsonl"))


def test_every_arithmetic_answer_is_decimals_and_no_held_out_problem_is_trained_on():
    data = arithmetic(train_size=2000, test_size=200)
    assert len(data.train) == 2000 and len(data.test) == 200
    assert not {(r.instruction, r.input) for r in data.train} & {(r.instruction, r.input) for r in data.test}
    assert arithmetic(train_size=2000, test_size=200).test == data.test  # the same problems on every machine
    operations = set()
    for record in data.train[:400] + data.test:
        words = record.input.split()
        if record.instruction.startswith("Round"):
            places = 0 if "whole" in record.instruction else int(record.instruction.split()[-3])
            expected = Decimal(record.input).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)
            assert record.output == format(expected, "f")
        else:
            a, b = Decimal(words[0]), Decimal(words[2])
            expected = {"+": a + b, "-": a - b, "×": a * b, "or": max(a, b)}[words[1]]
            assert Decimal(record.output) == expected and "E" not in record.output
        operations.add(record.instruction.split()[0])
    assert operations == {"Add", "Subtract", "Multiply", "Which", "Round"}


def test_stdlib_functions_are_answered_by_their_docstrings_first_sentence_split_by_file(tmp_path):
    for index in range(5):
        (tmp_path / f"mod{index}.py").write_text(
            f'def public{index}(a, b=2):\n    """Do thing {index} with a and b. More words here.\n\n    Details."""\n'
            f'def _private():\n    """A private helper is never asked about."""\n'
            f'class Thing:\n    def method(self):\n        """A method is not a top-level function."""\n')
    (tmp_path / "_hidden.py").write_text('def shown():\n    """A private module is left out too."""\n')
    data = stdlib_functions(root=tmp_path)
    records = data.train + data.test
    assert sorted(r.input for r in records) == [f"mod{i}.public{i}(a, b=2)" for i in range(5)]
    assert all(r.output == f"Do thing {r.input[3]} with a and b." for r in records)
    assert len(data.test) == 1
    assert answer_sentence("No full stop at all") == "" and answer_sentence("Short.") == ""


@pytest.fixture
def records_file(tmp_path):
    rows = [{"instruction": "Say the colour.", "input": word, "output": word.upper()}
            for word in ("red", "green", "blue", "cyan") for _ in range(5)]
    path = tmp_path / "colours.jsonl"
    path.write_text("\n".join(map(json.dumps, rows)))
    return str(path)


def config(base, data, tmp_path, name="instruct", **changes):
    settings = {**dict(max_steps=4, eval_interval=2, batch_size=4, warmup_steps=1, exact_match_records=2), **changes}
    return InstructConfig(checkpoint=base, data=data, out_dir=str(tmp_path / name), **settings)


@pytest.mark.parametrize("trained, expected", [
    (dict(train="all"), lambda name: True),
    (dict(train="last-blocks", last_blocks=1), lambda name: name.startswith(("h.1.", "ln_f."))),
    (dict(train="lora", lora_rank=2), lambda name: name.endswith(("lora_A", "lora_B"))),
], ids=["all", "last-blocks", "lora"])
def test_each_choice_trains_what_it_says_and_reports_before_and_after(instruct_base, records_file, tmp_path,
                                                                       trained, expected):
    run = instruct(config(instruct_base, records_file, tmp_path, **trained), progress=False, log=silent)
    assert {name for name, p in run.model.named_parameters() if p.requires_grad} == \
        {name for name, _ in run.model.named_parameters() if expected(name)}
    report = json.loads((Path(run.out_dir) / "report.json").read_text())
    for when in ("before", "after"):
        assert set(report[when]["exact_match"]) == {records_file} and report[when]["response_loss"] > 0
    assert report["after"]["response_loss"] != report["before"]["response_loss"]
    tuned, _ = load_model(run.out_dir)  # a plain GPT whatever was trained (LoRA's adapters merged in)
    assert not lora_layers(tuned)
    ids = np.array([[5, 6, 7, 8]])
    run.model.eval()
    np.testing.assert_allclose(tuned(ids).data, run.model(ids).data, rtol=1e-4, atol=1e-5)
    assert (Path(run.out_dir) / ADAPTERS_FILE).exists() == (trained["train"] == "lora")


def test_the_prompt_mask_changes_what_is_learned_not_what_is_measured(instruct_base, records_file, tmp_path):
    masked = instruct(config(instruct_base, records_file, tmp_path, name="m", max_steps=1), progress=False, log=silent)
    included = instruct(config(instruct_base, records_file, tmp_path, name="i", max_steps=1, prompt_loss="included"),
                        progress=False, log=silent)
    masked_batch, included_batch = masked.batches.next_batch(), included.batches.next_batch()
    assert (masked_batch["input_ids"] == included_batch["input_ids"]).all()  # the same draw, the same seed
    assert masked.objective.count(masked_batch) < included.objective.count(included_batch)
    assert masked.before == included.before  # the held-out response loss: the same figure for both


def test_lora_adapters_are_saved_alone_and_go_back_onto_their_base_only(instruct_base, records_file, tmp_path, base):
    run = instruct(config(instruct_base, records_file, tmp_path, train="lora", lora_rank=2), progress=False,
                   log=silent)
    adapters = Path(run.out_dir) / ADAPTERS_FILE
    assert adapters.stat().st_size < 20_000  # the adapters alone, not the model
    model, _ = load_model(instruct_base)
    apply_saved_adapters(model, adapters)
    ids = np.array([[5, 6, 7, 8]])
    run.model.eval()
    model.eval()
    np.testing.assert_allclose(model(ids).data, run.model(ids).data, rtol=1e-6)
    other, _ = load_model(base)
    with pytest.raises(NpllmError, match="trained on another base model"):
        apply_saved_adapters(other, adapters)


def test_an_instruction_run_resumes_bit_for_bit_and_refuses_another_base(instruct_base, records_file, tmp_path):
    def metrics(out_dir):
        lines = (Path(out_dir) / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"} for line in lines]

    whole = instruct(config(instruct_base, records_file, tmp_path, name="whole", train="lora", lora_rank=2),
                     progress=False, log=silent)
    instruct(config(instruct_base, records_file, tmp_path, name="halves", train="lora", lora_rank=2, max_steps=2),
             progress=False, log=silent)
    resumed = resume(tmp_path / "halves", {"max_steps": 4}, progress=False, log=silent)
    assert metrics(tmp_path / "halves") == metrics(whole.out_dir)
    assert resumed.before == whole.before
    assert (Path(whole.out_dir) / ADAPTERS_FILE).read_bytes() == (tmp_path / "halves" / ADAPTERS_FILE).read_bytes()
    from npllm.training.pretrain import TrainConfig, train
    other = train(TrainConfig(**{**load_checkpoint(instruct_base).train_state["config"], "seed": 5,
                                 "out_dir": str(tmp_path / "other")}), progress=False, log=silent)
    shutil.rmtree(Path(instruct_base) / "checkpoint")
    shutil.copytree(Path(other.out_dir) / "checkpoint", Path(instruct_base) / "checkpoint")
    with pytest.raises(SettingError, match="not the model this run was fine-tuned from"):
        resume(tmp_path / "halves", {"max_steps": 6}, progress=False, log=silent)


@pytest.mark.parametrize("settings, message", [
    (dict(prompt_loss="half"), "`prompt_loss` must be one of masked, included"),
    (dict(exact_match_records=-1), "`exact_match_records` must be at least 0"),
    (dict(lora_rank=0), "`lora_rank` must be at least 1"),
    (dict(lora_alpha=-1.0), "`lora_alpha` must be a positive number"),
    (dict(train="heads"), "`train` must be one of all, last-blocks, lora"),
], ids=["prompt loss", "exact match", "rank", "alpha", "train"])
def test_bad_instruction_settings_are_refused(settings, message):
    with pytest.raises(SettingError, match=message):
        InstructConfig(**settings)


def test_the_commands_finetune_instruct_and_chat(instruct_base, records_file, tmp_path, capsys, monkeypatch, base):
    out = tmp_path / "cli"
    assert main(["finetune", "instruct", "--checkpoint", instruct_base, "--data", records_file, "--out", str(out),
                 "--max-steps", "2", "--eval-interval", "2", "--batch-size", "4", "--train", "lora", "--lora-rank",
                 "2", "--exact-match-records", "1", "--quiet"]) == 0
    assert "try: npllm chat --checkpoint" in capsys.readouterr().out
    assert main(["chat", "--checkpoint", str(out), "--prompt", "Say the colour.", "--input", "red",
                 "--max-new-tokens", "3"]) == 0
    one_shot = capsys.readouterr().out
    assert one_shot.endswith("\n") and len(one_shot) > 1
    import io
    monkeypatch.setattr("sys.stdin", io.StringIO("Say the colour.\n\nSay it again.\n"))
    assert main(["chat", "--checkpoint", instruct_base, "--adapters", str(out / ADAPTERS_FILE),
                 "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.count("\n") >= 2  # one answer per instruction, the empty line skipped
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["chat", "--checkpoint", str(out), "--top-p", "2"]) == 2  # refused before any line is read
    assert "--top-p must be in (0, 1], got 2.0" in capsys.readouterr().err
    assert main(["chat", "--checkpoint", str(out), "--input", "1 + 2"]) == 2  # an input with no instruction
    error = capsys.readouterr().err
    assert "--input goes with --prompt" in error and len(error.strip().splitlines()) == 1
    assert main(["chat", "--checkpoint", base, "--adapters", str(out / ADAPTERS_FILE), "--prompt", "x"]) == 2
    error = capsys.readouterr().err
    assert "trained on another base model" in error and len(error.strip().splitlines()) == 1
    assert main(["finetune", "instruct", "--checkpoint", instruct_base, "--data", str(tmp_path / "none.jsonl"),
                 "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('[{"instruction": "a", "output": "b"}, {"instruction": "c"}]')
    assert main(["finetune", "instruct", "--checkpoint", instruct_base, "--data", str(tmp_path / "bad.json"),
                 "--out", str(tmp_path / "y"), "--quiet"]) == 2
    error = capsys.readouterr().err
    assert "bad.json, record 2: no 'output'" in error and len(error.strip().splitlines()) == 1
    assert not (tmp_path / "y").exists()  # refused before anything was written
