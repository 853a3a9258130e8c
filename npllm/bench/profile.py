"""``npllm bench profile``: where a training step's time goes between its matrix products, kernel by kernel.

``npllm bench products`` says how long a step takes beside its products
alone; this benchmark splits the difference.  It runs ``npllm train``'s
step (``DataParallel``, one thread per core) with a stopwatch around every
fused op's forward and backward (every ``Function`` of ``npllm.ops`` and
``npllm.functional``), around the softmax pieces inside attention and the
bias gradients inside ``linear``, the autograd engine's accumulation into
the parameters' gradients, AdamW's step and ``zero_grad``, and the
data-parallel split (cutting the batch, pointing the replicas at the
weights) and join (adding the replicas' gradients, and the time the first
core to finish its shard waits for the other).  Times are per step and per
core: an op that runs on both shards at once counts its mean over the two
threads, so the rows add up to the step's wall-clock time.  What no row
claims is the engine's and the layers' own Python (building the graph,
ordering it, wrapping arrays): the last row.

With ``--compare-torch`` the same step in eager PyTorch runs under
``torch.profiler`` (forward, backward and the optimizer each in a session
of its own), and its ATen ops are grouped into the same rows: PyTorch's
layer norm is ``native_layer_norm`` and its backward, its attention is the
fused flash kernel (its products inside, as ours are), its AdamW the
``_foreach`` ops of ``torch.optim.AdamW``.  The profiler's per-op cost
(a few microseconds) weighs on both columns alike.  ``--model bert`` profiles
BERT's masked-LM step instead (its PyTorch twin: ``bench.torch_bert``).

Linear layers and attention hold the step's products.  Their totals are
printed, and beside them the products timed alone on the same shapes (as
``npllm bench products`` times them, one shard per core); the difference
is their work between the products (the bias add, the score scaling and
masking, the softmax).  The figures of the instrumented step sum a little
above the plain step's (a stopwatch per call); the header prints both.
"""

import argparse
import contextlib
import functools
import json
import threading
import time
from collections import defaultdict

import numpy as np

from npllm.bench import at_least_one, description, model_benchmark_arguments, require_torch
from npllm.bench.products import OURS, median_seconds, run_sharded, step_products
from npllm.bench.train import ENGINES, PRESETS, torch_bert_training, torch_training
from npllm.runtime.memory import keep_freed_memory
from npllm.runtime.pool import cores

# the rows, in the order a step meets them; each fused op's Function class names its row
ROWS = {
    "FusedEmbedding": "embedding (token lookup)",
    "GetItem": "position embedding (slice of wpe)",
    "Add": "residual and embedding adds",
    "FusedLayerNorm": "layer norm",
    "FusedLinear": "linear (products + bias)",
    "FusedSelfAttention": "attention (products + softmax)",
    "FusedGELU": "GELU",
    "FusedLinearGELU": "linear + GELU (products + bias + GELU)",
    "FusedLinearAddLayerNorm": "linear + add + layer norm (products + ...)",
    "FusedDropout": "dropout",
    "FusedCrossEntropy": "cross-entropy",
}
PIECES = {  # timed inside the ops above (their time is theirs too)
    "gelu": "  within GELU or linear + GELU: GELU's pieces",
    "_masked_softmax": "  within attention: scale, mask, softmax",
    "softmax_rows_backward": "  within attention: softmax backward",
    "column_sums": "  within linear, layer norm: bias gradients",
}
ENGINE = {
    "_accumulate_leaf": "engine: add into parameters' .grad",
    "split": "data parallel: split, share weights",
    "join": "data parallel: add replicas' gradients",
    "wait": "data parallel: waiting for the other core",
    "AdamW": "AdamW step",
    "zero_grad": "zero_grad",
}
OTHER = "other ops (reshapes, transposes, ...)"
PYTHON = "Python: graph, engine, layers (the rest)"

TORCH_ROWS = {  # ATen op (or its prefix) -> our row
    "aten::embedding": ROWS["FusedEmbedding"], "aten::index": ROWS["FusedEmbedding"],
    "aten::index_put": ROWS["FusedEmbedding"], "aten::_index_put_impl_": ROWS["FusedEmbedding"],
    "aten::embedding_dense_backward": ROWS["FusedEmbedding"],
    "aten::slice": ROWS["GetItem"], "aten::slice_backward": ROWS["GetItem"],
    "aten::add": ROWS["Add"], "aten::add_": ROWS["Add"],
    "aten::native_layer_norm": ROWS["FusedLayerNorm"], "aten::native_layer_norm_backward": ROWS["FusedLayerNorm"],
    "aten::addmm": ROWS["FusedLinear"], "aten::mm": ROWS["FusedLinear"], "aten::sum": PIECES["column_sums"],
    "aten::_scaled_dot_product_flash_attention_for_cpu": ROWS["FusedSelfAttention"],
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward": ROWS["FusedSelfAttention"],
    "aten::gelu": ROWS["FusedGELU"], "aten::gelu_backward": ROWS["FusedGELU"],
    "aten::_log_softmax": ROWS["FusedCrossEntropy"], "aten::_log_softmax_backward_data": ROWS["FusedCrossEntropy"],
    "aten::nll_loss_forward": ROWS["FusedCrossEntropy"], "aten::nll_loss_backward": ROWS["FusedCrossEntropy"],
}


class Stopwatches:
    """Seconds per (row, direction), kept per thread so that the two shards' threads never share a counter."""

    def __init__(self):
        self.lock = threading.Lock()
        self.per_thread = defaultdict(lambda: defaultdict(float))  # thread id -> (row, direction) -> seconds

    def add(self, key, elapsed):
        self.per_thread[threading.get_ident()][key] += elapsed  # (each thread writes only its own dict)

    def timing(self, key, function):
        """``function`` with a stopwatch around each call, counted under ``key``."""
        @functools.wraps(function)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.add(key, time.perf_counter() - start)
        return timed

    def per_core(self, steps) -> dict:
        """(row, direction) -> ms per step: the mean over the threads that ran it."""
        totals, threads = defaultdict(float), defaultdict(int)
        for counters in self.per_thread.values():
            for key, seconds in counters.items():
                totals[key] += seconds
                threads[key] += 1
        return {key: totals[key] / threads[key] / steps * 1e3 for key in totals}


@contextlib.contextmanager
def instrumented(watches: Stopwatches):
    """Within the block, every Function's forward and backward and the pieces named above carry a stopwatch."""
    import npllm.functional  # noqa: F401 (loads every fused op, so each Function subclass exists)
    from npllm import tensor
    from npllm.functional import _kernels, activations, attention
    from npllm.optim import optimizers
    from npllm.runtime import data_parallel

    patched = []  # (namespace, name, original): a module's or class's __dict__, or a plain dict

    def patch(owner, name, wrapped):
        namespace = owner if isinstance(owner, dict) else owner.__dict__
        patched.append((owner, name, namespace[name]))
        if isinstance(owner, dict):
            owner[name] = wrapped
        else:
            setattr(owner, name, wrapped)

    for function in _all_subclasses(tensor.Function):
        for direction in ("forward", "backward"):
            if direction in function.__dict__:
                row = ROWS.get(function.__name__, OTHER)
                patch(function, direction, staticmethod(watches.timing((row, direction), getattr(function, direction))))
    gelu = PIECES["gelu"]
    if hasattr(activations, "PIECES"):  # both forms' pieces, in one table (used by gelu and linear_gelu)
        for form, (forward, backward) in list(activations.PIECES.items()):
            patch(activations.PIECES, form, (watches.timing((gelu, "forward"), forward),
                                             watches.timing((gelu, "backward"), backward)))
    else:  # (the code before linear_gelu: the tanh form's two functions)
        patch(activations, "_gelu_forward", watches.timing((gelu, "forward"), activations._gelu_forward))
        patch(activations, "_gelu_backward", watches.timing((gelu, "backward"), activations._gelu_backward))
    patch(attention, "_masked_softmax", watches.timing((PIECES["_masked_softmax"], "forward"), attention._masked_softmax))
    patch(attention, "softmax_rows_backward",
          watches.timing((PIECES["softmax_rows_backward"], "backward"), attention.softmax_rows_backward))
    patch(_kernels, "column_sums", watches.timing((PIECES["column_sums"], "backward"), _kernels.column_sums))
    patch(tensor, "_accumulate_leaf", watches.timing((ENGINE["_accumulate_leaf"], "backward"), tensor._accumulate_leaf))
    patch(optimizers.Optimizer, "step", watches.timing((ENGINE["AdamW"], "step"), optimizers.Optimizer.step))
    patch(optimizers.Optimizer, "zero_grad", watches.timing((ENGINE["zero_grad"], "step"), optimizers.Optimizer.zero_grad))
    parallel = data_parallel.DataParallel
    patch(parallel, "_add_replica_gradients", watches.timing((ENGINE["join"], "step"), parallel._add_replica_gradients))
    patch(parallel, "_map_shards", _timing_the_shards(watches, parallel._map_shards))
    try:
        yield
    finally:
        for owner, name, original in reversed(patched):
            if isinstance(owner, dict):
                owner[name] = original
            else:
                setattr(owner, name, original)


def _timing_the_shards(watches, map_shards):
    """``DataParallel._map_shards`` that also times each shard's work, the split, and the wait at the join."""
    def timed_map_shards(self, work, batch, objective):
        shard_seconds = []

        def timed_work(*job):
            start = time.perf_counter()
            try:
                return work(*job)
            finally:
                shard_seconds.append(time.perf_counter() - start)

        start = time.perf_counter()
        result = map_shards(self, timed_work, batch, objective)
        total = time.perf_counter() - start
        # the shards' ops count their mean over the cores; the wall clock waits for the slower shard,
        # mean + (slowest - fastest) / 2: that half difference is each core's wait, on average
        watches.add((ENGINE["wait"], "step"), (max(shard_seconds) - min(shard_seconds)) / 2)
        watches.add((ENGINE["split"], "step"), max(total - max(shard_seconds), 0.0))  # cutting, sharing, dispatch
        return result

    return timed_map_shards


def _all_subclasses(cls):
    found, stack = [], [cls]
    while stack:
        for sub in stack.pop().__subclasses__():
            found.append(sub)
            stack.append(sub)
    return found


TORCH_TRAINING = {"gpt": torch_training, "bert": torch_bert_training}  # model -> its PyTorch twin, as bench train's


def npllm_profile(preset, steps, warmup, model="gpt") -> tuple:
    """(ms per (row, direction), instrumented step ms): our step, each kernel timed per core."""
    step, _ = ENGINES["npllm", model](preset)
    for _ in range(warmup):
        step()
    watches = Stopwatches()
    with instrumented(watches):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        step_ms = (time.perf_counter() - start) / steps * 1e3
    return watches.per_core(steps), step_ms


def torch_profile(preset, steps, warmup, model="gpt") -> tuple:
    """(ms per (row, direction), step ms): PyTorch's eager step under torch.profiler, ATen ops grouped into our rows."""
    from torch.profiler import ProfilerActivity, profile

    _, optimizer, loss_of, _ = TORCH_TRAINING[model](preset)
    for _ in range(warmup):
        optimizer.zero_grad()
        loss_of().backward()
        optimizer.step()
    figures = defaultdict(float)
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad()
        with profile(activities=[ProfilerActivity.CPU]) as forward:
            loss = loss_of()
        with profile(activities=[ProfilerActivity.CPU]) as backward:
            loss.backward()
        with profile(activities=[ProfilerActivity.CPU]) as optimizer_step:
            optimizer.step()
        for direction, session in (("forward", forward), ("backward", backward)):
            for event in session.key_averages():
                figures[(TORCH_ROWS.get(event.key, OTHER), direction)] += event.self_cpu_time_total / 1e3
        figures[(ENGINE["AdamW"], "step")] += sum(event.self_cpu_time_total for event in optimizer_step.key_averages()) / 1e3
    step_ms = (time.perf_counter() - start) / steps * 1e3
    return {key: ms / steps for key, ms in figures.items()}, step_ms


def products_and_steps(preset, repeats, compare_torch, model="gpt") -> dict:
    """Medians of alternating rounds (as ``bench products``): each engine's whole step and its products alone, ms."""
    workers = cores()
    sequences = preset["batch_size"]
    shards = [step_products(preset, sequences // workers, np.asarray, seed, model)[0] for seed in range(workers)]
    npllm_step, _ = ENGINES["npllm", model](preset)
    engines = {"npllm products": lambda: run_sharded(shards), "npllm step": npllm_step}
    if compare_torch:
        import torch

        products = step_products(preset, sequences, torch.from_numpy, model=model)[0]
        engines["torch products"] = lambda: [call() for call in products]
        engines["torch step"], _ = ENGINES["torch", model](preset)
    rounds = {name: [] for name in engines}
    for _ in range(repeats):
        for name, run in engines.items():
            rounds[name].append(median_seconds(run))
    figures = {name: float(np.median(times)) * 1e3 for name, times in rounds.items()}
    for engine in ("npllm", "torch") if compare_torch else ("npllm",):
        figures[f"{engine} rest"] = float(np.median(np.subtract(rounds[f"{engine} step"], rounds[f"{engine} products"]))) * 1e3
    if compare_torch:
        figures["rest ratio"] = float(np.median([
            (ns - nproducts) / (ts - tproducts) for ns, nproducts, ts, tproducts in
            zip(rounds["npllm step"], rounds["npllm products"], rounds["torch step"], rounds["torch products"])]))
    return figures


def table(ours: dict, theirs: dict | None) -> list[str]:
    """The printed rows: forward and backward (or the step's) ms per row, ours and PyTorch's; each piece under its op."""
    under = {ROWS["FusedLinearGELU"]: [PIECES["gelu"]], ROWS["FusedLinear"]: [PIECES["column_sums"]],
             ROWS["FusedSelfAttention"]: [PIECES["_masked_softmax"], PIECES["softmax_rows_backward"]]}
    rows = [row for op in ROWS.values() for row in [op, *under.get(op, [])]] + [OTHER, *ENGINE.values(), PYTHON]
    lines = [f"  {'per step, ms':<44}{'fwd':>8}{'bwd':>8}" + (f"{'torch fwd':>11}{'torch bwd':>11}" if theirs else "")]

    def cells(figures, row):
        if row in ENGINE.values() or row == PYTHON:  # one figure for the step (the engine's accumulation: backward)
            value = figures.get((row, "step"), figures.get((row, "backward")))
            return [f"{value:.1f}" if value is not None else "-", ""]
        return [f"{figures[row, direction]:.1f}" if (row, direction) in figures else "-"
                for direction in ("forward", "backward")]

    for row in rows:
        line = f"  {row:<44}" + "".join(f"{cell:>8}" for cell in cells(ours, row))
        if theirs is not None:
            line += "".join(f"{cell:>11}" for cell in cells(theirs, row))
        lines.append(line)
    return lines


def _summed(figures, rows) -> float:
    return sum(ms for (row, _), ms in figures.items() if row in rows)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="npllm bench profile", description=description(__doc__))
    model_benchmark_arguments(parser, PRESETS, "also profile PyTorch's eager step")
    parser.add_argument("--model", choices=sorted(TORCH_TRAINING), default="gpt", help="whose step (default gpt)")
    parser.add_argument("--steps", type=at_least_one, default=None, help="profiled steps (default: 10 tiny, 3 small)")
    parser.add_argument("--warmup", type=at_least_one, default=2, help="untimed steps first (default 2)")
    args = parser.parse_args(argv)
    if args.compare_torch:
        require_torch(parser)
    keep_freed_memory()  # as training does (see npllm.runtime.memory)
    preset = PRESETS[args.preset]
    steps = args.steps or (10 if args.preset == "tiny" else 3)
    ours, ours_step = npllm_profile(preset, steps, args.warmup, args.model)
    theirs, theirs_step = torch_profile(preset, steps, args.warmup, args.model) if args.compare_torch else (None, None)
    plain = products_and_steps(preset, args.repeats, args.compare_torch, args.model)

    accounted = _summed(ours, {*ROWS.values(), OTHER, *ENGINE.values()})
    ours[(PYTHON, "step")] = ours_step - accounted
    if theirs is not None:
        theirs[(PYTHON, "step")] = theirs_step - _summed(theirs, {*ROWS.values(), OTHER, *ENGINE.values()})
    print(f"{args.model} preset {args.preset}: {preset}, {cores()} cores; profiled over {steps} steps"
          f" (npllm {ours_step:.1f} ms/step instrumented" + (f", torch {theirs_step:.1f} under its profiler" if theirs else "")
          + ")")
    for line in table(ours, theirs):
        print(line)
    products_row = [f"{plain['npllm products']:.1f}"] + ([f"{plain['torch products']:.1f}"] if theirs is not None else [])
    engines = f"{OURS}; torch on every core" if theirs is not None else OURS
    print(f"  products alone, timed apart ({engines}): " + " / ".join(products_row) + " ms")
    holding = {row for name, row in ROWS.items() if name.startswith("FusedLinear") or name == "FusedSelfAttention"}
    print(f"  so the ops holding the products spent {_summed(ours, holding) - plain['npllm products']:.1f} ms"
          " between them (npllm)" + (f", {_summed(theirs, holding) - plain['torch products']:.1f} ms (torch)"
                                     if theirs is not None else ""))
    print(f"plain steps, median of {args.repeats} alternating rounds:")
    for engine in ("npllm", "torch") if args.compare_torch else ("npllm",):
        print(f"  {engine:>5}: step {plain[f'{engine} step']:.1f} ms, products {plain[f'{engine} products']:.1f} ms,"
              f" step less its products {plain[f'{engine} rest']:.1f} ms")
    if args.compare_torch:
        print(f"  npllm's step less its products is {plain['rest ratio']:.2f}x PyTorch's (median of the rounds' ratios)")
    if args.json:
        def flat(figures):
            return {f"{row} [{direction}]": ms for (row, direction), ms in figures.items()}
        print(json.dumps({"model": args.model, "preset": args.preset, "npllm": flat(ours), "torch": flat(theirs) if theirs else None,
                          "plain": plain}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
