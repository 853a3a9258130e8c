"""Distillation keeps the promises that hold on any machine.

With alpha = 0 a distilled student is exactly a student trained from scratch
(same corpus, tokenizer, seed and settings: the same losses, bit for bit); a
teacher distilled into a copy of itself has nothing to teach (the soft loss is
0); a run resumes bit for bit and refuses a changed teacher; bad settings are
one line.  Whether distillation *helps* is a measurement: ``npllm bench distill``.
"""

import json
import shutil
from pathlib import Path

import pytest

from npllm.cli import main
from npllm.errors import SettingError
from npllm.training.distill import DistillConfig, distill, resume
from npllm.training.pretrain import TrainConfig, train

SHARED = dict(vocab_size=300, context_length=16, n_head=2, n_embd=16, batch_size=4, eval_windows=4, warmup_steps=2,
              max_steps=6, decay_steps=6, eval_interval=3, dropout=0.0)


def silent(*_):
    pass


def metrics(out_dir) -> list[dict]:
    records = [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]
    return [{key: value for key, value in record.items() if key != "tokens_per_s"} for record in records]


@pytest.fixture
def teacher(tiny_corpus, tmp_path):
    run = train(TrainConfig(**{**SHARED, "n_layer": 2, "max_steps": 10}, data=str(tiny_corpus),
                            out_dir=str(tmp_path / "teacher")), progress=False, log=silent)
    return run.config.out_dir


def student_config(tiny_corpus, tmp_path, teacher, name="student", **changes):
    return DistillConfig(**{**SHARED, "n_layer": 1, **changes}, data=str(tiny_corpus), teacher=teacher,
                         out_dir=str(tmp_path / name))


def test_with_alpha_zero_distillation_is_exactly_training_from_scratch(tiny_corpus, tmp_path, teacher):
    scratch = train(TrainConfig(**SHARED, n_layer=1, data=str(tiny_corpus), out_dir=str(tmp_path / "scratch")),
                    progress=False, log=silent)
    distilled = distill(student_config(tiny_corpus, tmp_path, teacher, alpha=0.0), progress=False, log=silent)
    assert metrics(distilled.config.out_dir) == metrics(scratch.config.out_dir)


def test_a_teacher_has_nothing_to_teach_a_copy_of_itself(tiny_corpus, tmp_path):
    one_block = train(TrainConfig(**{**SHARED, "n_layer": 1}, data=str(tiny_corpus), out_dir=str(tmp_path / "one")),
                      progress=False, log=silent)
    config = student_config(tiny_corpus, tmp_path, one_block.config.out_dir, alpha=1.0, student_init="teacher-layers",
                            max_steps=1, lr=1e-3, min_lr=0.0)
    copy = distill(config, progress=False, log=silent)
    assert metrics(copy.config.out_dir)[0]["train_loss"] == 0.0


def test_a_distillation_run_resumes_bit_for_bit_and_refuses_a_changed_teacher(tiny_corpus, tmp_path, teacher):
    whole = distill(student_config(tiny_corpus, tmp_path, teacher, name="whole", dropout=0.1), progress=False,
                    log=silent)
    halves = student_config(tiny_corpus, tmp_path, teacher, name="halves", dropout=0.1, max_steps=3)
    distill(halves, progress=False, log=silent)
    resume(halves.out_dir, {"max_steps": 6}, progress=False, log=silent)
    assert metrics(halves.out_dir) == metrics(whole.config.out_dir)
    other = train(TrainConfig(**{**SHARED, "n_layer": 2}, seed=99, data=str(tiny_corpus),
                              out_dir=str(tmp_path / "other")), progress=False, log=silent)
    shutil.rmtree(Path(teacher) / "checkpoint")
    shutil.copytree(Path(other.config.out_dir) / "checkpoint", Path(teacher) / "checkpoint")
    with pytest.raises(SettingError, match="not the teacher this run learned from"):
        resume(halves.out_dir, {"max_steps": 8}, progress=False, log=silent)


@pytest.mark.parametrize("flags, message", [
    (["--temperature", "0"], "--temperature must be a positive number, got 0.0"),
    (["--alpha", "1.5"], "--alpha must be between 0 and 1, got 1.5"),
    (["--student-init", "copy"], "--student-init must be one of random, teacher-layers, got 'copy'"),
    (["--student-init", "teacher-layers", "--n-embd", "32"], "--student-init teacher-layers needs the teacher's width"),
    (["--student-init", "teacher-layers", "--n-layer", "2"], "a teacher of 2 blocks has every other block for a"
                                                            " student of at most 1"),
], ids=["temperature", "alpha", "init", "width", "depth"])
def test_bad_distillation_settings_are_one_line(tiny_corpus, tmp_path, teacher, flags, message, capsys):
    argv = ["distill", "--teacher", teacher, "--data", str(tiny_corpus), "--out", str(tmp_path / "s"), "--n-layer", "1",
            "--n-head", "2", "--n-embd", "16", "--quiet", *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("npllm distill: error: ") and err.count("\n") == 1 and message in err


def test_a_missing_teacher_is_one_line(tmp_path, capsys):
    assert main(["distill", "--teacher", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s")]) == 2
    assert "nowhere: no checkpoint here" in capsys.readouterr().err


def test_a_hugging_face_folder_can_teach_and_be_fine_tuned(tiny_corpus, tmp_path, teacher):
    """An exported teacher (a Hugging Face GPT-2 folder) serves distillation and classification as its run does."""
    from npllm import save_pretrained
    from npllm.training.finetune import ClassifyConfig, classify
    from npllm.training.pretrain import load_model

    folder = tmp_path / "hf-teacher"
    save_pretrained(*load_model(teacher), folder)
    from_folder = distill(student_config(tiny_corpus, tmp_path, str(folder), name="from-folder"), progress=False,
                          log=silent)
    from_run = distill(student_config(tiny_corpus, tmp_path, teacher, name="from-run"), progress=False, log=silent)
    assert metrics(from_folder.config.out_dir) == metrics(from_run.config.out_dir)
    labelled = tmp_path / "labels.jsonl"
    labelled.write_text("\n".join(json.dumps({"text": f"{word} {i}", "label": word}) for word in ("cat", "dog")
                                  for i in range(10)))
    run = classify(ClassifyConfig(checkpoint=str(folder), data=str(labelled), out_dir=str(tmp_path / "cls"),
                                  max_steps=2, batch_size=4, warmup_steps=1), progress=False, log=silent)
    assert run.step == 2 and len(run.base_sha256) == 64
