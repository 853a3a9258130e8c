"""Classification fine-tuning: a pre-trained GPT or BERT learns to label texts (``npllm finetune classify``).

After pre-training, a model knows a language; fine-tuning teaches it a task
with few examples.  This recipe puts a new linear head on a GPT from
``npllm train`` (``models.SequenceClassifier``: the state at the last real
token, C -> labels) or on a BERT (``models.BERTSequenceClassifier``: the
pooled [CLS]; a run of ``npllm train --model bert`` or a Hugging Face BERT
folder) and trains on labelled texts (``data.labelled``: stdlib-topics,
sms-spam, the user's file) through the shared loop, with one of three
choices of what is trained:

    all           every weight: the most capable, the most memory (moments for all)
    last-blocks   the last ``last_blocks`` blocks, the final norm (BERT: the pooler) and the head; the rest frozen
    lora          LoRA adapters on every projection of every block, and the head (``nn.lora``)

The held-out split's loss is the loop's validation loss; at the end the
recipe reports accuracy, macro-F1 and the confusion matrix beside the
majority-class baseline and a bag-of-words logistic regression
(``training.evaluation``), and writes them to ``report.json``.  With
``init="random"`` the same classifier starts from random weights of the same
shape: what pre-training buys is the difference.  The run records the
checkpoint it started from (folder and the SHA-256 of its weights) and
refuses to resume from another.

What every fine-tuning recipe shares lives here too (``FineTuneConfig``,
``start``, ``resume_run``, ``load_base``, ``fine_tuning_fields``,
``choose_trained``); instruction tuning (``training.instruct``) is the other.
"""

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npllm.data.labelled import LabelledText, RandomExamples, in_order, labelled_batch, load_labelled
from npllm.errors import SettingError
from npllm.generation.encoder import bert_input_ids
from npllm.io.atomic import atomic_write_text
from npllm.io.safetensors import CheckpointError
from npllm.models import BERT, GPT, BERTForMaskedLM, BERTSequenceClassifier, SequenceClassifier
from npllm.nn.lora import BERT_TARGETS, DEFAULT_TARGETS, apply_lora
from npllm.optim import AdamW, configure_param_groups, param_groups_by_name
from npllm.runtime.data_parallel import DataParallel
from npllm.runtime.memory import keep_freed_memory
from npllm.runtime.mpi import ranks_and_threads
from npllm.tensor import no_grad
from npllm.tokenizer import BPETokenizer, WordPieceTokenizer
from npllm.training import evaluation, loop
from npllm.training.checkpoint import load_checkpoint
from npllm.training.loop import LoopSettings, TrainingRun
from npllm.training.objectives import Classification
from npllm.training.pretrain import (END_OF_TEXT, check_settings, load_model, model_kind, optimisation_checks,
                                     require_new_run_folder, warmup_cosine, weights_sha256, with_workers_fixed)
from npllm.training.pretrain_bert import load_encoder

TRAINED = ("all", "last-blocks", "lora")
INITS = ("pretrained", "random")
REPORT_FILE = "report.json"


@dataclass
class FineTuneConfig:
    """The settings every fine-tuning recipe shares: the base, what is trained, the optimisation, the run folder."""

    checkpoint: str = "runs/gpt"     # the GPT to start from: a run of npllm train, or a Hugging Face GPT-2 folder
    data: str = ""
    train: str = "all"               # what is trained: all, last-blocks, lora
    last_blocks: int = 1             # with train=last-blocks: how many of the last blocks
    lora_rank: int = 8               # with train=lora
    lora_alpha: float = 16.0
    batch_size: int = 16
    grad_accum: int = 1
    workers: int | None = None
    max_steps: int = 300
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 20
    decay_steps: int | None = None   # where the cosine reaches min_lr (None: max_steps)
    weight_decay: float = 0.01
    beta2: float = 0.999
    grad_clip: float = 1.0
    eval_interval: int = 100
    seed: int = 1337
    out_dir: str = ""

    def checks(self) -> list[tuple[str, bool, str]]:
        """A recipe's own (setting, whether it holds, what it must be), beside the shared ones."""
        return []

    def __post_init__(self):
        check_settings(self, ("batch_size", "grad_accum", "eval_interval", "max_steps", "decay_steps", "last_blocks",
                              "lora_rank", "workers"), [
            ("train", self.train in TRAINED, f"one of {', '.join(TRAINED)}"),
            *optimisation_checks(self),
            ("lora_alpha", 0 < self.lora_alpha < math.inf, "a positive number"),
            *self.checks(),
        ])


# The settings every fine-tuning run must share with its checkpoint on resume; a recipe adds its own.
FIXED_ON_RESUME = ("checkpoint", "data", "train", "last_blocks", "lora_rank", "lora_alpha", "batch_size", "grad_accum",
                   "weight_decay", "beta2", "seed")


@dataclass
class ClassifyConfig(FineTuneConfig):
    """A classification fine-tuning run; the defaults fine-tune ``npllm train``'s GPT on stdlib-topics."""

    data: str = "stdlib-topics"      # stdlib-topics, or a CSV / JSONL file of text and label
    text_field: str = "text"         # the fields of a user file
    label_field: str = "label"
    init: str = "pretrained"         # or random: the same shape, random weights (what pre-training buys)
    out_dir: str = "runs/classify"

    def checks(self):
        return [("init", self.init in INITS, f"one of {', '.join(INITS)}")]


CLASSIFY_FIXED_ON_RESUME = (*FIXED_ON_RESUME, "text_field", "label_field", "init")


@dataclass
class ClassifyRun(TrainingRun):
    """A fine-tuning run: the loop's objects, and what this recipe keeps to report and to resume."""

    config: ClassifyConfig = None
    data: LabelledText = None        # the texts and labels, both splits (the report's baselines need them)
    test_ids: list = None
    pad_id: int = 0                  # what pads a batch of texts
    base_sha256: str = ""

    def recipe_state(self) -> dict:
        return {"config": dataclasses.asdict(self.config), "labels": self.labels, "base_sha256": self.base_sha256}

    @property
    def labels(self) -> list[str]:
        return self.data.labels

    @property
    def test_labels(self) -> np.ndarray:
        return self.data.test_labels


def classify(config: ClassifyConfig, progress=True, log=print) -> ClassifyRun:
    """Fine-tune the GPT of ``config.checkpoint`` to label the texts of ``config.data``; report on the test split."""
    return _finish(start(config, _build, log, progress), log)


def resume(out_dir, changes=None, progress=True, log=print) -> ClassifyRun:
    """Continue the fine-tuning run saved in ``out_dir``, from the same base checkpoint, exactly where it stopped."""
    return _finish(resume_run(out_dir, changes, ClassifyConfig, CLASSIFY_FIXED_ON_RESUME, _build, log, progress), log)


def start(config: FineTuneConfig, build, log, progress) -> TrainingRun:
    """A new fine-tuning run in ``config.out_dir`` (refused if one is there), built by ``build`` and trained."""
    keep_freed_memory()
    out_dir = Path(config.out_dir)
    require_new_run_folder(out_dir)
    run = build(with_workers_fixed(config), log)
    loop.prepare_run_folder(out_dir)
    return loop.train(run, progress, log)


def resume_run(out_dir, changes, config_class, fixed_on_resume, build, log, progress, recipe=None) -> TrainingRun:
    """The run of ``out_dir`` rebuilt by ``build(config, log, checkpoint)`` from the same base, restored and trained.

    ``build`` receives the checkpoint (its optimizer groups, the recipe's state);
    a base whose weights are not the ones the run started from is refused, and
    so is a run whose state.json names another ``recipe`` than the one given.
    """
    keep_freed_memory()
    changes = changes or {}
    checkpoint = load_checkpoint(out_dir, require_config={k: v for k, v in changes.items() if k in fixed_on_resume})
    if checkpoint.fallback:
        log(checkpoint.fallback)
    loop.require_loop_state(checkpoint)
    try:
        if recipe is not None and checkpoint.train_state.get("recipe") != recipe:
            raise TypeError(f"its state.json names the recipe {checkpoint.train_state.get('recipe')!r}, not {recipe!r}")
        config = with_workers_fixed(config_class(**{**checkpoint.train_state["config"], **changes,
                                                     "out_dir": str(out_dir)}))
    except (KeyError, TypeError) as error:  # another recipe's run (a missing config, or settings this one lacks)
        raise CheckpointError(f"{checkpoint.folder}: a run of another kind ({error}); resume it with the command"
                              " that started it") from None
    run = build(config, log, checkpoint)
    if run.base_sha256 != checkpoint.train_state.get("base_sha256"):
        raise SettingError(f"`checkpoint` {config.checkpoint}: not the model this run was fine-tuned from"
                           " (its weights have changed since)")
    loop.restore(run, checkpoint)
    log(f"resumed {out_dir} at step {run.step}")
    return loop.train(run, progress, log)


def load_base(config: FineTuneConfig, log, encoders=False):
    """The base model, its tokenizer and its fingerprint; more ``last_blocks`` than it has refused before any data is read.

    A GPT (a run of ``npllm train`` or a Hugging Face GPT-2 folder); with
    ``encoders``, a BERT too (a run of ``npllm train --model bert`` or a
    Hugging Face BERT folder), given back as a ``BERT`` with its pooler (a
    masked-LM checkpoint has none: it starts fresh, as Hugging Face's does).
    """
    if encoders and model_kind(config.checkpoint) == "bert":
        base, tokenizer = load_encoder(config.checkpoint)  # (a BERT, or a BERTForMaskedLM)
        base = with_pooler(base.bert if isinstance(base, BERTForMaskedLM) else base, config.seed)
    else:
        base, tokenizer = load_model(config.checkpoint, log=log)
    if config.train == "last-blocks" and config.last_blocks > base.config.n_layer:
        raise SettingError(f"`last_blocks` {config.last_blocks}: the model has {base.config.n_layer} blocks")
    return base, tokenizer, weights_sha256(config.checkpoint)


def fine_tuning_fields(config: FineTuneConfig, model, checkpoint=None) -> dict:
    """The run's fields every fine-tuning recipe builds alike: AdamW (a resume: its saved groups), the schedule,
    the replicas, the loop's settings, the run folder."""
    groups = (param_groups_by_name(model, checkpoint.train_state["optimizer"]["param_groups"]) if checkpoint
              else configure_param_groups(model, config.weight_decay))
    return dict(
        optimizer=AdamW(groups, lr=config.lr, betas=(0.9, config.beta2)),
        schedule=warmup_cosine(config, config.decay_steps or config.max_steps),
        parallel=DataParallel(model, config.workers),
        settings=LoopSettings(max_steps=config.max_steps, grad_accum=config.grad_accum, grad_clip=config.grad_clip,
                              eval_interval=config.eval_interval),
        out_dir=Path(config.out_dir),
    )


def trained_count(model) -> int:
    """How many of ``model``'s parameters are trained (not frozen)."""
    return sum(p.size for p in model.parameters() if p.requires_grad)


def trained_parameters(model) -> str:
    """``1,234 of 56,789 parameters (2.2%)``: how many ``model`` trains."""
    total, count = model.num_parameters(), trained_count(model)
    return f"{count:,} of {total:,} parameters ({count / total:.1%})"


def _build(config: ClassifyConfig, log, checkpoint=None) -> ClassifyRun:
    base, tokenizer, base_sha256 = load_base(config, log, encoders=True)
    data = load_labelled(config.data, config.text_field, config.label_field, seed=config.seed)
    log(f"data: {data.description}\n{data.counts()}")
    encoder = isinstance(base, BERT)
    if config.init == "random":
        base = with_pooler(BERT(base.config, seed=config.seed, pooler=False), config.seed) if encoder \
            else GPT(base.config, seed=config.seed)
    model = (BERTSequenceClassifier if encoder else SequenceClassifier)(base, len(data.labels), seed=config.seed)
    trained = choose_trained(base, config)
    blocks = base.config.n_layer
    log(f"model: {config.init} {'BERT' if encoder else 'GPT'} of {blocks} block{'s' * (blocks != 1)} and a head of"
        f" {len(data.labels)} labels; training {trained} and the head: {trained_parameters(model)};"
        f" each batch shared by {ranks_and_threads(config.workers)}")
    pad_id = _pad_id(tokenizer, encoder)
    train_ids, test_ids = (classifier_input_ids(tokenizer, texts, base.config.context_length, encoder)
                           for texts in (data.train_texts, data.test_texts))
    return ClassifyRun(
        model=model, objective=Classification(),
        batches=RandomExamples(len(train_ids), config.batch_size, labelled_batch(train_ids, data.train_labels, pad_id),
                               seed=config.seed),
        evaluation_batches=lambda: in_order(len(test_ids), config.batch_size * 4,
                                            labelled_batch(test_ids, data.test_labels, pad_id)),
        **fine_tuning_fields(config, model, checkpoint),
        # (a checkpoint keeps a BPE tokenizer beside the weights; a WordPiece vocabulary stays in its base's folder)
        tokenizer=tokenizer if isinstance(tokenizer, BPETokenizer) else None, pad_id=pad_id,
        config=config, data=data, test_ids=test_ids, base_sha256=base_sha256,
    )


def with_pooler(encoder: BERT, seed: int) -> BERT:
    """``encoder`` with a pooler: itself if it has one, else a copy whose pooler is freshly drawn."""
    if encoder.pooler is not None:
        return encoder
    pooled = BERT(encoder.config, seed=seed)
    pooled.load_state_dict({**pooled.state_dict(), **encoder.state_dict()})
    return pooled.train()


def classifier_input_ids(tokenizer, texts: list[str], context_length: int, encoder: bool) -> list[list[int]]:
    """Each text's ids, cut to the context: a GPT's as they are, BERT's framed [CLS] ... [SEP] (kept when cut)."""
    if not encoder:
        pad_id = _pad_id(tokenizer, encoder)
        return [tokenizer.encode_ordinary(text)[:context_length] or [pad_id] for text in texts]
    framed = [bert_input_ids(tokenizer, text) for text in texts]
    return [ids if len(ids) <= context_length else ids[: context_length - 1] + ids[-1:] for ids in framed]


def _pad_id(tokenizer, encoder: bool) -> int:
    """What pads a batch: a GPT's end-of-text (after the last real token, never read); BERT's [PAD] (masked)."""
    if not encoder:
        return tokenizer.special_tokens[END_OF_TEXT]
    return tokenizer.pad_id if isinstance(tokenizer, WordPieceTokenizer) else tokenizer.special_tokens["[PAD]"]


def choose_trained(body, config: FineTuneConfig) -> str:
    """Freeze what ``config.train`` does not train in ``body`` (a GPT or a BERT); return a phrase saying what is trained.

    Anything outside ``body`` (a classifier's head) is left trainable.  A
    GPT's last blocks come with its final norm; a BERT's with its pooler.
    """
    if config.train == "all":
        return "everything"
    body.requires_grad_(False)
    encoder = isinstance(body, BERT)
    if config.train == "last-blocks":
        for block in list(body.encoder.layer if encoder else body.h)[-config.last_blocks:]:
            block.requires_grad_(True)
        (body.pooler if encoder else body.ln_f).requires_grad_(True)
        return (f"the last {config.last_blocks} block{'s' * (config.last_blocks > 1)} and the"
                f" {'pooler' if encoder else 'final norm'}")
    apply_lora(body, rank=config.lora_rank, alpha=config.lora_alpha, seed=config.seed,
               targets=BERT_TARGETS if encoder else DEFAULT_TARGETS)
    return f"LoRA adapters of rank {config.lora_rank}"


def predict(run: ClassifyRun) -> np.ndarray:
    """The predicted label of every test text."""
    run.model.eval()
    predictions = []
    with no_grad():
        for batch in in_order(len(run.test_ids), 64, labelled_batch(run.test_ids, run.test_labels, run.pad_id)):
            predictions.append(run.model(batch["input_ids"], batch["lengths"]).data.argmax(axis=1))
    run.model.train()
    return np.concatenate(predictions)


def _finish(run: ClassifyRun, log) -> ClassifyRun:
    """The report: the classifier beside the baselines, and its confusion matrix (also in report.json)."""
    data = run.data
    n, true, predicted = len(run.labels), run.test_labels, predict(run)
    rows = [evaluation.report("this classifier", predicted, true, n),
            evaluation.report("majority class", evaluation.majority_class(data.train_labels, len(true)), true, n),
            evaluation.report("bag-of-words logistic regression", evaluation.bag_of_words_predictions(
                data.train_texts, data.train_labels, data.test_texts, n), true, n)]
    for row in rows:
        log(f"{row['name']:<34} accuracy {row['accuracy']:.1%}   macro-F1 {row['macro_f1']:.3f}")
    matrix = evaluation.confusion_matrix(predicted, true, n)
    width = max(map(len, run.labels))
    log("confusion matrix (rows: true label, columns: predicted, in the same order)")
    for label, counts in zip(run.labels, matrix):
        log(f"  {label:>{width}} " + " ".join(f"{count:4d}" for count in counts))
    run.parallel.ranks.on_writer(lambda: _write_report(run, rows, matrix, log))
    return run


def _write_report(run: ClassifyRun, rows: list[dict], matrix: np.ndarray, log):
    """report.json: the results, the confusion matrix, and the training's cost (parameters, time per epoch)."""
    seconds, examples = loop.training_time(run.out_dir)
    epochs = examples / len(run.data.train_labels)
    per_epoch = seconds / epochs if epochs else None
    if per_epoch is not None:
        log(f"trained {epochs:.2f} epochs of {len(run.data.train_labels):,} texts in {seconds:.1f} s of steps:"
            f" {per_epoch:.1f} s an epoch (evaluation left out)")
    atomic_write_text(Path(run.out_dir) / REPORT_FILE, json.dumps(
        {"step": run.step, "labels": run.labels, "results": rows, "confusion_matrix": matrix.tolist(),
         "trained_parameters": trained_count(run.model), "parameters": run.model.num_parameters(), "epochs": epochs,
         "seconds_per_epoch": per_epoch}, indent=2))
