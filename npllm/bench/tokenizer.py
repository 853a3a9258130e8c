"""How fast is the tokenizer? Training time and encoding speed, beside Rust tokenizers in the same run.

The text is the first few megabytes of the default corpus (the Python standard library's
own source, see ``npllm.data``), so every machine can run this without a download.
Measured, in one process:

* ours: training a vocabulary of 4096 ids, then encoding the same text with a fresh
  tokenizer (its chunk cache starts empty, as it would in a new process);
* Hugging Face ``tokenizers`` (Rust), if installed: a byte-level BPE of the same size trained
  on the same text, then encoding it;
* tiktoken (Rust), if installed: an ``Encoding`` built from our ranks and pattern, encoding
  the same text, which must give exactly our ids.

Wall-clock timings on a shared machine wobble, so each encoder runs ``--repeats`` times
(ours with a fresh, empty cache every time) and the fastest run counts; training runs
once. What this script offers is a like-for-like comparison in one process, not a precise
number. Speed is never asserted in tests.

Run as ``python -m npllm.bench.tokenizer`` or ``npllm bench tokenizer``; ``--json`` makes the
last line one JSON object with every figure.
"""

import argparse
import json

from npllm.bench import at_least_one, description
from npllm.bench.timing import timed
from npllm.data import stdlib_text
from npllm.tokenizer.tokenizer import BPETokenizer

MEGABYTE = 1_000_000


def fastest(repeats: int, make_encoder, text: str):
    """(ids, seconds) of the fastest of ``repeats`` runs, each with a freshly made encoder."""
    runs = [timed(make_encoder(), text) for _ in range(repeats)]
    return runs[0][0], min(seconds for _, seconds in runs)


def bench_ours(text: str, vocab_size: int, pattern: str, repeats: int) -> tuple[dict, BPETokenizer, list[int]]:
    tokenizer, train_seconds = timed(BPETokenizer.train, text, vocab_size, pattern)
    ranks = tokenizer.mergeable_ranks
    ids, encode_seconds = fastest(repeats, lambda: BPETokenizer(ranks, tokenizer.pattern).encode_ordinary, text)
    if tokenizer.decode(ids) != text:
        raise AssertionError("decode(encode(text)) != text on the benchmark text")
    return {"train_seconds": train_seconds, "encode_seconds": encode_seconds, "tokens": len(ids)}, tokenizer, ids


def bench_huggingface(text: str, vocab_size: int, repeats: int) -> dict | None:
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError:
        return None
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    _, train_seconds = timed(tokenizer.train_from_iterator, [text], trainer)
    encoding, encode_seconds = fastest(repeats, lambda: tokenizer.encode, text)
    return {"train_seconds": train_seconds, "encode_seconds": encode_seconds, "tokens": len(encoding.ids)}


def bench_tiktoken(text: str, tokenizer: BPETokenizer, our_ids: list[int], repeats: int) -> dict | None:
    try:
        import tiktoken
    except ImportError:
        return None
    encoding = tiktoken.Encoding(name="npllm-bench", pat_str=tokenizer.pattern, mergeable_ranks=tokenizer.mergeable_ranks, special_tokens={})
    ids, encode_seconds = fastest(repeats, lambda: encoding.encode_ordinary, text)
    return {"encode_seconds": encode_seconds, "tokens": len(ids), "same_ids_as_ours": ids == our_ids}


def report(results: dict, megabytes: float) -> list[str]:
    """Human-readable lines: times, MB/s, and how ours compares."""
    ours = results["ours"]
    lines = [f"text: {megabytes:.2f} MB of the standard library's source, vocab {results['vocab_size']}, pattern {results['pattern']}"]
    lines.append(f"ours        train {ours['train_seconds']:6.2f} s   encode {megabytes / ours['encode_seconds']:6.2f} MB/s (cold cache, one thread)")
    for name in ("huggingface", "tiktoken"):
        other = results[name]
        if other is None:
            lines.append(f"{name:<11} not installed")
            continue
        train = f"train {other['train_seconds']:6.2f} s" if "train_seconds" in other else " " * 14
        lines.append(f"{name:<11} {train}   encode {megabytes / other['encode_seconds']:6.2f} MB/s")
    for name, ratio in results["ratios"].items():
        lines.append(f"{name}: {ratio:.2f}")
    if results["tiktoken"] is not None:
        lines.append(f"tiktoken ids identical to ours: {results['tiktoken']['same_ids_as_ours']}")
    return lines


def ratios(results: dict) -> dict:
    """Ours against the others: training time as a multiple of HF's, encoding speed as a fraction."""
    ours, hf, tk = results["ours"], results["huggingface"], results["tiktoken"]
    found = {}
    if hf is not None:
        found["train time, ours / huggingface"] = ours["train_seconds"] / hf["train_seconds"]
        found["encode speed, ours / huggingface"] = hf["encode_seconds"] / ours["encode_seconds"]
    if tk is not None:
        found["encode speed, ours / tiktoken"] = tk["encode_seconds"] / ours["encode_seconds"]
    return found


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="npllm bench tokenizer", description=description(__doc__))
    parser.add_argument("--megabytes", type=float, default=5.0, help="how much of the corpus to use (default 5)")
    parser.add_argument("--vocab-size", type=int, default=4096, help="vocabulary size to train (default 4096)")
    parser.add_argument("--pattern", default="gpt4", help="split pattern: gpt2, gpt4 or a regex (default gpt4)")
    parser.add_argument("--repeats", type=at_least_one, default=3, help="encoding runs per encoder; the fastest counts (default 3)")
    parser.add_argument("--json", action="store_true", help="print every figure as one JSON object on the last line")
    args = parser.parse_args(argv)
    if not args.megabytes > 0:
        parser.error(f"--megabytes must be positive, got {args.megabytes}")
    text = stdlib_text(max_bytes=int(args.megabytes * MEGABYTE))
    megabytes = len(text.encode("utf-8")) / MEGABYTE
    ours, tokenizer, our_ids = bench_ours(text, args.vocab_size, args.pattern, args.repeats)
    results = {"megabytes": megabytes, "vocab_size": args.vocab_size, "pattern": args.pattern, "ours": ours}
    results["huggingface"] = bench_huggingface(text, args.vocab_size, args.repeats)
    results["tiktoken"] = bench_tiktoken(text, tokenizer, our_ids, args.repeats)
    results["ratios"] = ratios(results)
    print("\n".join(report(results, megabytes)))
    if args.json:
        print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
