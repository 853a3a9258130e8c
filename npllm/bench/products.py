"""``npllm bench products``: the matrix products of one training step, and nothing else.

A training step of a GPT is mostly matrix products: every Linear layer makes
three per step (forward y = x W, then dX = g W^T and dW = X^T g), the tied
output projection too, and each layer's attention six more per head (see
``step_products``).  How fast a step can possibly be is therefore bounded by
how fast the BLAS library multiplies matrices of exactly these shapes.  This
benchmark times those products alone, on random arrays of the step's
shapes, with no autograd and no elementwise work (softmax, layer norm, GELU,
loss, optimizer) around them:

- ``numpy, one shard per core``: what ``DataParallel`` does, each core
  multiplying its slice of the batch with single-threaded BLAS, all at once;
- ``numpy, whole batch``: each product on the whole batch, BLAS using every core;
- ``torch`` (``--compare-torch``): the same products in PyTorch, every core;

and, in the same rounds, the whole training step of each (``npllm bench
train``'s), so that a step less its products shows what all the rest costs.
``--model bert`` does the same for BERT's masked-LM step (attention over
every key, the head at the masked positions only).
NumPy's products run in its bundled BLAS (OpenBLAS in the PyPI wheels),
PyTorch's in its own (MKL on x86 CPUs).  The ceiling printed with
``--compare-torch``, PyTorch's whole step over our products alone, is the
most a NumPy step could beat PyTorch by were all the elementwise work free.
Everything runs in this one process (``npllm bench train`` keeps engines in
separate ones, for their memory figures).  With ``--repeats N`` the runs
alternate N times and the medians are printed.
"""

import argparse
import json
import threading

import numpy as np

from npllm.bench import description, model_benchmark_arguments, require_torch
from npllm.bench.timing import seconds
from npllm.bench.train import ENGINES, PRESETS, _masked_batch
from npllm.data.masking import IGNORE_INDEX
from npllm.functional.attention import _query_blocks
from npllm.runtime.blas import blas_threads_limited
from npllm.runtime.memory import keep_freed_memory
from npllm.runtime.pool import cores


OURS = "numpy, one shard per core"
WHOLE_STEP = {"npllm": "npllm, whole training step", "torch": "torch, whole training step"}


def linear_shapes(preset, sequences, model="gpt") -> list:
    """(rows, in, out) of each Linear of one step's forward: the blocks' four, then the output projection.

    The GPT projects every position onto the vocabulary (tied to the token
    embedding); BERT's masked-LM head, a dense layer and the tied decoder,
    runs at the masked positions only (about 15%, ``masked_rows``).
    """
    C, V = preset["n_embd"], preset["vocab_size"]
    rows = sequences * preset["context_length"]
    block = [(rows, C, 3 * C), (rows, C, C), (rows, C, 4 * C), (rows, 4 * C, C)]
    if model == "bert":
        masked = masked_rows(preset, sequences)
        return block * preset["n_layer"] + [(masked, C, C), (masked, C, V)]
    return block * preset["n_layer"] + [(rows, C, V)]


def masked_rows(preset, sequences) -> int:
    """How many positions the first ``sequences`` windows of BERT's benchmark batch mask (``bench.train._masked_batch``)."""
    return int(np.count_nonzero(_masked_batch(preset)["targets"][:sequences] != IGNORE_INDEX))


def step_products(preset, sequences, to_array, seed=0, model="gpt"):
    """(zero-argument calls, FLOPs): every matrix product of a training step of ``model`` on ``sequences`` sequences.

    Each Linear makes three (forward y = x W, dX = g W^T, dW = X^T g); the
    attention of each layer makes six per (sequence, head) and block of
    queries, on the same blocks as ``npllm.functional`` (the GPT's causal
    blocks; BERT's one block of every query against every key) (scores
    S = q k^T, out = P v; dV = P^T g, dP = g v^T, dq = dS k, dk = dS^T q).
    The data is random float32 in contiguous arrays (in the model q, k, v
    are strided views of one array, which if anything makes our products
    slower there than here); ``to_array`` turns each NumPy array into the
    library's own (``np.asarray``, ``torch.from_numpy``).
    """
    rng = np.random.default_rng(seed)

    def random(*shape):
        return to_array(rng.standard_normal(shape, dtype=np.float32))

    calls, flops = [], 0
    for rows, n_in, n_out in linear_shapes(preset, sequences, model):
        x, w, g = random(rows, n_in), random(n_in, n_out), random(rows, n_out)
        calls += [lambda x=x, w=w: x @ w, lambda g=g, w=w: g @ w.T, lambda x=x, g=g: x.T @ g]
        flops += 3 * 2 * rows * n_in * n_out
    H, T = preset["n_head"], preset["context_length"]
    D = preset["n_embd"] // H
    for _ in range(preset["n_layer"]):
        q, k, v, g = (random(sequences, H, T, D) for _ in range(4))
        for q0, q1, k1 in _query_blocks(T, T, causal=model == "gpt"):
            scores = random(sequences, H, q1 - q0, k1)  # stands for S, P, dP and dS alike
            calls += [
                lambda q=q[:, :, q0:q1], k=k[:, :, :k1]: q @ k.swapaxes(-1, -2),
                lambda p=scores, v=v[:, :, :k1]: p @ v,
                lambda p=scores, g=g[:, :, q0:q1]: p.swapaxes(-1, -2) @ g,
                lambda g=g[:, :, q0:q1], v=v[:, :, :k1]: g @ v.swapaxes(-1, -2),
                lambda s=scores, k=k[:, :, :k1]: s @ k,
                lambda s=scores, q=q[:, :, q0:q1]: s.swapaxes(-1, -2) @ q,
            ]
            flops += 6 * 2 * sequences * H * (q1 - q0) * k1 * D
    return calls, flops


def run_all(calls):
    for call in calls:
        call()


def run_sharded(shards):
    """Each list of calls on a thread of its own (the first on this one), single-threaded BLAS, all at once."""
    with blas_threads_limited(1):
        threads = [threading.Thread(target=run_all, args=(calls,)) for calls in shards[1:]]
        for thread in threads:
            thread.start()
        run_all(shards[0])
        for thread in threads:
            thread.join()


def _call(step):
    step()


def median_seconds(fn, repeats=5) -> float:
    fn()  # warm-up
    return float(np.median([seconds(fn) for _ in range(repeats)]))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="npllm bench products", description=description(__doc__))
    model_benchmark_arguments(parser, PRESETS, "also time the products in PyTorch")
    parser.add_argument("--model", choices=("gpt", "bert"), default="gpt", help="whose step (default gpt)")
    args = parser.parse_args(argv)
    if args.compare_torch:
        require_torch(parser)
    keep_freed_memory()  # as training does (see npllm.runtime.memory)
    preset = PRESETS[args.preset]
    workers = cores()
    sequences = preset["batch_size"]
    whole_batch, flops = step_products(preset, sequences, np.asarray, model=args.model)
    shards = [step_products(preset, sequences // workers, np.asarray, seed, args.model)[0] for seed in range(workers)]
    npllm_step, _ = ENGINES["npllm", args.model](preset)
    engines = {OURS: (run_sharded, shards), "numpy, whole batch": (run_all, whole_batch),
               WHOLE_STEP["npllm"]: (_call, npllm_step)}
    if args.compare_torch:
        import torch

        torch.set_num_threads(workers)
        engines["torch"] = (run_all, step_products(preset, sequences, torch.from_numpy, model=args.model)[0])
        torch_step, _ = ENGINES["torch", args.model](preset)
        engines[WHOLE_STEP["torch"]] = (_call, torch_step)
    seconds = {name: [] for name in engines}
    for _ in range(args.repeats):
        for name, (run, work) in engines.items():
            seconds[name].append(median_seconds(lambda: run(work)))

    print(f"{args.model} preset {args.preset}: the matrix products of one training step"
          f" ({flops / 1e9:.1f} GFLOP), {workers} cores, median of {args.repeats} alternating rounds")
    summary = {"model": args.model, "preset": args.preset, "gflop": flops / 1e9, "repeats": args.repeats}
    for name, times in seconds.items():
        ms = float(np.median(times)) * 1e3
        if name in WHOLE_STEP.values():  # products and everything else: a GFLOP/s of products alone would mislead
            summary[name] = {"ms": ms}
            print(f"  {name:>27}: {ms:8.1f} ms")
        else:
            summary[name] = {"ms": ms, "gflops": flops / ms / 1e6}
            print(f"  {name:>27}: {ms:8.1f} ms  {flops / ms / 1e6:6.1f} GFLOP/s of products")
    for engine, products in (("npllm", OURS), ("torch", "torch")):
        if WHOLE_STEP[engine] not in seconds:
            continue
        rest = float(np.median(np.subtract(seconds[WHOLE_STEP[engine]], seconds[products]))) * 1e3
        summary[f"{engine}_rest_ms"] = rest
        print(f"  {engine}'s step less its products (softmax, norms, GELU, loss, optimizer, overhead): {rest:.1f} ms")
    if args.compare_torch:
        ours = seconds[OURS]
        ratio = float(np.median([n / t for n, t in zip(ours, seconds["torch"])]))
        ceiling = float(np.median([t / n for n, t in zip(ours, seconds[WHOLE_STEP["torch"]])]))
        summary["torch_speedup_over_numpy_sharded"] = ratio
        summary["ceiling_vs_torch_step"] = ceiling
        print(f"  torch's products are {ratio:.2f}x as fast as npllm's (one shard per core)")
        print(f"  ceiling: with everything but these products free, an npllm step would be {ceiling:.2f}x"
              f" as fast as torch's whole step")
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
