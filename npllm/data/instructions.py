"""Instruction data: Alpaca-format records, the prompt template, two embedded sets, and batches.

A record is what Stanford's Alpaca made the common format of instruction
tuning: an ``instruction``, an optional ``input`` it applies to, and the
``output`` the model should answer with.  **The template** that turns a
record into the text the model reads is written once, here
(``PROMPT_TEMPLATE`` and ``format_prompt``); fine-tuning, evaluation and
``npllm chat`` all call ``format_prompt``:

    Below is an instruction that describes a task. Write a response that appropriately completes the request.

    ### Instruction:
    {instruction}

    ### Input:                 (these two lines only when the record has an input)
    {input}

    ### Response:
    {output}<|endoftext|>

The end-of-text token closes each response, so a tuned model learns to stop
(``npllm chat`` stops there).

**Embedded sets**, generated offline and the same on every machine:

- ``arithmetic``: decimal arithmetic, exactly scored.  Add, subtract,
  multiply, compare (which is larger) and round, on numbers of one to three
  digits before the point and up to three after; every answer is computed by
  Python's ``decimal`` module (exact, never a binary float).  A problem's
  side is decided by a hash of its text, so a held-out problem can never be
  among the training ones, however many are drawn.
- ``stdlib-functions``: "what does this function do?" for the public
  top-level functions of the standard library (``json.dumps(obj, *,
  skipkeys=False, ...)``), answered by the first sentence of their docstring;
  split by source file as ``stdlib-topics`` is (``data.labelled``'s walk).

``arithmetic+stdlib-functions`` is both.  A user's file is JSON (a list of
records) or JSONL (one per line); a fifth of its records, drawn with the
seed, are held out.

**Batches** (``instruction_batch``): each example is its prompt's ids and
its response's ids (ending in end-of-text), the prompt cut from the left if
the two outgrow the context.  ``input_ids`` (B, T) and ``targets`` (B, T)
are the example shifted by one, padded on the right to the longest example
of the batch (with end-of-text, whose targets are ``IGNORE_INDEX``); with
the prompt masked, the targets of the prompt's positions are
``IGNORE_INDEX`` too, so only the response is learned.
"""

import ast
import hashlib
import json
import warnings
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import numpy as np

from npllm.data.corpus import stdlib_root
from npllm.data.masking import IGNORE_INDEX
from npllm.data.labelled import (documented_definitions, held_out_indices, json_lines, package_files, parsed_module,
                                 read_text_file, split_by_file)
from npllm.data.pairs import first_sentence
from npllm.data.sources import DataSourceError

PROMPT_TEMPLATE = ("Below is an instruction that describes a task. Write a response that appropriately completes"
                   " the request.\n\n### Instruction:\n{instruction}\n\n{input_section}### Response:\n")
INPUT_SECTION = "### Input:\n{input}\n\n"

EMBEDDED = ("arithmetic", "stdlib-functions")
ARITHMETIC_TRAIN, ARITHMETIC_TEST = 20_000, 500
ARITHMETIC_SEED = 2024  # the problems are the data set, not a run's choice: one fixed seed
MAX_ANSWER_CHARS = 200


@dataclass(frozen=True)
class Record:
    """One instruction-following example, from record ``number`` (from 1) of the set ``dataset``."""

    instruction: str
    input: str
    output: str
    dataset: str = ""
    number: int = 0

    @property
    def where(self) -> str:
        return f"{self.dataset}, record {self.number}"


def format_prompt(instruction: str, input: str = "") -> str:
    """The text the model reads before its response: the template, with the input section if there is one."""
    section = INPUT_SECTION.format(input=input) if input.strip() else ""
    return PROMPT_TEMPLATE.format(instruction=instruction, input_section=section)


@dataclass
class InstructionData:
    """Records to train on and held-out records, with a line that says where they came from."""

    train: list[Record]
    test: list[Record]
    description: str


def load_instructions(source: str, seed: int = 0) -> InstructionData:
    """``arithmetic``, ``stdlib-functions``, both joined by ``+``, or a JSON / JSONL file of records."""
    parts = source.split("+")
    if all(part in EMBEDDED for part in parts):
        sets = [arithmetic() if part == "arithmetic" else stdlib_functions() for part in parts]
        return InstructionData([r for s in sets for r in s.train], [r for s in sets for r in s.test],
                               " and ".join(s.description for s in sets))
    return read_instruction_file(Path(source), seed)


# --- a user's file ---------------------------------------------------------------------------
def read_instruction_file(path: Path, seed: int) -> InstructionData:
    records = [_record(path, number, row) for number, row in _raw_records(path)]
    if len(records) < 2:
        raise DataSourceError(f"{path}: {len(records)} record{'s' * (len(records) != 1)}; at least two are needed"
                              " (one to train on, one held out)")
    held_out = held_out_indices(len(records), seed)
    return InstructionData([r for i, r in enumerate(records) if i not in held_out],
                           [r for i, r in enumerate(records) if i in held_out], f"{path}: {len(records):,} records")


def _raw_records(path: Path) -> list[tuple[int, object]]:
    """(record number, value): the items of a JSON file's list, or the lines of a JSONL file."""
    text = read_text_file(path)
    if path.suffix.lower() != ".json":
        return json_lines(path, text)
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataSourceError(f"{path}, line {error.lineno}: not JSON ({error.msg})") from error
    if not isinstance(rows, list):
        raise DataSourceError(f"{path}: a JSON file of records must hold a list of objects")
    return list(enumerate(rows, start=1))


def _record(path: Path, number: int, row) -> Record:
    where = f"{path}, record {number}"
    if not isinstance(row, dict):
        raise DataSourceError(f"{where}: a record must be a JSON object with instruction, input and output")
    for field in ("instruction", "output"):
        if field not in row:
            raise DataSourceError(f"{where}: no {field!r} (it has {', '.join(map(repr, row)) or 'nothing'})")
    values = {field: row.get(field, "") for field in ("instruction", "input", "output")}
    for field, value in values.items():
        if not isinstance(value, str):
            raise DataSourceError(f"{where}: {field!r} must be a string, got {type(value).__name__}")
    if not values["instruction"].strip() or not values["output"].strip():
        raise DataSourceError(f"{where}: the {'instruction' if not values['instruction'].strip() else 'output'}"
                              " is empty")
    return Record(**values, dataset=str(path), number=number)


# --- arithmetic ------------------------------------------------------------------------------
def arithmetic(train_size=ARITHMETIC_TRAIN, test_size=ARITHMETIC_TEST) -> InstructionData:
    """Decimal problems and their exact answers; held out: the problems whose text hashes into the test fifth."""
    rng = np.random.default_rng(ARITHMETIC_SEED)
    sides = ({}, {})  # (train, test): (instruction, input) -> output, in the order drawn
    while len(sides[0]) < train_size or len(sides[1]) < test_size:
        instruction, given, output = _problem(rng)
        side = sides[_held_out(f"{instruction}\n{given}")]
        if len(side) < (test_size if side is sides[1] else train_size):
            side.setdefault((instruction, given), output)
    train, test = ([Record(instruction, given, output, "arithmetic", number)
                    for number, ((instruction, given), output) in enumerate(side.items(), start=1)] for side in sides)
    return InstructionData(train, test,
                           f"arithmetic: {train_size:,} decimal problems (add, subtract, multiply, compare, round),"
                           f" {test_size:,} others held out")


def _held_out(problem: str) -> bool:
    return int(hashlib.sha256(problem.encode()).hexdigest()[:8], 16) % 5 == 0  # a fifth of all problems


def _number(rng) -> Decimal:
    digits, places = int(rng.integers(1, 4)), int(rng.integers(0, 4))
    value = Decimal(int(rng.integers(0, 10 ** (digits + places)))).scaleb(-places)  # exact: 12345, 2 -> 123.45
    return value.quantize(Decimal(1).scaleb(-places))


def _text(value: Decimal) -> str:
    """A decimal as a person writes it: no exponent, no trailing zeros after the point, no "-0"."""
    return format(value.normalize() if value != 0 else Decimal(0), "f")


def _problem(rng) -> tuple[str, str, str]:
    """(instruction, input, output) of one random problem."""
    a, b = _number(rng), _number(rng)
    operation = ("add", "subtract", "multiply", "compare", "round")[int(rng.integers(0, 5))]
    if operation == "add":
        return "Add these two numbers.", f"{_text(a)} + {_text(b)}", _text(a + b)
    if operation == "subtract":
        return "Subtract the second number from the first.", f"{_text(a)} - {_text(b)}", _text(a - b)
    if operation == "multiply":
        return "Multiply these two numbers.", f"{_text(a)} × {_text(b)}", _text(a * b)
    if operation == "compare":
        if a == b:
            b += Decimal("0.1")
        return "Which of these two numbers is larger?", f"{_text(a)} or {_text(b)}", _text(max(a, b))
    places = int(rng.integers(0, 3))
    precise = a + Decimal(int(rng.integers(1, 1000))).scaleb(-places - 3)  # more places than are kept
    rounded = precise.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)  # halves away from zero
    unit = "a whole number" if places == 0 else f"{places} decimal place{'s' * (places > 1)}"
    return f"Round this number to {unit}.", _text(precise), format(rounded, "f")


# --- questions about the standard library's functions --------------------------------------
def stdlib_functions(root: Path | None = None) -> InstructionData:
    """'What does ``module.function(args)`` do?', answered by the first sentence of its docstring."""
    root = stdlib_root() if root is None else root
    per_file = [_function_questions(root, path) for path in package_files(root)]
    train, test = ([Record(*question, "stdlib-functions", number)
                    for number, question in enumerate((q for questions in files for q in questions), start=1)]
                   for files in split_by_file(per_file))
    if not train or not test:
        raise DataSourceError(f"stdlib-functions: {root} has too few documented public functions")
    return InstructionData(train, test, f"stdlib-functions: {len(train) + len(test):,} standard-library functions"
                                        " and the first sentence of their docstrings, split by source file")


def _function_questions(root: Path, path: Path) -> list[tuple[str, str, str]]:
    parts = path.relative_to(root).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    if any(part.startswith("_") for part in parts):
        return []
    module = ".".join(parts)
    parsed = parsed_module(path)
    if parsed is None:
        return []
    top_level = {node for node in parsed[1].body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    questions = []
    for node, docstring in documented_definitions(parsed[1]):
        answer = answer_sentence(docstring)
        if node in top_level and not node.name.startswith("_") and answer:
            signature = f"{module}.{node.name}({ast.unparse(node.args)})"
            questions.append(("Say in one sentence what this standard-library function does.", signature, answer))
    return questions


def answer_sentence(docstring: str) -> str:
    """The docstring's first sentence as an answer: '' unless it ends a sentence and is 10 to 200 characters long."""
    sentence = first_sentence(docstring)
    return sentence if sentence[-1:] in ".!?" and 10 <= len(sentence) <= MAX_ANSWER_CHARS else ""


# --- token ids and batches -------------------------------------------------------------------
@dataclass
class Example:
    """A record as token ids: the prompt's and the response's (which ends in end-of-text)."""

    prompt: list[int]
    response: list[int]


def tokenize(records: list[Record], tokenizer, end_of_text: int, context_length: int) -> list[Example]:
    """Each record's prompt and response as ids; a prompt that does not fit beside its response is cut from the left.

    The model reads at most ``context_length`` tokens, and an example of n
    tokens is read as its first n - 1, so prompt + response may hold
    ``context_length + 1``.  A response that leaves no room for a token of
    its prompt is refused (naming the record); the prompts cut short are
    told in one warning.
    """
    examples, cut = [], []
    for record in records:
        prompt = tokenizer.encode_ordinary(format_prompt(record.instruction, record.input))
        response = tokenizer.encode_ordinary(record.output) + [end_of_text]
        room = context_length + 1 - len(response)
        if room < 1:
            raise DataSourceError(f"{record.where}: the output is {len(response)} tokens with end-of-text, more than"
                                  f" the model's context of {context_length} leaves beside a prompt")
        if len(prompt) > room:
            cut.append(record.where)
            prompt = prompt[-room:]
        examples.append(Example(prompt, response))
    if cut:
        warnings.warn(f"{len(cut):,} of {len(records):,} prompts are longer than the context of {context_length}"
                      f" tokens leaves beside their response, and were cut from the left (the first: {cut[0]})",
                      stacklevel=2)
    return examples


def instruction_batch(examples: list[Example], pad_id: int, mask_prompt: bool):
    """``make_batch`` (``data.labelled.RandomExamples``, ``in_order``): the chosen examples as inputs and targets.

    For the example p_1 .. p_m r_1 .. r_n (r_n = end-of-text) the model reads
    every token but the last and predicts the next: inputs p_1 .. r_{n-1},
    targets p_2 .. r_n.  The first target of the response sits at position
    m - 1 (0-based); with ``mask_prompt`` every target before it is
    ``IGNORE_INDEX``.  Shorter examples are padded with ``pad_id`` to the
    longest, their padding's targets ignored.
    """
    def make_batch(chosen) -> dict:
        rows = [examples[i] for i in chosen]
        T = max(len(e.prompt) + len(e.response) for e in rows) - 1
        input_ids = np.full((len(rows), T), pad_id, dtype=np.int64)
        targets = np.full((len(rows), T), IGNORE_INDEX, dtype=np.int64)
        for b, example in enumerate(rows):
            tokens = example.prompt + example.response
            input_ids[b, : len(tokens) - 1] = tokens[:-1]
            targets[b, : len(tokens) - 1] = tokens[1:]
            if mask_prompt:
                targets[b, : len(example.prompt) - 1] = IGNORE_INDEX
        return {"input_ids": input_ids, "targets": targets}  # (B, T) each
    return make_batch
