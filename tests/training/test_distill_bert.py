"""Distilling a BERT keeps the promises that hold on any machine.

With alpha = 0 (and no cosine term) a distilled BERT student is exactly
masked-LM pre-training from scratch; a one-layer teacher distilled into a
copy of itself has nothing to teach (the soft loss is 0); a run with the
cosine loss and dropout resumes bit for bit; a Hugging Face BERT folder (with
its WordPiece) teaches as a run does, and its student keeps that tokenizer;
bad settings are one line.  Whether it helps is ``npllm bench distill --model bert``.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from npllm.cli import main
from npllm.errors import SettingError
from npllm.training.distill import BERTDistillConfig, distill, resume
from npllm.training.pretrain_bert import BERTTrainConfig, load_model, train

SHARED = dict(vocab_size=300, context_length=16, n_head=2, n_embd=16, batch_size=4, eval_windows=4, warmup_steps=2,
              max_steps=6, decay_steps=6, eval_interval=3, lr=3e-3)


def silent(*_):
    pass


def metrics(out_dir) -> list[dict]:
    records = [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]
    return [{key: value for key, value in record.items() if key != "masked_per_s"} for record in records]


@pytest.fixture
def teacher(tiny_corpus, tmp_path):
    run = train(BERTTrainConfig(**{**SHARED, "n_layer": 2, "max_steps": 10}, data=str(tiny_corpus),
                                out_dir=str(tmp_path / "teacher")), progress=False, log=silent)
    return run.config.out_dir


def student(tiny_corpus, tmp_path, teacher, name="student", **changes):
    return BERTDistillConfig(**{**SHARED, "n_layer": 1, **changes}, data=str(tiny_corpus), teacher=str(teacher),
                             out_dir=str(tmp_path / name))


def test_with_alpha_zero_a_distilled_bert_is_exactly_masked_lm_from_scratch(tiny_corpus, tmp_path, teacher):
    scratch = train(BERTTrainConfig(**SHARED, n_layer=1, data=str(tiny_corpus), out_dir=str(tmp_path / "scratch")),
                    progress=False, log=silent)
    messages = []
    distilled = distill(student(tiny_corpus, tmp_path, teacher, alpha=0.0), progress=False, log=messages.append)
    assert metrics(distilled.config.out_dir) == metrics(scratch.config.out_dir)
    assert "val_accuracy" in metrics(distilled.config.out_dir)[-1]
    assert any(line.startswith("teacher's validation loss ") and "masked-token accuracy" in line for line in messages)


def test_a_bert_teacher_has_nothing_to_teach_a_copy_of_itself(tiny_corpus, tmp_path):
    one_layer = train(BERTTrainConfig(**{**SHARED, "n_layer": 1}, data=str(tiny_corpus), out_dir=str(tmp_path / "one")),
                      progress=False, log=silent)
    config = student(tiny_corpus, tmp_path, one_layer.config.out_dir, alpha=1.0, student_init="teacher-layers",
                     max_steps=1, dropout=0.0, cosine_weight=1.0)
    copy = distill(config, progress=False, log=silent)
    assert abs(metrics(copy.config.out_dir)[0]["train_loss"]) < 1e-6  # KL exactly 0; the cosine term to rounding


def test_a_bert_distillation_with_the_cosine_loss_resumes_bit_for_bit(tiny_corpus, tmp_path, teacher):
    settings = dict(n_embd=16, cosine_weight=1.0, dropout=0.1, context_length=12)
    whole = distill(student(tiny_corpus, tmp_path, teacher, name="whole", **settings), progress=False, log=silent)
    halves = student(tiny_corpus, tmp_path, teacher, name="halves", **settings, max_steps=3)
    distill(halves, progress=False, log=silent)
    resume(halves.out_dir, {"max_steps": 6}, progress=False, log=silent)
    assert metrics(halves.out_dir) == metrics(whole.config.out_dir)


def test_a_hugging_face_bert_teaches_with_its_wordpiece(tiny_corpus, tmp_path, capsys):
    import npllm
    from npllm.models import BERTConfig, BERTForMaskedLM
    from npllm.tokenizer import WordPieceTokenizer

    words = sorted(set(tiny_corpus.read_text().replace(".", " .").split()))
    vocab = ["[PAD]", *(f"[unused{i}]" for i in range(256)), "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]  # as BERT's
    folder = tmp_path / "hf-bert"
    npllm.save_pretrained(BERTForMaskedLM(BERTConfig(vocab_size=len(vocab), context_length=32, n_layer=2, n_head=2,
                                                     n_embd=16, n_inner=32)), WordPieceTokenizer(vocab), folder)
    out = tmp_path / "from-hf"
    argv = ["distill", "--teacher", str(folder), "--data", str(tiny_corpus), "--out", str(out), "--n-layer", "1",
            "--n-head", "2", "--n-embd", "16", "--n-inner", "32", "--context-length", "12", "--student-init",
            "teacher-layers", "--batch-size", "4", "--eval-windows", "2", "--quiet"]
    assert main([*argv, "--max-steps", "2"]) == 0
    assert "npllm fill-mask --checkpoint" in capsys.readouterr().out
    assert main(["distill", "--resume", "--out", str(out), "--max-steps", "3", "--quiet"]) == 0
    model, tokenizer = load_model(out)
    assert isinstance(tokenizer, WordPieceTokenizer) and tokenizer.tokens == vocab
    teacher_model, _ = npllm.load_pretrained(folder)
    np.testing.assert_array_equal(model.bert.embeddings.position_embeddings.weight.shape, (12, 16))
    assert main(["fill-mask", "--checkpoint", str(out), "--text", "the [MASK] sat on the mat ."]) == 0
    assert teacher_model.config.vocab_size == model.config.vocab_size == len(vocab)


@pytest.mark.parametrize("flags, message", [
    (["--model", "gpt"], "holds a BERT, but the student (--model) is a GPT"),
    (["--temperature", "-1"], "--temperature must be a positive number, got -1.0"),
    (["--alpha", "-0.1"], "--alpha must be between 0 and 1, got -0.1"),
    (["--cosine-weight", "1", "--n-embd", "8"], "--cosine-weight compares hidden states, so the student's --n-embd 8"),
    (["--context-length", "64"], "--context-length 64 exceeds the teacher's position table of 16"),
    (["--student-init", "teacher-layers", "--n-inner", "32"], "--student-init teacher-layers needs the teacher's"
                                                             " width: --n-embd 16 and --n-head 2 and --n-inner 64"),
], ids=["kind", "temperature", "alpha", "cosine", "context", "width"])
def test_bad_bert_distillation_settings_are_one_line(tiny_corpus, tmp_path, teacher, flags, message, capsys):
    argv = ["distill", "--teacher", teacher, "--data", str(tiny_corpus), "--out", str(tmp_path / "s"), "--n-layer", "1",
            "--n-head", "2", "--n-embd", "16", "--context-length", "16", "--quiet", *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("npllm distill: error: ") and err.count("\n") == 1 and message in err, err


def test_a_gpt_teacher_for_a_bert_student_is_one_line(tiny_corpus, tmp_path, capsys):
    from npllm.training.pretrain import TrainConfig
    from npllm.training.pretrain import train as train_gpt

    gpt = train_gpt(TrainConfig(**{**SHARED, "n_layer": 1, "max_steps": 1}, data=str(tiny_corpus),
                                out_dir=str(tmp_path / "gpt")), progress=False, log=silent)
    assert main(["distill", "--model", "bert", "--teacher", gpt.config.out_dir, "--out", str(tmp_path / "s")]) == 2
    assert "holds a GPT, but the student (--model) is a BERT" in capsys.readouterr().err
    with pytest.raises(SettingError, match="holds a GPT"):
        distill(student(tiny_corpus, tmp_path, gpt.config.out_dir), progress=False, log=silent)
