"""Denoising pre-training: the objective, bit-exact resume, a tiny run that beats copying, refusals, the CLI."""

import json

import pytest

import npllm.functional as F
from npllm import no_grad
from npllm.cli import main
from npllm.data.pairs import IGNORE_INDEX, Framing, pair_batch
from npllm.errors import SettingError
from npllm.models import BARTConfig, BARTForConditionalGeneration
from npllm.training.objectives import Seq2SeqLM
from npllm.training.pretrain import model_kind
from npllm.training.pretrain_seq2seq import Seq2SeqTrainConfig, load_model, resume, train

TINY = dict(vocab_size=300, n_layer=1, n_head=2, n_embd=16, context_length=16, batch_size=4, eval_windows=4,
            warmup_steps=2, max_steps=8, decay_steps=8, eval_interval=4, lr=3e-3)


def silent(*_):
    pass


@pytest.fixture
def tiny_config(tiny_corpus, tmp_path):
    def make(name="run", **changes):
        return Seq2SeqTrainConfig(**{**TINY, "data": str(tiny_corpus), "out_dir": str(tmp_path / name), **changes})

    return make


def tiny_seq2seq_command(corpus, out, steps):
    """``npllm train --model seq2seq`` on the tiny corpus with a 1+1-block, 16-wide BART, into ``out``."""
    return ["train", "--model", "seq2seq", "--data", str(corpus), "--vocab-size", "300", "--n-layer", "1", "--n-embd",
            "16", "--n-head", "2", "--context-length", "16", "--max-steps", str(steps), "--eval-windows", "2",
            "--quiet", "--out", str(out)]


def metrics(run):
    return [json.loads(line) for line in (run.out_dir / "metrics.jsonl").read_text().splitlines()]


def test_the_objective_is_cross_entropy_over_the_real_target_tokens():
    config = BARTConfig(vocab_size=20, d_model=8, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=8, decoder_ffn_dim=8, max_position_embeddings=8,
                        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    model = BARTForConditionalGeneration(config)
    batch = pair_batch([[5, 6, 7], [8]], [[10, 11], [12, 13, 14]], Framing(pad_id=1, bos_id=0, eos_id=2))
    objective = Seq2SeqLM()
    assert objective.count(batch) == 3 + 4  # the tokens and </s>, not the padding
    with no_grad():
        logits = model(batch["input_ids"], batch["decoder_input_ids"], batch["attention_mask"])
        expected = F.cross_entropy(logits, batch["targets"], ignore_index=IGNORE_INDEX).item()
        assert abs(objective.loss(model, batch).item() - expected) < 1e-6
        # the padded pair alone gives the same loss as inside the batch: padding changes nothing
        alone = pair_batch([[5, 6, 7]], [[10, 11]], Framing(pad_id=1, bos_id=0, eos_id=2))
        row = F.cross_entropy(logits[0:1, :3], alone["targets"]).item()
        assert abs(objective.loss(model, alone).item() - row) < 1e-6


@pytest.mark.parametrize("settings", [{}, dict(dropout=0.1, grad_accum=2, permute_sentences=True)])
def test_resume_after_a_planned_stop_is_bit_identical(tiny_config, settings):
    whole = train(tiny_config("whole", **settings), progress=False, log=silent)
    halves = train(tiny_config("halves", **settings, max_steps=4), progress=False, log=silent)
    resume(halves.out_dir, {"max_steps": 8}, progress=False, log=silent)
    assert metrics(halves)[-1]["step"] == 8
    for a, b in zip(metrics(whole), metrics(halves)):
        assert {k: v for k, v in a.items() if k != "tokens_per_s"} == {k: v for k, v in b.items() if k != "tokens_per_s"}


def test_a_tiny_bart_learns_beyond_copying_the_corrupted_input(tiny_config):
    messages = []
    run = train(tiny_config(max_steps=120, decay_steps=None, eval_interval=120, batch_size=16, n_embd=32,
                            eval_windows=8, warmup_steps=10, lr=5e-3, context_length=24),
                progress=False, log=messages.append)
    baseline = next(m for m in messages if "copying the corrupted input" in m)
    copy_accuracy = float(baseline.split("accuracy ")[-1])
    last = metrics(run)[-1]
    assert last["val_accuracy"] > copy_accuracy and last["val_masked_accuracy"] > 0.05
    model, tokenizer = load_model(run.out_dir)
    assert isinstance(model, BARTForConditionalGeneration) and tokenizer.special_tokens["<mask>"] == 299
    assert model.config.decoder_start_token_id == tokenizer.special_tokens["<s>"] and model_kind(run.out_dir) == "bart"


def test_settings_are_checked_and_named(tiny_config):
    with pytest.raises(SettingError, match="`vocab_size` must be at least 261"):
        tiny_config(vocab_size=260)
    with pytest.raises(SettingError, match="`mask_ratio` must be in"):
        tiny_config(mask_ratio=0)
    with pytest.raises(SettingError, match="`init` starts a GPT"):
        tiny_config(init="runs/gpt")


def test_cli_trains_resumes_and_refuses_the_other_kinds(tiny_corpus, tmp_path, capsys):
    out, gpt = tmp_path / "seq2seq", tmp_path / "gpt"
    assert main(tiny_seq2seq_command(tiny_corpus, out, steps=2)) == 0
    assert "npllm finetune seq2seq --checkpoint" in capsys.readouterr().out
    assert main(["train", "--model", "seq2seq", "--resume", "--out", str(out), "--max-steps", "3", "--quiet"]) == 0
    capsys.readouterr()
    for beams in ("1", "2"):  # the run folder loads back for npllm generate, greedy and with beam search
        assert main(["generate", "--checkpoint", str(out), "--input", "the cat", "--beams", beams,
                     "--max-new-tokens", "3"]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 1
    assert main(["train", "--data", str(tiny_corpus), "--vocab-size", "300", "--n-layer", "1", "--n-embd", "16",
                 "--context-length", "16", "--max-steps", "1", "--eval-windows", "2", "--quiet", "--out", str(gpt)]) == 0
    capsys.readouterr()
    for argv, message in [
        (["train", "--resume", "--out", str(out), "--max-steps", "4"], "a run of another kind"),
        (["train", "--model", "seq2seq", "--resume", "--out", str(gpt), "--max-steps", "4"], "not a run of npllm train --model seq2seq"),
        (["finetune", "classify", "--checkpoint", str(out), "--out", str(tmp_path / "c")], "not a GPT run"),
        (["finetune", "seq2seq", "--checkpoint", str(gpt), "--out", str(tmp_path / "s")], "not an encoder–decoder run, so this command cannot use it"),
        (["distill", "--teacher", str(out), "--out", str(tmp_path / "d")], "holds a BART: npllm distill teaches a GPT"),
        (["generate", "--checkpoint", str(out), "--prompt", "a"], "--prompt: for a GPT"),
        (["generate", "--checkpoint", str(gpt), "--input", "a"], "--input: for a seq2seq model"),
        (["train", "--model", "seq2seq", "--mask-ratio", "1.5", "--out", str(tmp_path / "x")], "--mask-ratio must be in"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.strip().count("\n") == 0 and message in err, (argv, err)
    with pytest.raises(SystemExit):  # a switch (--permute-sentences / --no-permute-sentences) takes no value
        main(["train", "--model", "seq2seq", "--permute-sentences", "maybe", "--out", str(tmp_path / "x")])
    assert "unrecognized arguments: maybe" in capsys.readouterr().err  # a switch: --permute-sentences, or --no-...
