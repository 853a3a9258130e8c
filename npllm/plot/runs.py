"""Training curves: a run's ``metrics.jsonl`` as four panels, several runs overlaid.

The training loop (``npllm.training.loop``) appends one JSON object per step
to the run folder's ``metrics.jsonl``: ``step``, ``train_loss``, ``lr``,
``grad_norm``, what the step counted (``tokens``; ``masked`` for a BERT,
``examples`` for a classifier) and, at each evaluation, ``val_loss``.  The
panels:

- loss against steps: the training loss of each step (noisy: one batch) and
  the validation loss at each evaluation (the number to watch);
- the same against what the model has seen (the running sum of the counts),
  the fair axis to compare runs with different batch sizes;
- the learning rate: warm-up, then the cosine decay;
- the gradient's global norm before clipping: spikes show instability.

Runs are told apart by colour and labelled by name (their folders', unless
given).  A panel a log cannot fill (a run from before the loop logged its
gradient norm) says so in its title instead of showing an empty frame.
"""

import json
from pathlib import Path

import numpy as np

from npllm.plot import PlotError, new_figure, save
from npllm.training.loop import METRICS_FILE

COUNTED = ("tokens", "masked", "examples")  # what a step may count, by objective (``Objective.unit``)


def read_metrics(run) -> list[dict]:
    """The records of ``run``'s ``metrics.jsonl`` (``run`` is a run folder or the file itself), in step order."""
    path = Path(run)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise PlotError(f"{path}: no training log here (a run folder of npllm train, distill or finetune has one)")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise PlotError(f"{path}, line {number}: not a JSON record ({error.msg})") from None
        if not isinstance(record, dict) or "step" not in record or "train_loss" not in record:
            raise PlotError(f"{path}, line {number}: not a record of npllm's training loop (no step and train_loss)")
        records.append(record)
    if not records:
        raise PlotError(f"{path}: the log is empty (the run has not finished a step)")
    return records


def run_labels(runs) -> list[str]:
    """Each run's folder name, or its whole path when two runs share a name."""
    names = [Path(run).name or str(run) for run in runs]
    return names if len(set(names)) == len(names) else [str(run) for run in runs]


def plot_runs(runs, out=None, labels=None):
    """The four panels for the runs (folders or metrics files), labelled ``labels`` or by folder; saved to ``out``."""
    labels = list(labels) if labels else run_labels(runs)
    if len(labels) != len(runs):
        raise PlotError(f"plot: {len(labels)} labels for {len(runs)} runs (`label` once per run, in order)")
    return plot_metrics({label: read_metrics(run) for label, run in zip(labels, runs)}, out)


def series(records, key):
    """(steps, values) of the records that hold ``key``, as float arrays."""
    kept = [record for record in records if record.get(key) is not None]
    return np.array([r["step"] for r in kept], dtype=float), np.array([r[key] for r in kept], dtype=float)


def seen(records):
    """(name, running total after each step) of what the steps counted, or (None, None) when the log has no count."""
    name = next((unit for unit in COUNTED if unit in records[-1]), None)
    if name is None:
        return None, None
    return name, np.cumsum([record.get(name, 0) for record in records], dtype=float)


def plot_metrics(runs: dict, out=None):
    """The four panels for ``runs`` (label -> the records of a metrics.jsonl); saved to ``out`` when given."""
    figure = new_figure(11, 7.5)
    from matplotlib.ticker import (
        EngFormatter,  # (matplotlib is there: new_figure checked)
    )

    by_step, by_seen, lr, grad_norm = figure.subplots(2, 2).flat
    units = set()
    for index, (label, records) in enumerate(runs.items()):
        colour = f"C{index % 10}"
        steps, train = series(records, "train_loss")
        val_steps, val = series(records, "val_loss")
        by_step.plot(steps, train, color=colour, alpha=0.35, linewidth=0.8, label=f"{label}: train")
        by_step.plot(val_steps, val, "o-", color=colour, markersize=3, label=f"{label}: validation")
        unit, totals = seen(records)
        if unit is not None:
            units.add(unit)
            at_step = dict(zip((r["step"] for r in records), totals))
            by_seen.plot(totals, train, color=colour, alpha=0.35, linewidth=0.8, label=f"{label}: train")
            by_seen.plot([at_step[s] for s in val_steps], val, "o-", color=colour, markersize=3,
                         label=f"{label}: validation")
        lr.plot(*series(records, "lr"), color=colour, label=label)
        norm_steps, norms = series(records, "grad_norm")
        if len(norm_steps):
            grad_norm.plot(norm_steps, norms, color=colour, linewidth=0.8, label=label)
    by_step.set(xlabel="step", ylabel="loss", title="loss")
    by_seen.set(xlabel=f"{' / '.join(sorted(units))} seen" if units else "",
                ylabel="loss", title="loss against what the model has seen" if units else
                "what the model has seen: not in these logs")
    lr.set(xlabel="step", ylabel="learning rate", title="learning-rate schedule")
    grad_norm.set(xlabel="step", ylabel="global norm, before clipping",
                  title="gradient norm" if grad_norm.lines else "gradient norm: not in these logs")
    for axes in (by_step, by_seen, lr, grad_norm):
        if axes.lines:
            axes.grid(alpha=0.3)
            axes.legend(fontsize="small")
    if grad_norm.lines:
        grad_norm.set_yscale("log")
    by_seen.xaxis.set_major_formatter(EngFormatter())  # 500k, 1M: counts of tokens read at a glance
    if out is not None:
        save(figure, out)
    return figure
