"""``npllm bench products``: the matrix products of one training step, and nothing else.

A training step of a GPT is mostly matrix products: every Linear layer makes
three per step (forward y = x W, then dX = g W^T and dW = X^T g), and so
does the tied output projection.  How fast a step can possibly be is
therefore bounded by how fast the BLAS library multiplies matrices of
exactly these shapes.  This benchmark times those products alone, on random
arrays of the step's shapes, with no autograd, no attention and no
elementwise work around them:

- ``numpy``: each product on the whole batch, BLAS using every core;
- ``numpy, one shard per core``: what ``DataParallel`` does, each core
  multiplying its slice of the batch with single-threaded BLAS, all at once;
- ``torch`` (``--compare-torch``): the same products in PyTorch, every core.

NumPy's products run in its bundled BLAS (OpenBLAS in the PyPI wheels),
PyTorch's in its own (MKL on x86 CPUs).  When PyTorch's products alone are
faster than NumPy's, that ratio caps how much faster than PyTorch a NumPy
training step can be, however little everything else costs.  With
``--repeats N`` the three runs alternate N times and the medians are printed.
"""

import argparse
import json
import threading
import time

import numpy as np

from npllm.benchmarks.train import PRESETS
from npllm.blas_threads import blas_threads_limited
from npllm.ops.parallel import cores


def step_product_shapes(preset) -> list:
    """(rows, in, out) of each Linear of one step's forward (the blocks' four, then the tied output projection)."""
    C, V = preset["n_embd"], preset["vocab_size"]
    rows = preset["batch_size"] * preset["context_length"]
    block = [(rows, C, 3 * C), (rows, C, C), (rows, C, 4 * C), (rows, 4 * C, C)]
    return block * preset["n_layer"] + [(rows, C, V)]


def product_calls(shapes, to_array, seed=0) -> list:
    """Zero-argument calls making each shape's three products (forward, dX, dW), on random float32 data.

    ``to_array`` turns each NumPy array into the library's own (``np.asarray``, ``torch.from_numpy``).
    """
    rng = np.random.default_rng(seed)
    calls = []
    for rows, n_in, n_out in shapes:
        x, w, g = (to_array(rng.standard_normal(shape, dtype=np.float32))
                   for shape in ((rows, n_in), (n_in, n_out), (rows, n_out)))
        calls += [lambda x=x, w=w: x @ w, lambda g=g, w=w: g @ w.T, lambda x=x, g=g: x.T @ g]
    return calls


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


def median_seconds(fn, repeats=5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="npllm bench products", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--compare-torch", action="store_true", help="also time the products in PyTorch")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds; medians reported (default 3)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of all figures")
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    shapes = step_product_shapes(preset)
    flops = sum(3 * 2 * rows * n_in * n_out for rows, n_in, n_out in shapes)
    workers = cores()
    shard_shapes = [[(rows // workers, n_in, n_out) for rows, n_in, n_out in shapes] for _ in range(workers)]
    engines = {
        "numpy": (run_all, product_calls(shapes, np.asarray)),
        "numpy, one shard per core": (run_sharded, [product_calls(s, np.asarray, seed) for seed, s in
                                                    enumerate(shard_shapes)]),
    }
    if args.compare_torch:
        import torch

        torch.set_num_threads(workers)
        engines["torch"] = (run_all, product_calls(shapes, torch.from_numpy))
    seconds = {name: [] for name in engines}
    for _ in range(args.repeats):
        for name, (run, calls) in engines.items():
            seconds[name].append(median_seconds(lambda: run(calls)))

    print(f"preset {args.preset}: the {3 * len(shapes)} parameter products of one training step"
          f" ({flops / 1e9:.1f} GFLOP), {workers} cores, median of {args.repeats} alternating rounds")
    summary = {"preset": args.preset, "gflop": flops / 1e9, "repeats": args.repeats}
    for name, times in seconds.items():
        ms = float(np.median(times)) * 1e3
        summary[name] = {"ms": ms, "gflops": flops / ms / 1e6}
        print(f"  {name:>26}: {ms:8.1f} ms  {flops / ms / 1e6:6.1f} GFLOP/s")
    if args.compare_torch:
        ratio = float(np.median([n / t for n, t in zip(seconds["numpy, one shard per core"], seconds["torch"])]))
        summary["torch_speedup_over_numpy_sharded"] = ratio
        print(f"  torch's products are {ratio:.2f}x as fast as npllm's (one shard per core)")
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
