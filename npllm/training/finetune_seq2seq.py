"""Sequence-to-sequence fine-tuning: an encoder–decoder learns a task of pairs (``npllm finetune seq2seq``).

After denoising pre-training (``pretrain_seq2seq.py``) the model can read a
damaged text and write it back; fine-tuning teaches it to write something
else from what it reads: here, from a function's source, the first sentence
of its docstring (``data.pairs``: ``stdlib-docstrings``, or the user's JSONL
of ``source`` and ``target``).  The recipe trains every weight through the
shared loop on batches of pairs bucketed by length (``BucketedPairs``), with
the same ``Seq2SeqLM`` loss (the target's tokens, teacher forced); the
held-out pairs' loss is the loop's validation loss (the first ``eval_pairs``
of them: evaluating is a forward pass per pair).

At the end the recipe writes the held-out sources' predictions (greedy, or
beam search with ``beams``) and reports ROUGE-L and exact match
(``training.evaluation``) beside the **name baseline** (the function's name
split into words) on the same pairs, with a few examples, into
``report.json``.  ``init="random"`` trains the same shape from random
weights: what denoising pre-training buys is the difference.  The run
records the checkpoint it started from (folder and the SHA-256 of its
weights) and refuses to resume from another; the run folder loads back with
``pretrain_seq2seq.load_model`` (``npllm generate --checkpoint RUN --input``).

Sources and targets longer than the model's positions are cut, with one
warning saying how many and how long.  Left out: freezing parts of the
model, LoRA (the classification recipe has them), label smoothing.
"""

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from npllm.data.pairs import BucketedPairs, Pairs, encode_pairs, load_pairs, pair_batches
from npllm.generation.seq2seq import generate, pad_sources
from npllm.io.atomic import atomic_write_text
from npllm.models import BARTForConditionalGeneration
from npllm.training import evaluation
from npllm.training.finetune import fine_tuning_fields, resume_run, start
from npllm.training.loop import TrainingRun
from npllm.training.objectives import Seq2SeqLM
from npllm.training.pretrain import check_settings, optimisation_checks, weights_sha256
from npllm.training.pretrain_seq2seq import framing_of, load_model

INITS = ("pretrained", "random")
REPORT_FILE = "report.json"
RECIPE = "seq2seq-finetune"
EXAMPLES = 8  # held-out pairs shown in the report with their predictions


@dataclass
class Seq2SeqFinetuneConfig:
    """A fine-tuning run of an encoder–decoder on pairs; the defaults fit ``npllm train --model seq2seq``'s model."""

    checkpoint: str = "runs/seq2seq"     # a run of npllm train --model seq2seq, or a Hugging Face BART folder
    data: str = "stdlib-docstrings"      # stdlib-docstrings, or a JSONL file of source and target
    init: str = "pretrained"             # or random: the same shape, random weights (what pre-training buys)
    dropout: float = 0.1                 # fine-tuning sees each pair many times: regularise
    batch_size: int = 16
    grad_accum: int = 1
    workers: int | None = None
    max_steps: int = 1000
    lr: float = 5e-4
    min_lr: float = 5e-5
    warmup_steps: int = 50
    decay_steps: int | None = None
    weight_decay: float = 0.01
    beta2: float = 0.999
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_pairs: int = 300                # held-out pairs measured: the loss, and the report's ROUGE-L (0: all)
    beams: int = 1                       # the report's decoding: 1 greedy, more for beam search
    max_new_tokens: int = 48             # the longest prediction, in tokens
    seed: int = 1337
    out_dir: str = "runs/seq2seq-docstrings"

    def __post_init__(self):
        check_settings(self, ("batch_size", "grad_accum", "eval_interval", "max_steps", "workers", "decay_steps",
                              "beams", "max_new_tokens"), [
            ("init", self.init in INITS, f"one of {', '.join(INITS)}"),
            ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
            ("eval_pairs", self.eval_pairs >= 0, "at least 0 (0: every held-out pair)"),
            *optimisation_checks(self),
        ])


FIXED_ON_RESUME = ("checkpoint", "data", "init", "dropout", "batch_size", "grad_accum", "weight_decay", "beta2", "seed")


@dataclass
class Seq2SeqFinetuneRun(TrainingRun):
    """A fine-tuning run: the loop's objects, and what this recipe keeps to report and to resume."""

    config: Seq2SeqFinetuneConfig = None
    data: Pairs = None
    test_ids: list = None
    base_sha256: str = ""

    def recipe_state(self) -> dict:
        return {"config": dataclasses.asdict(self.config), "model_config": dataclasses.asdict(self.model.config),
                "base_sha256": self.base_sha256, "recipe": RECIPE}


def finetune(config: Seq2SeqFinetuneConfig, progress=True, log=print) -> Seq2SeqFinetuneRun:
    """Fine-tune the encoder–decoder of ``config.checkpoint`` on ``config.data``; report on the held-out pairs."""
    return _finish(start(config, _build, log, progress), log)


def resume(out_dir, changes=None, progress=True, log=print) -> Seq2SeqFinetuneRun:
    """Continue the fine-tuning run saved in ``out_dir``, from the same base checkpoint, exactly where it stopped."""
    return _finish(resume_run(out_dir, changes, Seq2SeqFinetuneConfig, FIXED_ON_RESUME, _build, log, progress,
                              recipe=RECIPE), log)


def _build(config: Seq2SeqFinetuneConfig, log, checkpoint=None) -> Seq2SeqFinetuneRun:
    base, tokenizer = load_model(config.checkpoint, log=log)  # refuses a GPT or BERT, in one line
    base_sha256 = weights_sha256(config.checkpoint)
    data = load_pairs(config.data, seed=config.seed)
    log(f"data: {data.description}; {data.counts()}")
    d = config.dropout
    model = BARTForConditionalGeneration(dataclasses.replace(base.config, dropout=d, attention_dropout=d,
                                                             activation_dropout=d), seed=config.seed)
    if config.init == "pretrained":
        model.load_state_dict(base.state_dict())
    positions = model.config.max_position_embeddings
    train_ids = encode_pairs(data.train, tokenizer, positions - 2, positions - 1, "training pairs")
    test_ids = encode_pairs(data.test, tokenizer, positions - 2, positions - 1, "held-out pairs")
    framing = framing_of(model.config)
    batches = BucketedPairs(train_ids, config.batch_size, framing, seed=config.seed)
    source_padding, target_padding = batches.padding_fraction()
    log(f"model: {config.init} {model.config.encoder_layers}+{model.config.decoder_layers}-block encoder–decoder,"
        f" {model.num_parameters():,} parameters; batches bucketed by length: {source_padding:.1%} of the source"
        f" and {target_padding:.1%} of the target positions are padding")
    return Seq2SeqFinetuneRun(
        model=model, objective=Seq2SeqLM(), batches=batches,
        evaluation_batches=lambda: pair_batches(test_ids[:evaluated_pairs(config, test_ids)], config.batch_size * 4,
                                                framing),
        **fine_tuning_fields(config, model, checkpoint),
        tokenizer=tokenizer, config=config, data=data, test_ids=test_ids, base_sha256=base_sha256,
    )


def evaluated_pairs(config: Seq2SeqFinetuneConfig, test_ids: list) -> int:
    """How many held-out pairs are measured and decoded: the first ``eval_pairs`` of them (0: all)."""
    return len(test_ids) if config.eval_pairs == 0 else min(len(test_ids), config.eval_pairs)


def predict(model, tokenizer, source_ids: list[list[int]], max_new_tokens: int, beams: int = 1,
            batch_size: int = 32) -> list[str]:
    """The text the model writes for each source (ids without framing): greedy, or beam search with ``beams`` > 1.

    Sources are framed ``<s> source </s>`` as in training and decoded in
    batches of similar lengths (``generation.seq2seq.generate``); the closing
    </s> is not part of the text.
    """
    framing = framing_of(model.config)
    order = sorted(range(len(source_ids)), key=lambda i: len(source_ids[i]))
    texts = [""] * len(source_ids)
    for first in range(0, len(order), batch_size):
        chosen = order[first: first + batch_size]
        ids, mask = pad_sources([[framing.bos_id, *source_ids[i], framing.eos_id] for i in chosen], framing.pad_id)
        for i, output in zip(chosen, generate(model, ids, mask, max_new_tokens=max_new_tokens, num_beams=beams)):
            texts[i] = tokenizer.decode([token for token in output if token != framing.eos_id]).strip()
    return texts


def _finish(run: Seq2SeqFinetuneRun, log) -> Seq2SeqFinetuneRun:
    """The report: the model's predictions beside the name baseline on the held-out pairs (also in report.json)."""
    n = evaluated_pairs(run.config, run.test_ids)
    sources = [source for source, _ in run.data.test[:n]]
    references = [target for _, target in run.data.test[:n]]
    predictions = predict(run.model, run.tokenizer, [ids for ids, _ in run.test_ids[:n]], run.config.max_new_tokens,
                          run.config.beams)
    decoding = "greedy" if run.config.beams == 1 else f"beam search, {run.config.beams} beams"
    rows = [evaluation.text_report(f"this model ({decoding})", predictions, references),
            evaluation.text_report("name baseline", [evaluation.name_baseline(s) for s in sources], references)]
    log(f"held-out pairs: {n:,} of {len(run.data.test):,} decoded")
    for row in rows:
        log(f"{row['name']:<36} ROUGE-L {row['rouge_l']:.3f}   exact match {row['exact_match']:.1%}")
    names = run.data.test_names or [f"pair {i + 1}" for i in range(n)]
    examples = [{"name": names[i], "source": sources[i], "target": references[i], "prediction": predictions[i]}
                for i in range(min(EXAMPLES, n))]
    for example in examples[:3]:
        log(f"  {example['name']}\n    true:      {example['target']}\n    predicted: {example['prediction']}")
    run.parallel.ranks.on_writer(lambda: atomic_write_text(Path(run.out_dir) / REPORT_FILE, json.dumps(
        {"step": run.step, "decoded_pairs": n, "results": rows, "examples": examples}, indent=2)))
    return run


