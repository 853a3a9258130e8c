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

``panels`` picks some of them (the README's picture is the loss alone).

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
PANELS = ("loss", "seen", "lr", "grad_norm")  # by steps, by what was seen, the learning rate, the gradient norm
PANEL_INCHES = (5.5, 3.75)


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


def plot_runs(runs, out=None, labels=None, panels=PANELS):
    """The ``panels`` for the runs (folders or metrics files), labelled ``labels`` or by folder; saved to ``out``."""
    labels = list(labels) if labels else run_labels(runs)
    if len(labels) != len(runs):
        raise PlotError(f"plot: {len(labels)} labels for {len(runs)} runs (`label` once per run, in order)")
    return plot_metrics({label: read_metrics(run) for label, run in zip(labels, runs)}, out, panels)


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


def plot_metrics(runs: dict, out=None, panels=PANELS):
    """``panels`` (of ``PANELS``, in that order) for ``runs`` (label -> a metrics.jsonl's records); saved to ``out``.

    One or two panels sit side by side, three or four in a 2 x 2 grid; each panel is ``PANEL_INCHES``.
    """
    unknown = sorted(set(panels) - set(PANELS))
    if unknown or not panels:
        raise PlotError(f"plot: `panel` must be among {', '.join(PANELS)}, got {', '.join(unknown) or 'none'}")
    panels = [name for name in PANELS if name in panels]
    rows, columns = (1, len(panels)) if len(panels) <= 2 else (2, 2)
    figure = new_figure(PANEL_INCHES[0] * columns, PANEL_INCHES[1] * rows)
    from matplotlib.ticker import EngFormatter  # (matplotlib is there: new_figure checked)

    grid = figure.subplots(rows, columns, squeeze=False).flat
    axes = dict(zip(panels, grid))
    for unused in list(grid)[len(panels):]:
        unused.set_axis_off()
    units = set()
    for index, (label, records) in enumerate(runs.items()):
        colour = f"C{index % 10}"
        steps, train = series(records, "train_loss")
        val_steps, val = series(records, "val_loss")
        if "loss" in axes:
            axes["loss"].plot(steps, train, color=colour, alpha=0.35, linewidth=0.8, label=f"{label}: train")
            axes["loss"].plot(val_steps, val, "o-", color=colour, markersize=3, label=f"{label}: validation")
        unit, totals = seen(records)
        if "seen" in axes and unit is not None:
            units.add(unit)
            at_step = dict(zip((r["step"] for r in records), totals))
            axes["seen"].plot(totals, train, color=colour, alpha=0.35, linewidth=0.8, label=f"{label}: train")
            axes["seen"].plot([at_step[s] for s in val_steps], val, "o-", color=colour, markersize=3,
                              label=f"{label}: validation")
        if "lr" in axes:
            axes["lr"].plot(*series(records, "lr"), color=colour, label=label)
        norm_steps, norms = series(records, "grad_norm")
        if "grad_norm" in axes and len(norm_steps):
            axes["grad_norm"].plot(norm_steps, norms, color=colour, linewidth=0.8, label=label)
    if "loss" in axes:
        axes["loss"].set(xlabel="step", ylabel="loss", title="loss")
    if "seen" in axes:
        axes["seen"].set(xlabel=f"{' / '.join(sorted(units))} seen" if units else "", ylabel="loss",
                         title="loss against what the model has seen" if units else
                         "what the model has seen: not in these logs")
        axes["seen"].xaxis.set_major_formatter(EngFormatter())  # 500k, 1M: counts read at a glance
    if "lr" in axes:
        axes["lr"].set(xlabel="step", ylabel="learning rate", title="learning-rate schedule")
    if "grad_norm" in axes:
        drawn = bool(axes["grad_norm"].lines)
        axes["grad_norm"].set(xlabel="step", ylabel="global norm, before clipping",
                              title="gradient norm" if drawn else "gradient norm: not in these logs")
        if drawn:
            axes["grad_norm"].set_yscale("log")
    for panel in axes.values():
        if panel.lines:
            panel.grid(alpha=0.3)
            panel.legend(fontsize="small")
    if out is not None:
        save(figure, out)
    return figure
