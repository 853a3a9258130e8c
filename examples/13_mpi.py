"""Chapter 13. Many processes over MPI: one run on N ranks, the same curve, one Allreduce per step.

Run:  python examples/13_mpi.py                    (under a minute; steps 2-3 need the mpi extra)
      python examples/13_mpi.py --ranks 2 --steps 1000 --n-embd 128

Source: npllm/runtime/mpi.py (ranks, the Allreduce, agreeing on failures),
npllm/training/loop.py (the step that calls it), npllm/bench/mpi.py (``npllm bench mpi``);
the README's "Many processes and machines: MPI".

1. ``npllm train`` in one process (a subprocess): the reference curve, and this machine's
   training speed, which step 4's model reads.
2. The same command under ``mpiexec -n N``: every rank builds the same model, keeps its
   rows of every global batch and sums the gradients with one Allreduce, so the two loss
   curves agree to float32 summation order (printed side by side).
3. What the Allreduce costs here: ``npllm bench mpi``'s measurement of the step, the time
   inside the Allreduce and its share.
4. The ring-allreduce scaling model with numbers: compute shrinks as 1/N, the ring's
   2 (N - 1) / N x 4P bytes per machine do not, so the speed-up flattens; gradient
   accumulation moves the crossover out.

Without mpi4py and mpiexec steps 2 and 3 print how to install them
(``pip install 'npllm[mpi]'``) and step 4 still runs.
"""

import argparse
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from npllm.bench.mpi import measure_job, mpiexec
from npllm.plot.runs import read_metrics
from npllm.training.pretrain import load_model

GPT2_PARAMETERS = 124_439_808  # GPT-2 small, the scale the model is also read at
LINKS = {"1 Gbit/s": 1e9 / 8, "10 Gbit/s": 10e9 / 8}  # bytes per second


def train_command(args, out_dir) -> list[str]:
    """``npllm train`` with the chapter's tiny settings, as a command line."""
    return [sys.executable, "-m", "npllm.cli", "train", "--data", args.data, "--vocab-size", str(args.vocab_size),
            "--n-layer", str(args.n_layer), "--n-head", "2", "--n-embd", str(args.n_embd),
            "--context-length", str(args.context_length), "--batch-size", str(args.batch_size),
            "--max-steps", str(args.steps), "--warmup-steps", str(min(10, args.steps)),
            "--eval-interval", str(args.steps), "--eval-windows", str(args.batch_size), "--lr", "3e-3",
            "--quiet", "--out", str(out_dir)]


def run(command) -> float:
    """Run a command line to the end (its output shown indented); its wall time in seconds."""
    started = time.perf_counter()
    done = subprocess.run(command, check=False, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in done.stdout.splitlines():
        print(f"   | {line}")
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed:\n{done.stderr.strip()}")
    return time.perf_counter() - started


def ring_allreduce_seconds(parameters, machines, bytes_per_second) -> float:
    """A ring: each machine sends and receives 2 (N - 1) / N of the float32 gradient's 4P bytes."""
    return 2 * (machines - 1) / machines * 4 * parameters / bytes_per_second


def scaling_model(parameters, flops_per_second, tokens, accumulation=1):
    """Print compute and allreduce per step, the speed-up and the crossover N*, for N machines and two links."""
    one_machine = 6 * parameters * tokens / flops_per_second  # T1: one micro-batch's forward and backward
    print(f"   P = {parameters:,} parameters ({4 * parameters / 1e6:,.1f} MB of gradient), {tokens:,} tokens per"
          f" micro-batch: one machine computes a micro-batch in T1 = 6 P b / R = {one_machine:.3g} s")
    for link, bandwidth in LINKS.items():
        cells = []
        for machines in (2, 8, 64):
            compute = accumulation * one_machine / machines
            allreduce = ring_allreduce_seconds(parameters, machines, bandwidth)
            cells.append(f"N={machines}: {compute:.3g} / {allreduce:.3g} s, {accumulation * one_machine / (compute + allreduce):.1f}x")
        crossover = 1 + accumulation * one_machine * bandwidth / (8 * parameters)
        print(f"   {link:>9}: compute / allreduce per step, speed-up   " + ";  ".join(cells)
              + f";  crossover N* = {crossover:,.1f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="docs", help="the text both runs train on: docs, stdlib, a text file")
    parser.add_argument("--ranks", type=int, default=2, help="processes of the MPI run")
    parser.add_argument("--steps", type=int, default=200, help="training steps of each run")
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-embd", type=int, default=64)
    parser.add_argument("--context-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16, help="windows of the global batch, split over the ranks")
    parser.add_argument("--bench-steps", type=int, default=5, help="timed steps of the Allreduce measurement")
    parser.add_argument("--out", default="runs/textbook/13-mpi", help="folder for the two runs")
    args = parser.parse_args(argv)
    out = Path(args.out)

    print(f"1. npllm train in one process, {args.steps} steps of {args.batch_size} windows ...")
    alone_seconds = run(train_command(args, out / "one-process"))
    alone = [record for record in read_metrics(out / "one-process") if "train_loss" in record]
    tokens_per_second = float(np.median([record["tokens_per_s"] for record in alone[len(alone) // 2:]]))
    print(f"   {alone_seconds:.1f} s; {tokens_per_second:,.0f} tokens/s over the second half")

    launcher = mpiexec()
    results = {"one_process": [r["train_loss"] for r in alone]}
    if importlib.util.find_spec("mpi4py") is None or launcher is None:
        print("2-3. (no MPI here: mpiexec and mpi4py come with the mpi extra: pip install 'npllm[mpi]'; then"
              f" mpiexec -n {args.ranks} npllm train ... runs any training command on {args.ranks} processes)")
    else:
        print(f"2. the same command under mpiexec -n {args.ranks} ...")
        ranks_seconds = run([launcher, "-n", str(args.ranks), *train_command(args, out / f"{args.ranks}-ranks")])
        ranked = [record for record in read_metrics(out / f"{args.ranks}-ranks") if "train_loss" in record]
        results["ranks"] = [r["train_loss"] for r in ranked]
        print(f"   {ranks_seconds:.1f} s against {alone_seconds:.1f} s in one process (both counting Python's start and"
              " the corpus read: on a short run a large part)")
        print(f"   step   1 process   {args.ranks} ranks   relative difference")
        for a, b in zip(alone, ranked):
            if a["step"] in (1, 2, 3) or a["step"] % max(args.steps // 5, 1) == 0 or a["step"] == args.steps:
                print(f"   {a['step']:4d}   {a['train_loss']:9.5f}   {b['train_loss']:7.5f}"
                      f"   {abs(a['train_loss'] - b['train_loss']) / a['train_loss']:.1e}")
        worst = max(abs(a["train_loss"] - b["train_loss"]) / a["train_loss"] for a, b in zip(alone, ranked))
        results["worst_relative_difference"] = worst
        print(f"   the largest relative difference over {len(ranked)} steps: {worst:.1e} (float32 sums in another order)")
        print(f"3. the Allreduce's cost (npllm bench mpi --preset tiny: 16 x 128 tokens, a 4-block 128-wide GPT),"
              f" {args.ranks} ranks x 1 thread ...")
        figures = measure_job(launcher, args.ranks, 1, "tiny", args.bench_steps, 1)  # (1 untimed step first)
        results["allreduce"] = figures
        print(f"   a step {figures['ms_per_step']:.0f} ms, of which {figures['allreduce_ms']:.1f} ms"
              f" ({figures['allreduce_share']:.1%}) inside the Allreduce of {figures['gradient_mb']:.1f} MB, and"
              f" {figures['waiting_ms']:.1f} ms before it waiting for the slower rank")

    model, _ = load_model(out / "one-process", log=lambda line: None)
    parameters, flops_per_token = model.num_parameters(), model.flops_per_token()
    flops_per_second = tokens_per_second * flops_per_token
    print(f"4. the scaling model: R = {tokens_per_second:,.0f} tokens/s x {flops_per_token:,}"
          f" FLOP per token = {flops_per_second / 1e9:.1f} GFLOP/s, one machine's speed as step 1 measured it")
    print("   a step on N machines = 6 P b / (N R) of compute + 2 (N - 1) / N x 4P / W of ring allreduce")
    print(f"   this chapter's GPT, {args.batch_size} x {args.context_length} tokens per micro-batch:")
    scaling_model(parameters, flops_per_second, args.batch_size * args.context_length)
    print("   GPT-2 124M at the same R, 8 x 1,024 tokens per micro-batch:")
    scaling_model(GPT2_PARAMETERS, flops_per_second, 8 * 1024)
    print("   the same with 8 micro-batches of accumulation before each Allreduce:")
    scaling_model(GPT2_PARAMETERS, flops_per_second, 8 * 1024, accumulation=8)
    print("   P cancels from compute / allreduce: what decides is the tokens a machine computes per byte of link;"
          " a GPU's R is ~100x this CPU's, so it meets the crossover ~100x sooner")
    results["parameters"], results["flops_per_second"] = parameters, flops_per_second
    return results


if __name__ == "__main__":
    main()
