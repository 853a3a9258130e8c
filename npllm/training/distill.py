"""Distillation: the recipe in which a small student learns from a bigger teacher of its kind (``npllm distill``).

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

**A BERT teacher** (a run of ``npllm train --model bert``, or a Hugging Face
``BertForMaskedLM`` / ``BertForPreTraining`` folder) gets a BERT student
(``BERTDistillConfig``), trained on masked-LM pre-training's batches (the
same seeded, resumable masking) with ``MaskedDistillation``: the soft
targets at the masked positions only, and with ``cosine_weight`` > 0
DistilBERT's cosine loss between the two models' last hidden states.
Every-other-layer initialisation copies ``bert.encoder.layer.2i`` into the
student's layer i (the widths, MLP's included, must match), with the
embeddings and the masked-LM head.  Its window (``context_length``) is its
own, at most the teacher's position table; evaluation reports the student's
held-out masked-LM loss and masked-token accuracy, beside the teacher's on
the same masks at the start.  ``teacher_kind`` tells the two cases apart,
from the folder alone; a student of another kind than its teacher is refused.
"""

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npllm.errors import SettingError
from npllm.runtime.data_parallel import DataParallel
from npllm.runtime.memory import keep_freed_memory
from npllm.training import loop, pretrain, pretrain_bert
from npllm.training.objectives import Distillation, MaskedDistillation, MaskedLM, NextToken
from npllm.training.pretrain import TrainConfig, build_run, load_model, require_new_run_folder, weights_sha256
from npllm.training.pretrain_bert import BERTTrainConfig

STUDENT_INITS = ("random", "teacher-layers")
# taken from the teacher, whatever the config says: the student must read the teacher's token ids
FROM_THE_TEACHER = ("vocab_size", "context_length")
FROM_THE_BERT_TEACHER = ("vocab_size",)  # a BERT student's window is its own (at most the teacher's positions)
KINDS = ("gpt", "bert")


@dataclass
class TeacherSettings:
    """The settings every distillation adds to its student's pre-training settings."""

    teacher: str = ""               # the teacher: a run folder of npllm train (or --model bert), or a Hugging Face folder
    temperature: float = 2.0        # T: softens both distributions; > 1 shows the teacher's small probabilities
    alpha: float = 0.5              # weight of the soft loss; 1 - alpha weighs the text's cross-entropy
    student_init: str = "random"    # or "teacher-layers": every other block of the teacher (widths must match)

    def check_teacher_settings(self):
        if not self.teacher:
            raise SettingError("`teacher` is required: the run folder of a model trained with npllm train")
        if not 0 < self.temperature < math.inf:
            raise SettingError(f"`temperature` must be a positive number, got {self.temperature}")
        if not 0 <= self.alpha <= 1:
            raise SettingError(f"`alpha` must be between 0 and 1, got {self.alpha}")
        if self.student_init not in STUDENT_INITS:
            raise SettingError(f"`student_init` must be one of {', '.join(STUDENT_INITS)}, got {self.student_init!r}")


@dataclass
class DistillConfig(TrainConfig, TeacherSettings):
    """Pre-training's settings for the student GPT, and the teacher with its temperature and weight."""

    n_layer: int = 2                # the student: half the default teacher's blocks
    out_dir: str = "runs/distilled"

    def __post_init__(self):
        super().__post_init__()
        self.check_teacher_settings()


@dataclass
class BERTDistillConfig(BERTTrainConfig, TeacherSettings):
    """Masked-LM pre-training's settings for the student BERT, the teacher's, and DistilBERT's cosine loss."""

    cosine_weight: float = 0.0      # weight of 1 - cos(student, teacher) on the last hidden states (DistilBERT: 1
                                    # against 5 for the soft loss and 2 for the hard one); needs equal widths
    n_layer: int = 2
    out_dir: str = "runs/distilled-bert"

    def __post_init__(self):
        super().__post_init__()
        self.check_teacher_settings()
        if not 0 <= self.cosine_weight < math.inf:
            raise SettingError(f"`cosine_weight` must be at least 0, got {self.cosine_weight}")
        if self.next_sentence:
            raise SettingError("`next_sentence`: a student distils the teacher's masked-token guesses only")


FIXED_ON_RESUME = (*pretrain.FIXED_ON_RESUME, "teacher", "temperature", "alpha", "student_init")
FIXED_ON_RESUME_BERT = (*pretrain_bert.FIXED_ON_RESUME_BERT, "teacher", "temperature", "alpha", "student_init",
                        "cosine_weight")


@dataclass
class RecordsTeacher:
    """A run that learns from a teacher keeps the fingerprint of its weights (``weights_sha256``)."""

    teacher_sha256: str = ""

    def recipe_state(self) -> dict:
        return {**super().recipe_state(), "teacher_sha256": self.teacher_sha256}


@dataclass
class DistillRun(RecordsTeacher, pretrain.Run):
    """A distillation run of a GPT: pre-training's, and the fingerprint of the teacher it learns from."""


@dataclass
class BERTDistillRun(RecordsTeacher, pretrain_bert.BERTRun):
    """A distillation run of a BERT: masked-LM pre-training's, and the fingerprint of its teacher."""


def require_kind(teacher: str, student_kind: str | None) -> str:
    """The teacher's kind, which must be the student's (``model``, if given): a BERT teaches a BERT, a GPT a GPT."""
    kind = pretrain.model_kind(teacher)
    if kind not in ("gpt", "bert"):
        raise SettingError(f"`teacher` {teacher} holds a {kind.upper()}: npllm distill teaches a GPT or a BERT")
    if student_kind is not None and kind != student_kind:
        raise SettingError(f"`teacher` {teacher} holds a {kind.upper()}, but the student (`model`) is a"
                           f" {student_kind.upper()}: a student learns its teacher's distribution over the same"
                           " kind of prediction (next token or masked token), so their kinds must match")
    return kind


def distill(config: DistillConfig | BERTDistillConfig, progress=True, log=print) -> DistillRun | BERTDistillRun:
    """Start a distillation run in ``config.out_dir`` and train the student for ``config.max_steps`` steps.

    A ``BERTDistillConfig`` distils a BERT (its teacher must be one), a ``DistillConfig`` a GPT.
    """
    keep_freed_memory()
    out_dir = Path(config.out_dir)
    require_new_run_folder(out_dir)
    bert = isinstance(config, BERTDistillConfig)
    require_kind(config.teacher, "bert" if bert else "gpt")
    teacher, tokenizer = load_teacher(config.teacher, bert, log)
    config = dataclasses.replace(pretrain.with_workers_fixed(config),
                                 **{name: getattr(teacher.config, name)
                                    for name in (FROM_THE_BERT_TEACHER if bert else FROM_THE_TEACHER)})
    check_student(config, teacher)
    corpus = pretrain.read_data(config, log)
    log(f"teacher: {config.teacher}, {teacher.num_parameters():,} parameters; its tokenizer, {tokenizer.vocab_size} ids")
    run = _build(config, tokenizer, corpus, log, pretrain._new_param_groups, teacher,
                 weights_sha256(config.teacher))
    if config.student_init == "teacher-layers":
        copy_every_other_block(teacher, run.model)
        log(f"student: blocks {', '.join(str(2 * i) for i in range(config.n_layer))} of the teacher, its embeddings"
            f" and {'masked-LM head' if bert else 'final norm'}")
    log(teacher_evaluation(run, teacher))
    loop.prepare_run_folder(out_dir)
    return loop.train(run, progress, log)


def resume(out_dir, changes=None, progress=True, log=print) -> DistillRun | BERTDistillRun:
    """Continue the distillation run saved in ``out_dir``, with its own teacher, exactly where it stopped."""
    keep_freed_memory()
    if pretrain.model_kind(out_dir) == "bert":
        run = pretrain_bert.restore_run(out_dir, changes or {}, log, config_class=BERTDistillConfig,
                                        fixed_on_resume=FIXED_ON_RESUME_BERT, build=_rebuild)
    else:
        run = pretrain.restore_run(out_dir, changes or {}, log, config_class=DistillConfig,
                                   fixed_on_resume=FIXED_ON_RESUME, build=_rebuild)
    return loop.train(run, progress, log)


def load_teacher(path, bert: bool, log):
    """The teacher and its tokenizer: a GPT (``pretrain.load_model``), or a BERT with its masked-LM head."""
    if not bert:
        return load_model(path, log=log)
    model, tokenizer = pretrain_bert.load_model(path)
    if not hasattr(model, "predict"):
        raise SettingError(f"`teacher` {path}: this BERT has no masked-LM head (cls.predictions) to teach with")
    if tokenizer is None:
        raise SettingError(f"`teacher` {path}: has no tokenizer (vocab.txt or tokenizer.json); the student reads"
                           " the teacher's token ids, so it needs the teacher's tokenizer")
    if tokenizer.vocab_size != model.config.vocab_size:
        raise SettingError(f"`teacher` {path}: its tokenizer has {tokenizer.vocab_size} ids but its model"
                           f" {model.config.vocab_size}; the student must read the very ids the teacher scores")
    return model, tokenizer


def _rebuild(config, tokenizer, corpus, log, param_groups, checkpoint):
    """The run saved in ``checkpoint``, after checking that its teacher is still the same model."""
    teacher, _ = load_teacher(config.teacher, isinstance(config, BERTDistillConfig), log)
    fingerprint = weights_sha256(config.teacher)
    if checkpoint.train_state.get("teacher_sha256") != fingerprint:
        raise SettingError(f"`teacher` {config.teacher}: not the teacher this run learned from"
                           " (its weights have changed since)")
    return _build(config, tokenizer, corpus, log, param_groups, teacher, fingerprint)


def _build(config, tokenizer, corpus, log, param_groups, teacher, fingerprint):
    if isinstance(config, BERTDistillConfig):
        objective = MaskedDistillation(teacher, config.temperature, config.alpha, config.cosine_weight)
        model_config = dataclasses.replace(config.model_config(tokenizer.vocab_size),
                                           pad_token_id=teacher.config.pad_token_id,
                                           type_vocab_size=teacher.config.type_vocab_size)
        return pretrain_bert.build_run(config, tokenizer, corpus, log, param_groups=param_groups,
                                       model_config=model_config, objective=objective, run_class=BERTDistillRun,
                                       teacher_sha256=fingerprint)
    objective = Distillation(teacher, temperature=config.temperature, alpha=config.alpha)
    return build_run(config, tokenizer, corpus, log, param_groups=param_groups, objective=objective,
                     run_class=DistillRun, teacher_sha256=fingerprint)


WIDTHS = ("n_embd", "n_head", "n_inner")  # what every-other-block copying needs equal (n_inner: BERT's only)


def check_student(config, teacher):
    """Refuse a student the teacher cannot teach as configured, before any data is read."""
    if isinstance(config, BERTDistillConfig):
        if config.context_length > teacher.config.context_length:
            raise SettingError(f"`context_length` {config.context_length} exceeds the teacher's position table of"
                               f" {teacher.config.context_length}: the teacher must read the student's windows")
        if config.cosine_weight > 0 and config.n_embd != teacher.config.n_embd:
            raise SettingError(f"`cosine_weight` compares hidden states, so the student's `n_embd` {config.n_embd}"
                               f" must be the teacher's {teacher.config.n_embd}")
    if config.student_init != "teacher-layers":
        return
    student = config.model_config(config.vocab_size)
    widths = [name for name in WIDTHS if hasattr(teacher.config, name)]
    if any(getattr(student, name) != getattr(teacher.config, name) for name in widths):
        raise SettingError("`student_init` teacher-layers needs the teacher's width: "
                           + " and ".join(f"`{name}` {getattr(teacher.config, name)}" for name in widths)
                           + f" (got {' and '.join(str(getattr(student, name)) for name in widths)})")
    if 2 * config.n_layer - 1 > teacher.config.n_layer:
        raise SettingError(f"`student_init` teacher-layers: a teacher of {teacher.config.n_layer} blocks has every"
                           f" other block for a student of at most {(teacher.config.n_layer + 1) // 2}"
                           f" (`n_layer` {config.n_layer})")


BLOCK_INDEX = re.compile(r"\.(\d+)\.")  # the block's number in a parameter's name: h.3.attn..., bert.encoder.layer.3...


def copy_every_other_block(teacher, student):
    """The student's block i gets teacher block 2i; the rest (embeddings, final norm or head) is copied whole.

    DistilBERT's initialisation.  The block's number is the one number in a
    parameter's name (GPT's ``h.3.``, BERT's ``bert.encoder.layer.3.``).  The
    student's position table may be shorter than the teacher's (a BERT
    student's window): it takes the first rows.
    """
    weights = teacher.state_dict()
    for name, param in student.named_parameters():
        source = BLOCK_INDEX.sub(lambda match: f".{2 * int(match.group(1))}.", name, count=1)
        np.copyto(param.data, weights[source][: len(param.data)])


def teacher_evaluation(run, teacher) -> str:
    """The teacher's held-out figures on the student's batches (its masked-token accuracy too, for a BERT):
    what the student aims at."""
    bert = isinstance(run, BERTDistillRun)
    objective = MaskedLM() if bert else NextToken()
    teacher_run = dataclasses.replace(run, model=teacher, parallel=DataParallel(teacher, run.config.workers))
    loss = loop.evaluate(teacher_run, objective)
    line = f"teacher's validation loss {loss:.3f}"
    if bert:
        accuracy = pretrain_bert.masked_accuracy(teacher, run.evaluation_set(), objective)
        line += f", masked-token accuracy {accuracy:.3f}"
    teacher.eval()  # (evaluate leaves the model it measured in training mode)
    return line
