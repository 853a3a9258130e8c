"""How fast, and in how much memory, does a large corpus become token shards? ``npllm bench tokenize``.

The corpus is written by the benchmark, so nothing is downloaded: JSONL files of
documents cut from the text every Python carries (the standard library's source
and the pydoc topics), their lengths drawn from a log-normal distribution
(median about 2,000 characters, a long tail, as an encyclopedia's articles),
one file per ``--megabytes`` size.  Measured:

* ``npllm.data.shards.tokenize_to_shards`` on every core, for each size, each run
  in a fresh process: MB/s of UTF-8 text, and the peak resident memory of the
  process that reads and writes, and of the largest encoding process.  Memory
  should be flat as the corpus grows: the stream holds a few batches in flight,
  shards go straight to disk;
* the same on one core (one process, no pool), on the smallest size;
* Hugging Face ``tokenizers`` (Rust, every core) ``encode_batch`` over the same
  documents, with the very same vocabulary and split pattern (written as a
  ``tokenizer.json``), if it is installed: the yardstick, imported only here;
* the projection: hours for English Wikipedia's ~20 GB of article text at the
  all-core rate of the largest size.

The text repeats (13 MB of source cut into hundreds of megabytes), so our
chunk cache hits more often than on real prose: the figures flatter the
encoder on a corpus this repetitive.  Both encoders read the same text, so
their ratio is fair.  The tokenizer (``--vocab-size``) is trained first, on a
seeded sample of the smallest corpus, and not timed.
"""

import argparse
import json
import multiprocessing
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np

from npllm.bench import at_least_one, description
from npllm.bench.timing import timed
from npllm.data.corpus import docs_text, stdlib_text
from npllm.data.shards import in_validation, open_shards, tokenize_to_shards
from npllm.data.streams import DocumentSource, sample_documents
from npllm.tokenizer import BPETokenizer
from npllm.tokenizer.huggingface import write_tokenizer_json

MEGABYTE = 1_000_000
WIKIPEDIA_BYTES = 20e9  # English Wikipedia's articles as plain text, about
END_OF_TEXT = "<|endoftext|>"


def write_corpus(path: Path, megabytes: float, text: str, seed: int) -> int:
    """A JSONL file of documents cut from ``text`` at random places, about ``megabytes`` of UTF-8 text; its bytes."""
    rng = np.random.default_rng(seed)
    target, written = int(megabytes * MEGABYTE), 0
    with open(path, "w", encoding="utf-8") as file:
        while written < target:
            lengths = np.minimum(rng.lognormal(mean=7.6, sigma=1.0, size=1000).astype(int) + 50, len(text) // 2)
            starts = rng.integers(0, len(text) - lengths)
            for start, length in zip(starts, lengths):
                document = text[start:start + length]
                file.write(json.dumps({"text": document}) + "\n")
                written += len(document.encode("utf-8"))
                if written >= target:
                    break
    return written


def high_water_megabytes(pid="self") -> float:
    """A process's peak resident memory in MB, from Linux's ``VmHWM`` (0 when it cannot be read).

    Not ``getrusage``'s ``ru_maxrss``: Linux carries that across ``exec``, so a
    spawned process would report at least what its parent held when it forked.
    """
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / MEGABYTE
    except OSError:
        pass
    return 0.0


class WorkerPeaks(threading.Thread):
    """Watches this process's children (the encoding processes) and keeps the largest peak memory seen."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.done = 0.0, threading.Event()

    def run(self):
        while not self.done.wait(0.2):
            for child in multiprocessing.active_children():
                self.peak = max(self.peak, high_water_megabytes(child.pid))


def measure_in_this_process(results, corpus: str, tokenizer_path: str, out: str, workers: int, shard_tokens: int):
    """One tokenization, timed, with this process's peak memory and its largest child's, put on ``results``."""
    tokenizer = BPETokenizer.load(tokenizer_path)
    watcher = WorkerPeaks()
    watcher.start()
    folder, seconds = timed(tokenize_to_shards, DocumentSource(corpus), tokenizer, out, shard_tokens, 0.05, workers,
                            log=lambda line: None)
    watcher.done.set()
    shards = open_shards(folder)
    results.put({"seconds": seconds, "tokens": len(shards.train) + len(shards.validation),
                 "shards": len(shards.index["shards"]), "peak_main_mb": high_water_megabytes(),
                 "peak_worker_mb": watcher.peak})


def measure(corpus: Path, tokenizer_path: Path, out: Path, workers: int, shard_tokens: int) -> dict:
    """``measure_in_this_process`` in a fresh process, so each run's peak memory is its own."""
    shutil.rmtree(out, ignore_errors=True)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=measure_in_this_process,
                              args=(results, str(corpus), str(tokenizer_path), str(out), workers, shard_tokens))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise RuntimeError(f"the measuring process failed (exit status {process.exitcode})")
    return results.get()


def bench_huggingface(corpus: Path, tokenizer: BPETokenizer, folder: Path, our_ids: np.ndarray | None) -> dict | str:
    """Hugging Face ``tokenizers``' encode_batch over the same documents, with our vocabulary; or why not."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return "not installed (pip install tokenizers to compare)"
    path = folder / "tokenizer.json"
    write_tokenizer_json(path, tokenizer.pattern, tokenizer.mergeable_ranks, tokenizer.special_tokens)
    hf = Tokenizer.from_file(str(path))
    documents = [piece.text for piece in DocumentSource(corpus).pieces()]

    def encode_all():
        return [encoding.ids for first in range(0, len(documents), 1000)
                for encoding in hf.encode_batch(documents[first:first + 1000], add_special_tokens=False)]

    ids, seconds = timed(encode_all)
    result = {"seconds": seconds, "tokens": sum(map(len, ids)) + len(ids)}
    if our_ids is not None:
        eot = tokenizer.special_tokens[END_OF_TEXT]
        result["same_ids_as_ours"] = bool(np.array_equal(np.concatenate([np.append(i, eot) for i in ids]), our_ids))
    return result


def ids_in_stream_order(shard_folder: Path) -> np.ndarray:
    """Every id of a shard folder in the source's document order (the splits interleaved back)."""
    shards = open_shards(shard_folder)
    eot = shards.end_of_text
    documents = {}
    for split in ("train", "validation"):
        ids = np.concatenate(getattr(shards, split).arrays or [np.zeros(0, dtype=np.int64)])
        documents[split] = np.split(ids, np.flatnonzero(ids == eot) + 1)[:-1]  # (the piece after the last is empty)
    fraction, taken = shards.index["validation_fraction"], {"train": 0, "validation": 0}
    ordered = []
    for number in range(len(documents["train"]) + len(documents["validation"])):
        split = "validation" if in_validation(number, fraction) else "train"
        ordered.append(documents[split][taken[split]])
        taken[split] += 1
    return np.concatenate(ordered)


def report(results: dict) -> list[str]:
    cores = results["workers"]
    lines = [f"corpus: generated JSONL of documents cut from the embedded text, vocab {results['vocab_size']},"
             f" shards of {results['shard_tokens']:,} ids, {cores} cores"]
    for run in results["runs"]:
        rate = run["megabytes"] / run["seconds"]
        lines.append(f"ours {run['workers']} core{'s' * (run['workers'] > 1)} {run['megabytes']:7.1f} MB"
                     f"  {run['seconds']:7.1f} s  {rate:6.2f} MB/s  {run['tokens']:>12,} tokens, {run['shards']:3} shards"
                     f"  peak memory {run['peak_main_mb']:6.1f} MB (main), {run['peak_worker_mb']:6.1f} MB"
                     " (largest worker)")
    for name, value in results["figures"].items():
        lines.append(f"{name}: {value}")
    return lines


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="npllm bench tokenize", description=description(__doc__))
    parser.add_argument("--megabytes", type=float, nargs="+", default=[50.0, 500.0],
                        help="corpus sizes to generate and tokenize (default 50 500)")
    parser.add_argument("--vocab-size", type=at_least_one, default=4096, help="the BPE's vocabulary (default 4096)")
    parser.add_argument("--tokenizer-chars", type=at_least_one, default=2_000_000,
                        help="characters of the sample the tokenizer learns from (default 2,000,000)")
    parser.add_argument("--shard-tokens", type=at_least_one, default=100_000_000, help="ids per shard, about")
    parser.add_argument("--workers", type=at_least_one, default=None, help="processes (default: one per core)")
    parser.add_argument("--folder", default=None, help="where to write the corpora and shards (default: a temporary"
                        " folder, removed afterwards)")
    parser.add_argument("--json", action="store_true", help="print every figure as one JSON object on the last line")
    args = parser.parse_args(argv)
    if not all(size > 0 for size in args.megabytes):
        parser.error(f"--megabytes must be positive, got {args.megabytes}")
    workers = args.workers or multiprocessing.cpu_count()
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(args.folder or temporary)
        folder.mkdir(parents=True, exist_ok=True)
        return run_benchmark(args, sorted(args.megabytes), workers, folder)


def run_benchmark(args, sizes: list[float], workers: int, folder: Path) -> dict:
    text = stdlib_text() + "\n\n" + docs_text()
    corpora = {size: folder / f"corpus-{size:g}MB.jsonl" for size in sizes}
    written = {size: write_corpus(path, size, text, seed=int(size * 1000)) / MEGABYTE for size, path in corpora.items()}
    del text
    smallest = sizes[0]
    tokenizer = BPETokenizer.train(sample_documents(DocumentSource(corpora[smallest]), args.tokenizer_chars, 0),
                                   args.vocab_size, special_tokens={END_OF_TEXT: args.vocab_size - 1})
    tokenizer_path = folder / "tokenizer.txt"
    tokenizer.save(tokenizer_path)
    runs = []
    plan = [(smallest, 1)] * (workers > 1) + [(size, workers) for size in sizes]
    for size, count in plan:
        run = measure(corpora[size], tokenizer_path, folder / f"shards-{size:g}MB-{count}", count, args.shard_tokens)
        runs.append({"megabytes": written[size], "workers": count, **run})
        print("\n".join(report({"workers": workers, "vocab_size": args.vocab_size, "shard_tokens": args.shard_tokens,
                                "runs": runs[-1:], "figures": {}})[1:]), flush=True)
    our_ids = ids_in_stream_order(folder / f"shards-{smallest:g}MB-{workers}")
    huggingface = bench_huggingface(corpora[smallest], tokenizer, folder, our_ids)
    results = {"workers": workers, "vocab_size": args.vocab_size, "shard_tokens": args.shard_tokens, "runs": runs,
               "huggingface": huggingface, "figures": figures(runs, huggingface, written[smallest], workers)}
    print("\n".join(report(results)))
    if args.json:
        print(json.dumps(results))
    return results


def figures(runs: list[dict], huggingface, smallest_megabytes: float, workers: int) -> dict:
    """The comparisons: cores against one, memory of the largest corpus against the smallest, the projection."""
    rate = {(run["megabytes"], run["workers"]): run["megabytes"] / run["seconds"] for run in runs}
    every = [run for run in runs if run["workers"] == workers]
    largest, small = every[-1], every[0]
    found = {}
    if (smallest_megabytes, 1) in rate and workers > 1:
        found[f"speed-up, {workers} cores / 1"] = f"{rate[smallest_megabytes, workers] / rate[smallest_megabytes, 1]:.2f}"
    if len(every) > 1:
        workers_ratio = (f", {largest['peak_worker_mb'] / small['peak_worker_mb']:.2f} (largest worker)"
                         if small["peak_worker_mb"] > 0 else "")  # (a corpus of one batch starts no process)
        found[f"peak memory, {largest['megabytes']:.0f} MB / {small['megabytes']:.0f} MB corpus"] = (
            f"{largest['peak_main_mb'] / small['peak_main_mb']:.2f} (main){workers_ratio}")
    hours = WIKIPEDIA_BYTES / MEGABYTE / rate[largest["megabytes"], workers] / 3600
    found["projected time for English Wikipedia (~20 GB of text)"] = f"{hours:.1f} h on {workers} cores"
    if isinstance(huggingface, dict):
        hf_rate = smallest_megabytes / huggingface["seconds"]
        found["huggingface tokenizers encode_batch (every core)"] = (
            f"{hf_rate:.2f} MB/s on the {smallest_megabytes:.0f} MB corpus; ours / theirs"
            f" {rate[smallest_megabytes, workers] / hf_rate:.3f}; same ids: {huggingface.get('same_ids_as_ours')}")
    else:
        found["huggingface tokenizers"] = huggingface
    return found


if __name__ == "__main__":
    main()
