"""Instruction tuning: a pre-trained GPT learns to answer (``npllm finetune instruct``).

A GPT from ``npllm train`` continues text; to follow instructions it is
trained further on records of instruction, optional input and output
(``data.instructions``, which writes the prompt template and the embedded
``arithmetic`` and ``stdlib-functions`` sets), each example its prompt and
its response closed by end-of-text.  The objective is next-token prediction
(``NextToken``) on batches whose prompt targets are ``IGNORE_INDEX``: the
model is taught the response, not to write instructions.  With
``prompt_loss="included"`` the prompt's tokens are learned too (the book
measures both); either way the held-out figure is the loss on the
*responses* only, so the two compare.

What is trained is chosen as for classification (``finetune.choose_trained``):
everything, the last blocks, or LoRA adapters.  A LoRA run also writes its
adapters alone (``adapters.safetensors``: kilobytes, with the base's
fingerprint), which ``npllm chat --checkpoint BASE --adapters FILE`` puts
back onto the base it was trained on, and on no other.

Measured, into ``report.json``: exact match on the first
``exact_match_records`` held-out records of every data set (greedy
generation until end-of-text, compared with the output after stripping
spaces), before and after tuning, and the held-out response loss before and
after.  Arithmetic is where exact match means something: every answer is
exact, and the held-out problems were never trained on.

A run saves its starting point (the checkpoint's path and the SHA-256 of its
weights) and refuses to resume from another; its checkpoint is a GPT that
``npllm chat``, ``npllm generate`` and ``npllm export`` read (a LoRA run's
adapters are merged in when it is loaded: ``pretrain.load_model``).
"""

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from npllm.data.instructions import (InstructionData, format_prompt, instruction_batch, load_instructions,
                                     tokenize)
from npllm.data.labelled import RandomExamples, in_order
from npllm.generation.chat import decoded_pieces
from npllm.generation.decoding import greedy_batch
from npllm.io.atomic import atomic_write_text
from npllm.nn.lora import DEFAULT_TARGETS, save_adapters
from npllm.runtime.mpi import ranks_and_threads
from npllm.training import loop
from npllm.training.finetune import (FIXED_ON_RESUME, FineTuneConfig, choose_trained, fine_tuning_fields,
                                     load_base, resume_run, start, trained_parameters)
from npllm.training.loop import TrainingRun
from npllm.training.objectives import NextToken
from npllm.training.pretrain import END_OF_TEXT

PROMPT_LOSSES = ("masked", "included")
REPORT_FILE = "report.json"
ADAPTERS_FILE = "adapters.safetensors"


@dataclass
class InstructConfig(FineTuneConfig):
    """An instruction-tuning run; the defaults tune ``npllm train``'s GPT on decimal arithmetic."""

    data: str = "arithmetic"         # arithmetic, stdlib-functions, both joined by +, or a JSON / JSONL file
    prompt_loss: str = "masked"      # masked: learn the responses only; included: the prompts too
    exact_match_records: int = 200   # held-out records of each data set answered before and after tuning
    lr: float = 5e-4
    min_lr: float = 5e-5
    out_dir: str = "runs/instruct"

    def checks(self):
        return [("prompt_loss", self.prompt_loss in PROMPT_LOSSES, f"one of {', '.join(PROMPT_LOSSES)}"),
                ("exact_match_records", self.exact_match_records >= 0, "at least 0")]


INSTRUCT_FIXED_ON_RESUME = (*FIXED_ON_RESUME, "prompt_loss")


@dataclass
class InstructRun(TrainingRun):
    """An instruction-tuning run: the loop's objects and what the report and a resume need."""

    config: InstructConfig = None
    data: InstructionData = None
    base_sha256: str = ""
    before: dict = None              # the base model's figures, measured once before the first step

    def recipe_state(self) -> dict:
        lora = ({"lora": {"rank": self.config.lora_rank, "alpha": self.config.lora_alpha, "targets": DEFAULT_TARGETS}}
                if self.config.train == "lora" else {})
        return {"config": dataclasses.asdict(self.config), "model_config": dataclasses.asdict(self.model.config),
                "base_sha256": self.base_sha256, "before": self.before, **lora}


def instruct(config: InstructConfig, progress=True, log=print) -> InstructRun:
    """Tune the GPT of ``config.checkpoint`` on the records of ``config.data``; report before and after."""
    return _finish(start(config, _build, log, progress), log)


def resume(out_dir, changes=None, progress=True, log=print) -> InstructRun:
    """Continue the instruction-tuning run saved in ``out_dir``, from the same base, exactly where it stopped."""
    return _finish(resume_run(out_dir, changes, InstructConfig, INSTRUCT_FIXED_ON_RESUME, _build, log, progress), log)


def _build(config: InstructConfig, log, checkpoint=None) -> InstructRun:
    model, tokenizer, base_sha256 = load_base(config, log)
    data = load_instructions(config.data, seed=config.seed)
    log(f"data: {data.description}; {len(data.train):,} records to train on, {len(data.test):,} held out")
    end_of_text = tokenizer.special_tokens[END_OF_TEXT]
    context = model.config.context_length
    train_examples = tokenize(data.train, tokenizer, end_of_text, context)
    test_examples = tokenize(data.test, tokenizer, end_of_text, context)
    trained = choose_trained(model, config)  # (LoRA starts with B = 0: the model still computes the base's outputs)
    log(f"model: GPT of {model.config.n_layer} blocks; training {trained}: {trained_parameters(model)};"
        f" the loss on the {'responses only' if config.prompt_loss == 'masked' else 'prompts and responses'};"
        f" each batch shared by {ranks_and_threads(config.workers)}")
    run = InstructRun(
        model=model, objective=NextToken(), evaluation_objective=NextToken(),
        batches=RandomExamples(len(train_examples), config.batch_size,
                               instruction_batch(train_examples, end_of_text, config.prompt_loss == "masked"),
                               seed=config.seed),
        evaluation_batches=lambda: in_order(len(test_examples), config.batch_size * 4,
                                            instruction_batch(test_examples, end_of_text, mask_prompt=True)),
        **fine_tuning_fields(config, model, checkpoint),
        tokenizer=tokenizer, config=config, data=data, base_sha256=base_sha256,
    )
    run.before = checkpoint.train_state.get("before") if checkpoint else _measure(run, log, "before tuning")
    return run


def exact_match(run: InstructRun) -> dict[str, float]:
    """Per data set, the share of its first ``exact_match_records`` held-out records answered exactly (greedy).

    An answer is the text written after the prompt up to end-of-text,
    compared with the record's output, spaces stripped from both ends.
    """
    stop, tokenizer = run.tokenizer.special_tokens[END_OF_TEXT], run.tokenizer
    chosen = {}
    for record in run.data.test:
        if len(chosen.setdefault(record.dataset, [])) < run.config.exact_match_records:
            chosen[record.dataset].append(record)
    scores = {}
    for dataset, records in chosen.items():
        prompts = [tokenizer.encode_ordinary(format_prompt(r.instruction, r.input)) for r in records]
        budget = 2 * max(len(tokenizer.encode_ordinary(r.output)) for r in records) + 2  # room for longer spellings
        answers = ["".join(decoded_pieces(tokenizer, tokens, stop))
                   for tokens in greedy_batch(run.model, prompts, budget, stop,
                                              banned_tokens=tokenizer.unused_ids())]
        scores[dataset] = sum(a.strip() == r.output.strip() for a, r in zip(answers, records)) / len(records)
    return scores


def _measure(run: InstructRun, log, when: str) -> dict:
    figures = {"response_loss": loop.evaluate(run), "exact_match": exact_match(run)}
    scores = ", ".join(f"{dataset} {score:.1%}" for dataset, score in figures["exact_match"].items())
    log(f"{when}: held-out response loss {figures['response_loss']:.3f}; exact match {scores or '(none measured)'}")
    return figures


def _finish(run: InstructRun, log) -> InstructRun:
    """The report: exact match and response loss before and after (report.json); a LoRA run's adapters alone."""
    after = _measure(run, log, "after tuning")
    run.parallel.ranks.on_writer(lambda: atomic_write_text(Path(run.out_dir) / REPORT_FILE, json.dumps(
        {"step": run.step, "prompt_loss": run.config.prompt_loss, "train": run.config.train,
         "before": run.before, "after": after}, indent=2)))
    if run.config.train == "lora":
        path = Path(run.out_dir) / ADAPTERS_FILE
        run.parallel.ranks.on_writer(lambda: save_adapters(run.model, path))
        log(f"adapters: {path} ({path.stat().st_size / 1024:,.0f} KB; onto its base:"
            f" npllm chat --checkpoint {run.config.checkpoint} --adapters {path})")
    return run
