"""The training loop: one loop for every stage, every model and every objective.

One training step, as every neural network since backpropagation takes it:

    for each of grad_accum micro-batches:
        loss = objective.loss(model, batch)      on every core, a slice of the batch each
        loss.backward()                          d loss / d every trainable parameter, added up
    clip the gradient's global norm              one bad batch cannot throw the weights far
    optimizer step at the scheduled rate         e.g. AdamW, warm-up then cosine decay

The loop knows nothing of the model or of what it learns: a recipe
(``pretrain.py`` today; fine-tuning and distillation next) builds a
``TrainingRun`` from its own config (the model, the objective, the
optimizer over the parameters it trains, the schedule, the batches) and
hands it over.  Around the step, the loop owns what makes a run usable
rather than a demo:

- evaluation on held-out batches every ``eval_interval`` steps (the number to
  watch: train loss alone cannot show overfitting);
- ``metrics.jsonl`` in the run folder, one JSON object per step: the step,
  its training loss, learning rate, gradient norm (before clipping: spikes
  show instability), what it counted (``tokens``, ``examples`` or ``masked``,
  the objective's unit; their running sum is the x axis "tokens seen") and
  its speed; at evaluations the held-out loss and the recipe's figures;
- checkpoints written whole and atomically (``checkpoint.py``), holding the
  weights, the optimizer's state, the step, every random generator's state
  and the recipe's own state (its config, the tokenizer), so ``restore``
  continues *bit for bit* as if the run had never stopped;
- Ctrl-C (or SIGTERM, as a cluster's scheduler sends) finishes the current
  step, saves, and returns;
- a NaN or infinite loss stops the run before it can be saved, so the last
  good checkpoint stays intact.

Gradient accumulation runs ``grad_accum`` micro-batches per step and
averages their gradients, training with an effective batch ``grad_accum``
times larger in the memory of one.  Each micro-batch is shared by the
threads of ``npllm.runtime.data_parallel.DataParallel``, weighted by the targets each
slice counts.

Under ``mpiexec -n N`` the same loop runs on every rank
(``npllm.runtime.mpi``, reached as ``run.parallel.ranks``): each rank keeps
its rows of every micro-batch, the gradients are summed by one Allreduce
per step, which also carries the loss and the votes to stop, and rank 0
alone writes.  With one process every one of those calls does nothing.

Errors name settings in backquotes (`` `lr` ``), as ``npllm.errors`` says;
the command line shows them as flags.

Left out on purpose: mixed precision, and evaluating more than the
objective's loss (a recipe measures accuracy and the like itself, in
``TrainingRun.evaluation_metrics``, which the loop logs).
"""

import json
import math
import re
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from tqdm import tqdm

from npllm.errors import NpllmError
from npllm.io.atomic import FileWriteError, atomic_write_text
from npllm.io.safetensors import CheckpointError
from npllm.optim import clip_grad_norm, set_lr
from npllm.runtime.data_parallel import DataParallel
from npllm.runtime.mpi import world
from npllm.training.checkpoint import Checkpoint, save_checkpoint
from npllm.training.objectives import Objective

METRICS_FILE = "metrics.jsonl"

# What ``save`` writes into state.json for the loop itself; a recipe adds its own keys beside them.
LOOP_STATE_KEYS = ("step", "optimizer", "batches_rng", "dropout_rngs")


class TrainingError(NpllmError):
    """A run that cannot go on: the message is one line for the user."""


@dataclass
class LoopSettings:
    """How long to train and how: the recipe fills these from its own config."""

    max_steps: int
    grad_accum: int = 1          # micro-batches per step
    grad_clip: float = 1.0       # the gradient's global norm is clipped to this
    eval_interval: int = 250     # evaluate and checkpoint every this many steps


@dataclass
class TrainingRun:
    """The live objects of a run, built fresh or restored, and what the loop needs to save it.

    ``batches`` gives ``next_batch()`` (a dict of arrays) and the
    ``state_dict()`` / ``load_state_dict()`` of its random generator;
    ``evaluation_batches()`` yields the same held-out batches every time.
    ``tokenizer`` (anything with ``save(path)``) is saved beside the weights.
    A recipe subclasses this to keep its own objects beside the loop's, and
    overrides ``recipe_state`` to save what it needs to rebuild them.
    """

    model: object
    objective: Objective
    optimizer: object
    schedule: Callable[[int], float]
    batches: object
    evaluation_batches: Callable[[], Iterable[dict]]
    parallel: DataParallel
    settings: LoopSettings
    out_dir: Path
    tokenizer: object = None
    evaluation_objective: Objective = None  # what evaluation measures (default: the objective itself)
    step: int = 0  # steps completed

    def recipe_state(self) -> dict:
        """The recipe's part of state.json (plain JSON, keys beside ``LOOP_STATE_KEYS``)."""
        return {}

    def evaluation_metrics(self) -> dict:
        """Held-out figures the recipe measures beside the loss at each evaluation (name -> float); none here.

        They go into the step's metrics.jsonl record and the progress bar
        (masked-LM pre-training reports ``val_accuracy``, its masked-token accuracy).
        """
        return {}


def train(run: TrainingRun, progress=True, log=print) -> TrainingRun:
    """Train ``run`` until ``settings.max_steps`` (or Ctrl-C or SIGTERM, which save first).

    Under MPI every rank calls this; rank 0's recipe state (its settings,
    its corpus's fingerprint) must be every rank's, and rank 0 alone shows
    the progress bar and logs.
    """
    ranks = run.parallel.ranks
    ranks.require_same(_comparable_settings(run), "setting")
    stop = _StopRequest()
    with stop.on_signals():
        _loop(run, stop, progress and ranks.is_writer, log if ranks.is_writer else _silent)
    return run


def _silent(line):
    """The log of a rank other than 0: rank 0 speaks for the job."""


def _comparable_settings(run: TrainingRun) -> dict:
    """The recipe's state as one flat dict (its config's fields by name), for comparing the ranks.

    ``workers`` is left out: each rank uses the threads of its own machine.
    """
    state = json.loads(json.dumps(run.recipe_state(), default=str))
    flat = {**state.pop("config", {}), **state}
    flat.pop("workers", None)
    return flat


def prepare_run_folder(out_dir):
    """Create a new run's folder and start its metrics afresh (on rank 0: the others write nothing)."""
    def prepare():
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / METRICS_FILE).unlink(missing_ok=True)

    world().on_writer(prepare)


def _loop(run: TrainingRun, stop, progress, log):
    settings, unit = run.settings, run.objective.unit
    metrics_path = Path(run.out_dir) / METRICS_FILE
    bar = tqdm(total=settings.max_steps, initial=run.step, disable=not progress, unit="step", dynamic_ncols=True)
    run.model.train()
    while run.step < settings.max_steps and not stop.agreed:
        started = time.perf_counter()
        lr = run.schedule(run.step)
        loss, counted, grad_norm = train_step(run, lr, stop)
        record = {"step": run.step + 1, "train_loss": loss, "lr": lr, "grad_norm": grad_norm, unit: counted,
                  f"{unit}_per_s": counted / (time.perf_counter() - started)}
        run.step += 1
        evaluating = run.step % settings.eval_interval == 0 or run.step == settings.max_steps
        if evaluating:
            record["val_loss"] = evaluate(run)
            _stop_unless_finite("validation loss", record["val_loss"], run.step, run.out_dir)
            record.update(run.evaluation_metrics())
        run.parallel.ranks.on_writer(lambda: _append_metrics(metrics_path, record))  # before saving: a saved step has its record
        if evaluating:
            save(run)
        bar.update(1)
        bar.set_postfix({"loss": f"{loss:.3f}", "lr": f"{lr:.2e}", f"{unit}/s": f"{record[f'{unit}_per_s']:,.0f}",
                         **({"val": f"{record['val_loss']:.3f}"} if "val_loss" in record else {}),
                         **{name.removeprefix("val_"): f"{value:.3f}" for name, value in record.items()
                            if name.startswith("val_") and name != "val_loss"}})
    bar.close()
    if stop.agreed and run.step < settings.max_steps:
        save(run)
        log(f"interrupted: saved step {run.step} in {run.out_dir}; continue it with `resume`")


def train_step(run: TrainingRun, lr: float, stop=None) -> tuple[float, int, float]:
    """One optimizer step over ``grad_accum`` micro-batches: the mean loss, the targets counted, the gradient norm.

    Each rank draws the whole micro-batch (the sampler stays the same on
    every rank) and learns from its rows, weighted by their share of the
    batch's targets; the sum over the ranks, one Allreduce, is the gradient
    of the whole batch.  The votes to stop travel with it, so every rank
    agrees on whether this step is the last (``stop``: the loop's stop
    request; None for a step taken outside the loop, as ``npllm bench mpi`` does).
    The norm is the gradient's before clipping, the same on every rank.
    """
    accumulate, ranks = run.settings.grad_accum, run.parallel.ranks
    set_lr(run.optimizer, lr)
    run.optimizer.zero_grad()
    total, counted = 0.0, 0
    for _ in range(accumulate):
        batch = run.batches.next_batch()
        rows, share = ranks.shard(batch, run.objective)
        if share:
            total += share * run.parallel.forward_backward(rows, run.objective, scale=share / accumulate)
        counted += run.objective.count(batch)
    total, votes = ranks.sum_gradients(run.optimizer, [total, float(stop is not None and stop.requested)])
    if stop is not None:
        stop.agreed = votes > 0
    _stop_unless_finite("loss", total, run.step + 1, run.out_dir)  # (the same sum on every rank: all stop)
    grad_norm = clip_grad_norm([p for p in run.model.parameters() if p.requires_grad], run.settings.grad_clip)
    run.optimizer.step()
    return total / accumulate, counted, grad_norm


def _stop_unless_finite(what: str, value: float, step: int, out_dir):
    """Raise TrainingError for a NaN or inf loss, before anything can be saved."""
    if not math.isfinite(value):
        raise TrainingError(f"{what} became {value} at step {step}; stopped without saving,"
                            f" so the last good checkpoint in {out_dir} is intact (try a lower `lr`)")


def evaluate(run: TrainingRun, objective: Objective = None) -> float:
    """The mean loss over the held-out batches, each weighted by its count (dropout off, no graph).

    The loss is ``objective``'s, else the run's ``evaluation_objective``, else
    the one it trains on (a distilled student is measured on the text alone,
    so its figure compares with its teacher's and with a student trained
    from scratch).

    Under MPI each rank measures its rows of every batch; the ranks' parts
    are summed (one Allreduce) before the batches are averaged.
    """
    objective = objective or run.evaluation_objective or run.objective
    ranks = run.parallel.ranks
    run.model.eval()
    losses, weights = [], []
    for batch in run.evaluation_batches():
        rows, share = ranks.shard(batch, objective, every_rank=False)
        losses.append(share * run.parallel.loss(rows, objective) if share else 0.0)  # on every core, as training
        weights.append(objective.count(batch))
    run.model.train()
    return float(np.average(ranks.sum(np.array(losses)), weights=weights))


# --- saving and restoring ---------------------------------------------------
def save(run: TrainingRun):
    """Write the whole run (weights, optimizer state, step, every RNG, the recipe's state) atomically.

    Under MPI every rank calls this: each sends its dropout generators' states
    to rank 0, which writes the checkpoint (the weights and the optimizer are
    the same on every rank); a failure to write stops every rank.
    """
    ranks = run.parallel.ranks
    dropout_rngs = ranks.gather_to_writer(generator_states(run.parallel))

    def write():
        optimizer_arrays, optimizer_rest = flatten_optimizer_state(run.optimizer.state_dict())
        state = {
            "step": run.step,
            "optimizer": optimizer_rest,
            "batches_rng": run.batches.state_dict(),
            "dropout_rngs": _by_rank(dropout_rngs),
            **run.recipe_state(),
        }
        save_checkpoint(run.out_dir, run.model.state_dict(), optimizer_arrays, state, run.tokenizer)

    ranks.on_writer(write)


def require_loop_state(checkpoint: Checkpoint):
    """Refuse, in one line, a checkpoint whose state.json lacks what ``restore`` reads."""
    missing = [key for key in LOOP_STATE_KEYS if key not in checkpoint.train_state]
    if missing:
        raise CheckpointError(f"{checkpoint.folder}: not a checkpoint written by npllm's training loop"
                              f" (state.json lacks {', '.join(missing)})")


def restore(run: TrainingRun, checkpoint: Checkpoint):
    """Put ``run`` where ``checkpoint`` left it: weights, optimizer, step, every generator, metrics."""
    require_loop_state(checkpoint)
    state = checkpoint.train_state
    try:
        run.model.load_state_dict(checkpoint.model_state)
        run.optimizer.load_state_dict(unflatten_optimizer_state(checkpoint.optimizer_state, state["optimizer"]))
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{checkpoint.folder}: does not fit this model ({error})") from error
    run.batches.load_state_dict(state["batches_rng"])
    set_generator_states(run.parallel, _of_rank(state["dropout_rngs"], run.parallel.ranks.rank))
    run.step = state["step"]
    run.parallel.ranks.on_writer(lambda: _drop_metrics_after(Path(run.out_dir) / METRICS_FILE, run.step))


def flatten_optimizer_state(state: dict) -> tuple[dict, dict]:
    """Split an optimizer state_dict into named arrays (for safetensors) and the JSON rest."""
    arrays, rest = {}, {"param_groups": state["param_groups"], "state": []}
    for index, group_state in enumerate(state["state"]):
        scalars = {}
        for key, value in group_state.items():
            if isinstance(value, np.ndarray):
                arrays[f"{index}.{key}"] = value
            else:
                scalars[key] = value
        rest["state"].append(scalars)
    return arrays, json.loads(json.dumps(rest, default=_json_number))


def unflatten_optimizer_state(arrays: dict, rest: dict) -> dict:
    """The inverse of ``flatten_optimizer_state``."""
    state = [dict(scalars) for scalars in rest["state"]]
    for name, array in arrays.items():
        index, key = name.split(".", 1)
        state[int(index)][key] = array
    return {"param_groups": rest["param_groups"], "state": state}


def _json_number(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint's JSON state")


def generator_states(parallel: DataParallel) -> dict:
    """The state of every random generator (dropout masks) in the model and its replicas, by module name.

    The model's modules go by their own names, replica k's (k >= 1) by ``replica{k}.`` and theirs.
    """
    return {name: generator.bit_generator.state for name, generator in _named_generators(parallel)}


def set_generator_states(parallel: DataParallel, states: dict):
    """Restore ``generator_states``; a replica the checkpoint has no state for (more workers now) keeps its own."""
    generators = dict(_named_generators(parallel))
    for name, state in states.items():
        if name in generators:  # (a replica of a run that had more workers than this one has no generator here)
            generators[name].bit_generator.state = state


def _by_rank(states: list[dict]) -> dict:
    """Every rank's generator states in one dict: rank 0's by their names, rank r's (r >= 1) under ``rank{r}.``."""
    return {f"rank{rank}.{name}" if rank else name: state
            for rank, own in enumerate(states) for name, state in own.items()}


def _of_rank(states: dict, rank: int) -> dict:
    """The states ``_by_rank`` stored for ``rank`` (none for a rank the saved run did not have: it keeps its own)."""
    if rank == 0:
        return {name: state for name, state in states.items() if not re.match(r"rank\d+\.", name)}
    prefix = f"rank{rank}."
    return {name.removeprefix(prefix): state for name, state in states.items() if name.startswith(prefix)}


def _named_generators(parallel: DataParallel):
    for k, replica in enumerate(parallel.replicas):
        prefix = f"replica{k}." if k else ""
        for name, generator in replica.named_generators():
            yield prefix + name, generator


def training_time(out_dir) -> tuple[float, int]:
    """The seconds the run's steps took (evaluation and saving left out) and what they counted, from metrics.jsonl.

    Every step's record carries its count and its count per second, so the
    sum covers every leg of a resumed run; a run that logged nothing gives (0, 0).
    """
    path = Path(out_dir) / METRICS_FILE
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if path.exists() else []
    seconds = counted = 0
    for record in records:
        for name, rate in record.items():
            unit = name.removesuffix("_per_s")
            if name.endswith("_per_s") and rate > 0:  # (a step that counted nothing tells no time)
                seconds += record[unit] / rate
                counted += record[unit]
    return seconds, counted


def _append_metrics(path: Path, record: dict):
    try:
        with open(path, "a", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")
    except OSError as error:
        raise FileWriteError.of(path, error) from error


def _drop_metrics_after(path: Path, step: int):
    """Forget metrics of steps after the checkpoint: the resumed run will log them again.

    A last line cut short (the process was killed while writing it) is dropped with them.
    """
    if not path.exists():
        return
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                break
            raise TrainingError(f"{path}, line {number}: not a JSON record ({error.msg})") from error
        if record["step"] <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


class _StopRequest:
    """Ctrl-C or SIGTERM sets a flag; the loop finishes its step, saves, and returns. A second signal aborts.

    ``requested``: a signal reached this process; ``agreed``: some rank's did
    (known to all after the step's Allreduce), which is what ends the loop, so
    every rank leaves after the same step.
    """

    def __init__(self):
        self.requested = False
        self.agreed = False

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    @contextmanager
    def on_signals(self):
        with _SignalHandler(signal.SIGINT, self._handle), _SignalHandler(signal.SIGTERM, self._handle):
            yield


class _SignalHandler:
    """Install a signal handler for a ``with`` block (only possible in the main thread)."""

    def __init__(self, signum, handler):
        self.signum, self.handler, self.previous = signum, handler, None

    def __enter__(self):
        try:
            self.previous = signal.signal(self.signum, self.handler)
        except ValueError:  # not the main thread: leave Ctrl-C as it is
            self.previous = None
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(self.signum, self.previous)
        return False
