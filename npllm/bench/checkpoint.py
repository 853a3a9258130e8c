"""What trusting a checkpoint costs: writing, hashing and verifying GPT-2 small's weights (124 M parameters).

Every checkpoint carries the SHA-256 of each of its files (``checksums.json``),
computed after the files are written and checked before they are read.  This
benchmark saves a checkpoint of a GPT of GPT-2 small's shapes (random weights,
no optimizer moments: the weights alone are ~0.5 GB), then times, as medians
of ``--repeats`` rounds, the save (which includes hashing), hashing the weights
file alone, and a load (which includes verifying), and prints the share of
each that the checksum takes.  The files are in the page cache, as they are
right after a save: on a cold disk, reading dominates and the share is smaller.
"""

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from npllm.bench import at_least_one, description
from npllm.bench.timing import seconds
from npllm.models import GPT, GPTConfig
from npllm.io.checksums import file_sha256
from npllm.training.checkpoint import MODEL_FILE, load_checkpoint, save_checkpoint

SHAPES = {"gpt2": GPTConfig(), "tiny": GPTConfig(vocab_size=1024, context_length=128, n_layer=4, n_head=4, n_embd=128)}


def measure(shape: str, repeats: int) -> dict:
    model = GPT(SHAPES[shape], seed=0)
    weights = model.state_dict()
    folder = Path(tempfile.mkdtemp(prefix="npllm-bench-checkpoint-"))
    try:
        save = [seconds(save_checkpoint, folder, weights, {}, {"step": 0}) for _ in range(repeats)]
        path = folder / "checkpoint" / MODEL_FILE
        hashing = [seconds(file_sha256, path) for _ in range(repeats)]
        load = [seconds(load_checkpoint, folder) for _ in range(repeats)]
        megabytes = path.stat().st_size / 1e6
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    save_s, hash_s, load_s = (float(np.median(times)) for times in (save, hashing, load))
    return {"shape": shape, "parameters": model.num_parameters(), "megabytes": megabytes, "save_s": save_s,
            "hash_s": hash_s, "load_s": load_s, "hash_gb_per_s": megabytes / 1e3 / hash_s,
            "hash_share_of_save": hash_s / save_s, "hash_share_of_load": hash_s / load_s}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="npllm bench checkpoint", description=description(__doc__),
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="gpt2", help="the model whose weights are saved")
    parser.add_argument("--repeats", type=at_least_one, default=3, help="rounds; medians are reported")
    parser.add_argument("--json", action="store_true", help="end with the figures as one JSON line")
    args = parser.parse_args(argv)
    figures = measure(args.shape, args.repeats)
    print(f"checkpoint of {figures['shape']}: {figures['parameters']:,} parameters, {figures['megabytes']:,.0f} MB"
          f" of weights, medians of {args.repeats}")
    print(f"  save (write + fsync + hash every file): {figures['save_s']:.2f} s")
    print(f"  SHA-256 of the weights file alone:       {figures['hash_s']:.2f} s"
          f" ({figures['hash_gb_per_s']:.2f} GB/s; {figures['hash_share_of_save']:.0%} of the save)")
    print(f"  load (verify + read):                    {figures['load_s']:.2f} s"
          f" (the checksum is {figures['hash_share_of_load']:.0%} of it)")
    if args.json:
        print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
