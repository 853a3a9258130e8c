"""Distillation: the recipe in which a small student GPT learns from a bigger teacher GPT (``npllm distill``).

The third stage of training, after pre-training and fine-tuning.  A teacher,
trained by ``npllm train``, reads every batch beside the student; the student
learns from the teacher's whole distribution over the next token (its soft
targets) as well as from the text itself:

    loss = alpha * T^2 KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, text)

(``training.objectives.Distillation``; the soft term and why it is scaled by
T^2: ``functional/distillation.py``).  Everything else is pre-training's
recipe: the corpus, the batches, AdamW and its schedule, the shared loop with
its checkpoints and bit-exact resume.  What differs:

- the tokenizer is the teacher's, never learned again, and so are the
  vocabulary and the context length: the two models must read the same ids;
- the student's shape (``n_layer``, ``n_head``, ``n_embd``) is its own;
  ``student_init="teacher-layers"`` starts it from every other block of the
  teacher, with its embeddings and final norm, as DistilBERT did (the
  widths must then match), instead of from random weights;
- the validation loss is the student's next-token loss alone, so it compares
  with the teacher's (logged at the start) and with a student trained from
  scratch;
- the run records its teacher (folder and the SHA-256 of its weights) and
  refuses to resume with another.
"""

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npllm.errors import SettingError
from npllm.models import GPT
from npllm.runtime.data_parallel import DataParallel
from npllm.runtime.memory import keep_freed_memory
from npllm.training import loop, pretrain
from npllm.training.objectives import Distillation, NextToken
from npllm.training.pretrain import TrainConfig, build_run, load_model, require_new_run_folder, weights_sha256

STUDENT_INITS = ("random", "teacher-layers")
# taken from the teacher, whatever the config says: the student must read the teacher's token ids
FROM_THE_TEACHER = ("vocab_size", "context_length")


@dataclass
class DistillConfig(TrainConfig):
    """Pre-training's settings for the student, and the teacher with its temperature and weight."""

    teacher: str = ""               # the teacher: a run folder of npllm train, or a Hugging Face GPT-2 folder
    temperature: float = 2.0        # T: softens both distributions; > 1 shows the teacher's small probabilities
    alpha: float = 0.5              # weight of the soft loss; 1 - alpha weighs the text's cross-entropy
    student_init: str = "random"    # or "teacher-layers": every other block of the teacher (widths must match)
    n_layer: int = 2                # the student: half the default teacher's blocks
    out_dir: str = "runs/distilled"

    def __post_init__(self):
        super().__post_init__()
        if not self.teacher:
            raise SettingError("`teacher` is required: the run folder of a model trained with npllm train")
        if not 0 < self.temperature < math.inf:
            raise SettingError(f"`temperature` must be a positive number, got {self.temperature}")
        if not 0 <= self.alpha <= 1:
            raise SettingError(f"`alpha` must be between 0 and 1, got {self.alpha}")
        if self.student_init not in STUDENT_INITS:
            raise SettingError(f"`student_init` must be one of {', '.join(STUDENT_INITS)}, got {self.student_init!r}")


FIXED_ON_RESUME = (*pretrain.FIXED_ON_RESUME, "teacher", "temperature", "alpha", "student_init")


@dataclass
class DistillRun(pretrain.Run):
    """A distillation run: pre-training's, and the fingerprint of the teacher it learns from."""

    teacher_sha256: str = ""

    def recipe_state(self) -> dict:
        return {**super().recipe_state(), "teacher_sha256": self.teacher_sha256}


def distill(config: DistillConfig, progress=True, log=print) -> DistillRun:
    """Start a distillation run in ``config.out_dir`` and train the student for ``config.max_steps`` steps."""
    keep_freed_memory()
    out_dir = Path(config.out_dir)
    require_new_run_folder(out_dir)
    teacher, tokenizer = load_model(config.teacher, log=log)
    config = dataclasses.replace(pretrain.with_workers_fixed(config),
                                 **{name: getattr(teacher.config, name) for name in FROM_THE_TEACHER})
    check_student_init(config, teacher)
    corpus = pretrain.read_data(config, log)
    log(f"teacher: {config.teacher}, {teacher.num_parameters():,} parameters; its tokenizer, {tokenizer.vocab_size} ids")
    run = _build(config, tokenizer, corpus, log, pretrain._new_param_groups, teacher,
                 weights_sha256(config.teacher))
    if config.student_init == "teacher-layers":
        copy_every_other_block(teacher, run.model)
        log(f"student: blocks {', '.join(str(2 * i) for i in range(config.n_layer))} of the teacher, its embeddings"
            " and final norm")
    log(f"teacher's validation loss {teacher_validation_loss(run, teacher):.3f}")
    loop.prepare_run_folder(out_dir)
    return loop.train(run, progress, log)


def resume(out_dir, changes=None, progress=True, log=print) -> DistillRun:
    """Continue the distillation run saved in ``out_dir``, with its own teacher, exactly where it stopped."""
    keep_freed_memory()
    run = pretrain.restore_run(out_dir, changes or {}, log, config_class=DistillConfig,
                               fixed_on_resume=FIXED_ON_RESUME, build=_rebuild)
    return loop.train(run, progress, log)


def _rebuild(config, tokenizer, corpus, log, param_groups, checkpoint):
    """The run saved in ``checkpoint``, after checking that its teacher is still the same model."""
    teacher, _ = load_model(config.teacher, log=log)
    fingerprint = weights_sha256(config.teacher)
    if checkpoint.train_state.get("teacher_sha256") != fingerprint:
        raise SettingError(f"`teacher` {config.teacher}: not the teacher this run learned from"
                           " (its weights have changed since)")
    return _build(config, tokenizer, corpus, log, param_groups, teacher, fingerprint)


def _build(config, tokenizer, corpus, log, param_groups, teacher, fingerprint) -> DistillRun:
    objective = Distillation(teacher, temperature=config.temperature, alpha=config.alpha)
    return build_run(config, tokenizer, corpus, log, param_groups=param_groups, objective=objective,
                     run_class=DistillRun, teacher_sha256=fingerprint)


def check_student_init(config: DistillConfig, teacher: GPT):
    if config.student_init != "teacher-layers":
        return
    if (config.n_embd, config.n_head) != (teacher.config.n_embd, teacher.config.n_head):
        raise SettingError(f"`student_init` teacher-layers needs the teacher's width: `n_embd` {teacher.config.n_embd}"
                           f" and `n_head` {teacher.config.n_head} (got {config.n_embd} and {config.n_head})")
    if 2 * config.n_layer - 1 > teacher.config.n_layer:
        raise SettingError(f"`student_init` teacher-layers: a teacher of {teacher.config.n_layer} blocks has every"
                           f" other block for a student of at most {(teacher.config.n_layer + 1) // 2}"
                           f" (`n_layer` {config.n_layer})")


def copy_every_other_block(teacher: GPT, student: GPT):
    """The student's block i gets teacher block 2i; embeddings and the final norm are copied whole (DistilBERT)."""
    weights = teacher.state_dict()
    for name, param in student.named_parameters():
        if name.startswith("h."):
            index, rest = name[2:].split(".", 1)
            name = f"h.{2 * int(index)}.{rest}"
        np.copyto(param.data, weights[name])


def teacher_validation_loss(run: DistillRun, teacher: GPT) -> float:
    """The teacher's next-token loss on the student's held-out batches: the figure the student aims at."""
    teacher_run = dataclasses.replace(run, model=teacher, parallel=DataParallel(teacher, run.config.workers))
    loss = loop.evaluate(teacher_run, NextToken())
    teacher.eval()  # (evaluate leaves the model it measured in training mode)
    return loss
