"""Masked-LM pre-training: the objective, a tiny run that learns, bit-exact resume, accuracy in the metrics, the CLI."""

import json

import numpy as np
import pytest

import npllm.functional as F
from npllm import no_grad
from npllm.cli import main
from npllm.data.masking import IGNORE_INDEX
from npllm.errors import SettingError
from npllm.models import BERTConfig, BERTForMaskedLM
from npllm.training.objectives import MaskedLM
from npllm.training.pretrain_bert import BERTTrainConfig, load_model, resume, train

TINY = dict(vocab_size=300, n_layer=1, n_head=2, n_embd=16, context_length=16, batch_size=4, eval_windows=4,
            warmup_steps=2, max_steps=8, decay_steps=8, eval_interval=4, lr=3e-3)


def silent(*_):
    pass


@pytest.fixture
def tiny_config(tiny_corpus, tmp_path):
    def make(name="run", **changes):
        return BERTTrainConfig(**{**TINY, "data": str(tiny_corpus), "out_dir": str(tmp_path / name), **changes})

    return make


def tiny_bert_command(corpus, out, steps):
    """``npllm train --model bert`` on the tiny corpus with a one-block, 16-wide BERT, into ``out``."""
    return ["train", "--model", "bert", "--data", str(corpus), "--vocab-size", "300", "--n-layer", "1", "--n-embd",
            "16", "--context-length", "16", "--max-steps", str(steps), "--eval-windows", "2", "--quiet", "--out", str(out)]


def metrics(run):
    return [json.loads(line) for line in (run.out_dir / "metrics.jsonl").read_text().splitlines()]


def test_objective_is_cross_entropy_on_the_chosen_positions_only():
    model = BERTForMaskedLM(BERTConfig(vocab_size=20, context_length=6, n_layer=1, n_head=2, n_embd=8, n_inner=8,
                                       dropout=0.0, attention_dropout=0.0))
    ids = np.random.default_rng(0).integers(0, 20, size=(2, 6))
    targets = np.full_like(ids, IGNORE_INDEX)
    targets[0, 1], targets[1, 4], targets[1, 5] = 3, 7, 0
    batch = {"input_ids": ids, "targets": targets}
    objective = MaskedLM()
    with no_grad():
        expected = F.cross_entropy(model(ids), targets).item()
        assert objective.count(batch) == 3
        assert abs(objective.loss(model, batch).item() - expected) < 1e-6


@pytest.mark.parametrize("settings", [{}, dict(dropout=0.1, grad_accum=2)])
def test_resume_after_a_planned_stop_is_bit_identical(tiny_config, settings):
    whole = train(tiny_config("whole", **settings), progress=False, log=silent)
    halves = train(tiny_config("halves", **settings, max_steps=4), progress=False, log=silent)
    resume(halves.out_dir, {"max_steps": 8}, progress=False, log=silent)
    assert metrics(halves)[-1]["step"] == 8
    for a, b in zip(metrics(whole), metrics(halves)):
        assert {k: v for k, v in a.items() if k != "masked_per_s"} == {k: v for k, v in b.items() if k != "masked_per_s"}


def test_a_tiny_bert_learns_and_reports_accuracy(tiny_config):
    messages = []
    run = train(tiny_config(max_steps=400, decay_steps=None, eval_interval=200, batch_size=16, n_embd=32,
                            eval_windows=8, warmup_steps=10, lr=5e-3), progress=False, log=messages.append)
    baseline = next(m for m in messages if "baselines" in m)
    unigram = float(baseline.split("unigram loss ")[1].split(",")[0])
    last = metrics(run)[-1]
    assert last["val_loss"] < unigram - 0.2 and 0 <= last["val_accuracy"] <= 1
    model, tokenizer = load_model(run.out_dir)
    assert isinstance(model, BERTForMaskedLM) and tokenizer.special_tokens["[MASK]"] == 299


def test_settings_are_checked_and_named(tiny_config):
    with pytest.raises(SettingError, match="`vocab_size` must be at least 260"):
        tiny_config(vocab_size=258)
    with pytest.raises(SettingError, match="`hidden_act`"):
        tiny_config(hidden_act="relu")


def test_cli_trains_a_bert_and_names_a_bad_flag(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(tiny_bert_command(tiny_corpus, out, steps=2))
    assert code == 0 and "npllm fill-mask --checkpoint" in capsys.readouterr().out
    assert main(["train", "--model", "bert", "--mask-rate", "1.5", "--out", str(tmp_path / "x")]) == 2
    assert "--mask-rate must be in (0, 1]" in capsys.readouterr().err


def test_cli_fill_mask_on_a_trained_run_and_embed_on_a_saved_folder(tiny_corpus, tmp_path, capsys):
    import npllm
    from npllm.models import BERT
    from npllm.tokenizer import WordPieceTokenizer

    out = tmp_path / "run"
    assert main(tiny_bert_command(tiny_corpus, out, steps=2)) == 0
    capsys.readouterr()
    assert main(["fill-mask", "--checkpoint", str(out), "--text", "the [MASK] sat on the [MASK].", "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("the [") and lines[1].startswith("  [MASK] 1: ") and lines[2].startswith("  [MASK] 2: ")
    assert main(["fill-mask", "--checkpoint", str(out), "--text", "no mask here"]) == 2
    assert "the text has no [MASK]" in capsys.readouterr().err

    folder = tmp_path / "encoder"
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "dog", "sat"]
    npllm.save_pretrained(BERT(BERTConfig(vocab_size=9, context_length=8, n_layer=1, n_head=2, n_embd=8, n_inner=8)),
                          WordPieceTokenizer(vocab), folder)
    assert main(["embed", "--model", str(folder), "the cat sat", "the dog sat"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "cosine similarities:" and printed[1].split()[0] == "1.000"
    assert main(["embed", "--model", str(folder), "--out", str(tmp_path / "v.npy"), "the cat"]) == 0
    assert np.load(tmp_path / "v.npy").shape == (1, 8)
    assert main(["fill-mask", "--checkpoint", str(folder), "--text", "the [MASK]"]) == 2
    assert "holds a BERT without a masked-LM head" in capsys.readouterr().err
    assert main(["embed", "--model", str(tmp_path / "nowhere"), "x"]) == 2


def test_a_bert_run_refuses_an_init_it_would_ignore():
    from npllm.training.pretrain_bert import BERTTrainConfig

    with pytest.raises(SettingError, match="`init` starts a GPT from another model's weights"):
        BERTTrainConfig(init="runs/gpt")


def test_a_bert_run_given_to_a_gpt_command_is_one_line(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "bert"
    assert main(tiny_bert_command(tiny_corpus, out, steps=1)) == 0
    capsys.readouterr()
    for argv, message in [
        (["generate", "--checkpoint", str(out), "--prompt", "a"], "not a GPT run, so this command cannot use it"),
        (["export", "--checkpoint", str(out), "--out", str(tmp_path / "hf")], "not a GPT run"),
        (["train", "--resume", "--out", str(out), "--max-steps", "2"], "a run of another kind"),
        (["fill-mask", "--checkpoint", str(out), "--text", "a [MASK]", "--top-k", "0"], "--top-k must be at least 1"),
        (["embed", "--model", str(out), "a b"], "sentence embeddings need a BERT encoder with its WordPiece"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)


def test_next_sentence_prediction_trains_both_heads_resumes_bit_for_bit_and_reports_its_accuracy(tiny_config,
                                                                                                 tiny_corpus, tmp_path,
                                                                                                 capsys):
    from npllm.models import BERTForPreTraining

    whole = train(tiny_config("whole", next_sentence=True, dropout=0.1), progress=False, log=silent)
    halves = train(tiny_config("halves", next_sentence=True, dropout=0.1, max_steps=4), progress=False, log=silent)
    resume(halves.out_dir, {"max_steps": 8}, progress=False, log=silent)
    strip = [{k: v for k, v in record.items() if k != "masked_per_s"} for record in metrics(whole)]
    assert strip == [{k: v for k, v in record.items() if k != "masked_per_s"} for record in metrics(halves)]
    last = metrics(whole)[-1]
    assert 0 <= last["val_next_sentence_accuracy"] <= 1 and "val_accuracy" in last
    model, _ = load_model(whole.out_dir)
    assert isinstance(model, BERTForPreTraining) and model.cls.seq_relationship.weight.shape == (16, 2)
    out = tmp_path / "cli"
    assert main([*tiny_bert_command(tiny_corpus, out, steps=1), "--next-sentence"]) == 0
    assert "a coin's accuracy is 0.500" in capsys.readouterr().out
    assert main(["train", "--model", "bert", "--resume", "--out", str(out), "--max-steps", "2", "--quiet"]) == 0


def test_the_next_sentence_loss_is_the_sum_hugging_face_computes():
    from npllm.data.masking import MaskingRule
    from npllm.data.sentence_pairs import sentence_pair_batch
    from npllm.models import BERTForPreTraining
    from npllm.training.objectives import MaskedLMWithNextSentence

    model = BERTForPreTraining(BERTConfig(vocab_size=20, context_length=12, n_layer=1, n_head=2, n_embd=8, n_inner=8,
                                          dropout=0.0, attention_dropout=0.0))
    batch = sentence_pair_batch(np.arange(200) % 16, 3, 9, MaskingRule(19, 16), 17, 18, np.random.default_rng(0))
    with no_grad():
        token_logits, next_logits = model.heads(batch["input_ids"], token_type_ids=batch["token_type_ids"])
        expected = F.cross_entropy(token_logits, batch["targets"]).item() \
            + F.cross_entropy(next_logits, batch["next_sentence_labels"]).item()
        assert abs(MaskedLMWithNextSentence().loss(model, batch).item() - expected) < 1e-6
