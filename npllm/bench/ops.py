"""How much Python the engine spends per op: a chain of tiny ops, forward and backward.

On a (4,) tensor NumPy's arithmetic takes well under a microsecond, so the
time per op of a long chain of such ops is almost all the engine's own
bookkeeping: ``Function.apply`` unwrapping inputs, building a Context and a
result Tensor, and ``backward()`` ordering the graph, calling each op's
backward and accumulating gradients.  A transformer step runs thousands of
ops, so this overhead is a floor under every training step, and this is the
figure to watch when touching ``tensor.py``.

Two chains are timed, each the best of a few repeats:

- ``mul``:   y = y * w, ten thousand times (the simplest binary op);
- ``mixed``: a repeating cycle of multiply, add, tanh, reshape, transpose,
  reshape, slicing, subtract and divide by a Python number (the mix a layer makes).

Run ``npllm bench ops`` (or ``python -m npllm.bench.ops``); ``--json``
makes the last line a JSON object of the figures.
"""

import argparse
import json

import numpy as np

from npllm.bench import at_least_one, description
from npllm.bench.timing import timed
from npllm.tensor import Tensor

SIZE = 4  # elements per tensor: small enough that NumPy's own work is negligible


def mul_chain(x, w, length):
    """y = x * w * w * ... (``length`` multiplies)."""
    y = x
    for _ in range(length):
        y = y * w
    return y


MIXED_CYCLE = (
    lambda y, w, b: y * w,
    lambda y, w, b: y + b,
    lambda y, w, b: y.tanh(),
    lambda y, w, b: y.reshape(2, SIZE // 2),  # (2, 2)
    lambda y, w, b: y.T,                      # (2, 2), transposed
    lambda y, w, b: y.reshape(SIZE),          # back to (4,)
    lambda y, w, b: y[::1],                   # a basic slice (all of it)
    lambda y, w, b: y - b,
    lambda y, w, b: y / 2.0,
)


def mixed_chain(x, w, b, length):
    """At least ``length`` ops cycling through MIXED_CYCLE; returns the output and the op count."""
    y, done = x, 0
    while done < length:
        for step in MIXED_CYCLE:
            y = step(y, w, b)
        done += len(MIXED_CYCLE)
    return y, done


def time_chain(build, repeats):
    """Best forward and backward seconds over ``repeats`` runs of ``build() -> (output, op_count)``."""
    best_forward = best_backward = float("inf")
    for _ in range(repeats):
        (y, count), forward_seconds = timed(build)
        _, backward_seconds = timed(y.backward, np.ones(y.shape, dtype=y.dtype))
        best_forward = min(best_forward, forward_seconds / count)
        best_backward = min(best_backward, backward_seconds / count)
    return best_forward, best_backward


def main(argv=None):
    parser = argparse.ArgumentParser(prog="npllm bench ops", description=description(__doc__))
    parser.add_argument("--length", type=at_least_one, default=10_000, help="ops per chain (default 10000)")
    parser.add_argument("--repeats", type=at_least_one, default=5, help="runs per chain; the best is reported (default 5)")
    parser.add_argument("--json", action="store_true", help="end with one line of JSON")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal(SIZE).astype(np.float32), requires_grad=True)
    w = Tensor(np.full(SIZE, 0.999, dtype=np.float32), requires_grad=True)
    b = Tensor(np.full(SIZE, 0.01, dtype=np.float32), requires_grad=True)
    chains = {
        "mul": lambda: (mul_chain(x, w, args.length), args.length),
        "mixed": lambda: mixed_chain(x, w, b, args.length),
    }
    results = {}
    for name, build in chains.items():
        forward, backward = time_chain(build, args.repeats)
        results[f"{name}_forward_us_per_op"] = round(forward * 1e6, 3)
        results[f"{name}_backward_us_per_op"] = round(backward * 1e6, 3)
        print(f"{name:>5} chain of {args.length} float32 ({SIZE},) ops:"
              f" forward {forward * 1e6:6.2f} us/op, backward {backward * 1e6:6.2f} us/op")
    if args.json:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
