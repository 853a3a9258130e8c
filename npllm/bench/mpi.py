"""``npllm bench mpi``: one global batch trained as 1 rank × 1 thread, 1 rank × 2 threads and 2 ranks × 1 thread, side by side.

What is measured: the training step ``npllm train`` takes (``loop.train_step``:
each rank's rows of the batch, on its threads, one Allreduce of the flat
gradients, clipping, AdamW) on the same random global batch of the chosen
preset, after warm-up steps.  Each layout runs as its own MPI job
(``mpiexec -n RANKS``, MPICH's, from the ``mpi`` extra), alternating
layouts ``--repeats`` times; the figures are medians.  Printed per layout:
tokens/s of the global batch, ms per step, and for several ranks the time
rank 0 spends in the step's Allreduce and its share of the step, and apart
from it the time spent waiting for the slower rank (a barrier just before
the Allreduce tells the two apart).  The first step's loss of every layout is
printed too: the same global batch gives the same loss whatever the layout,
to float32 summation order.

Then ``--check-ranks N`` (default 4) runs N ranks × 1 thread, more processes
than this machine has cores: a functional check that the communication path
works beyond two ranks (its loss must match too), not a speed.
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

from npllm.bench import at_least_one, description
from npllm.bench.train import PRESETS, _batch, _model_config
from npllm.runtime.memory import keep_freed_memory

LAYOUTS = ((1, 1), (1, 2), (2, 1))  # (ranks, threads per rank), the same global batch each


def measure(preset_name, steps, warmup, workers) -> dict | None:
    """Run on every rank of the job: warm-up steps, then timed steps; rank 0 returns the figures."""
    from npllm.models import GPT
    from npllm.optim import AdamW, configure_param_groups
    from npllm.runtime.data_parallel import DataParallel
    from npllm.runtime.mpi import world
    from npllm.training.loop import LoopSettings, TrainingRun, train_step
    from npllm.training.objectives import NextToken

    keep_freed_memory()  # as training does (see npllm.runtime.memory)
    preset, ranks = PRESETS[preset_name], world()
    model = GPT(_model_config(preset), seed=0)
    inputs, targets = _batch(preset)
    batch = {"input_ids": inputs, "targets": targets}
    optimizer = AdamW(configure_param_groups(model, 0.1), lr=3e-4, betas=(0.9, 0.95))
    run = TrainingRun(model=model, objective=NextToken(), optimizer=optimizer, schedule=lambda step: 3e-4,
                      batches=types.SimpleNamespace(next_batch=lambda: batch), evaluation_batches=list,
                      parallel=DataParallel(model, workers), settings=LoopSettings(max_steps=warmup + steps),
                      out_dir=Path("."))
    first_loss = train_step(run, 3e-4)[0]
    for _ in range(warmup - 1):
        train_step(run, 3e-4)
    ranks.measure_waiting = True  # a barrier before each Allreduce: the wait for the slower rank measured apart
    step_seconds, allreduce_seconds, waiting_seconds = [], [], []
    for _ in range(steps):
        before, waited, started = ranks.allreduce_seconds, ranks.waiting_seconds, time.perf_counter()
        train_step(run, 3e-4)
        step_seconds.append(time.perf_counter() - started)
        allreduce_seconds.append(ranks.allreduce_seconds - before)
        waiting_seconds.append(ranks.waiting_seconds - waited)
    if not ranks.is_writer:
        return None
    step, allreduce = float(np.median(step_seconds)), float(np.median(allreduce_seconds))
    return {"ranks": ranks.size, "threads": workers, "first_loss": first_loss, "ms_per_step": step * 1e3,
            "tokens_per_s": preset["batch_size"] * preset["context_length"] / step,
            "allreduce_ms": allreduce * 1e3, "allreduce_share": allreduce / step,
            "waiting_ms": float(np.median(waiting_seconds)) * 1e3,
            "gradient_mb": sum(flat.grad.nbytes for flat in optimizer.flat_groups) / 1e6}


def mpiexec() -> str | None:
    """The mpiexec beside this Python (the ``mpi`` extra's), else the one on PATH."""
    return shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


def measure_job(launcher, ranks, threads, preset, steps, warmup) -> dict:
    """``measure`` as an MPI job of ``ranks`` processes with ``threads`` threads each; rank 0's figures."""
    command = [launcher, "-n", str(ranks), sys.executable, "-m", "npllm.bench.mpi", "--child", "--preset", preset,
               "--steps", str(steps), "--warmup", str(warmup), "--threads", str(threads)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"bench mpi: the {ranks} × {threads} job failed:\n{completed.stderr.strip()}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def layout_name(figures) -> str:
    ranks, threads = figures["ranks"], figures["threads"]
    return f"{ranks} rank{'s' * (ranks > 1)} × {threads} thread{'s' * (threads > 1)}"


def report_line(figures) -> str:
    allreduce = (f"   Allreduce {figures['allreduce_ms']:6.2f} ms/step ({figures['allreduce_share']:5.1%} of the step),"
                 f" before it {figures['waiting_ms']:6.1f} ms waiting for the slower rank" if figures["ranks"] > 1 else "")
    return (f"  {layout_name(figures):>18}: {figures['tokens_per_s']:9,.0f} tokens/s  {figures['ms_per_step']:8.1f} ms/step"
            f"   first loss {figures['first_loss']:.6f}{allreduce}")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="npllm bench mpi", description=description(__doc__))
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="model shape (default tiny)")
    parser.add_argument("--steps", type=at_least_one, default=None, help="timed steps (default: 10 tiny, 5 small)")
    parser.add_argument("--warmup", type=at_least_one, default=2, help="untimed steps before the timed ones (default 2)")
    parser.add_argument("--repeats", type=at_least_one, default=1,
                        help="alternate the layouts this many times and report medians (default 1)")
    parser.add_argument("--check-ranks", type=int, default=4,
                        help="then run this many ranks × 1 thread, oversubscribed, as a functional check (0: none)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of all figures")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=at_least_one, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    steps = args.steps or (10 if args.preset == "tiny" else 5)
    if args.child:
        figures = measure(args.preset, steps, args.warmup, args.threads)
        if figures is not None:
            print(json.dumps(figures))
        return 0
    if args.check_ranks < 0 or args.check_ranks == 1:
        parser.error(f"--check-ranks must be 0 (none) or at least 2, got {args.check_ranks}")
    launcher = mpiexec()
    if launcher is None:
        parser.error("needs mpiexec: pip install 'npllm[mpi]' (mpi4py, and MPICH with its mpiexec)")

    runs = {layout: [] for layout in LAYOUTS}
    for _ in range(args.repeats):
        for ranks, threads in LAYOUTS:
            runs[ranks, threads].append(measure_job(launcher, ranks, threads, args.preset, steps, args.warmup))
    results = {layout: {**figures[0], **{key: float(np.median([run[key] for run in figures]))
                                         for key in ("ms_per_step", "tokens_per_s", "allreduce_ms", "allreduce_share",
                                                     "waiting_ms")}}
               for layout, figures in runs.items()}
    preset = PRESETS[args.preset]
    repeats = f", median of {args.repeats} alternating runs" if args.repeats > 1 else ""
    print(f"preset {args.preset}: global batch {preset['batch_size']} × {preset['context_length']} tokens,"
          f" gradient {results[LAYOUTS[0]]['gradient_mb']:.1f} MB{repeats}")
    for figures in results.values():
        print(report_line(figures))

    def ratio(a, b):  # the median of the side-by-side ratios
        return float(np.median([x["tokens_per_s"] / y["tokens_per_s"] for x, y in zip(runs[a], runs[b])]))

    summary = {"preset": args.preset, "repeats": args.repeats,
               "layouts": {layout_name(figures): figures for figures in results.values()},
               "ranks_vs_threads": ratio((2, 1), (1, 2)), "ranks_vs_one": ratio((2, 1), (1, 1))}
    print(f"  2 ranks × 1 thread vs 1 rank × 2 threads: {summary['ranks_vs_threads']:.2f}x tokens/s;"
          f" vs 1 rank × 1 thread: {summary['ranks_vs_one']:.2f}x")
    if args.check_ranks:
        check = measure_job(launcher, args.check_ranks, 1, args.preset, steps, args.warmup)
        summary["check"] = check
        print(f"functional check, {layout_name(check)} oversubscribed (not a speed):")
        print(report_line(check))
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
