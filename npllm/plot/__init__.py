"""Pictures of what the library computes: training curves, attention maps, histograms, a confusion matrix.

A reader sees a loss fall, a learning rate warm up and decay, or a head
attend to the previous token faster in a picture than in a column of
numbers.  Every figure here is drawn by matplotlib, the optional ``plot``
extra (``pip install 'npllm[plot]'``), and only when a picture is asked
for: ``import npllm`` never imports it.

- ``runs.py``: a run's ``metrics.jsonl`` (the training loop's log) as loss
  against steps and tokens seen, the learning rate and the gradient norm,
  several runs overlaid (``npllm plot``);
- ``attention.py``: a model's attention weights for a prompt, one heat map per
  layer and head, labelled with the tokens (``npllm attention``);
- ``charts.py``: a histogram (the tokenizer's token lengths) and a confusion
  matrix (a classifier's mistakes).

Each function builds a ``matplotlib.figure.Figure`` object itself, never
through ``pyplot``, so no display, window or global figure state is touched
(the Agg renderer writes the PNG), and returns it: what a figure plots can
be read back from its lines and images, which is how the tests check that
a picture shows the run's own numbers.  ``save`` writes a figure atomically
(``npllm.io.atomic``).  The figure's size in pixels is its ``figsize`` times
``DPI``, always: nothing is cropped.
"""

import io
from pathlib import Path

from npllm.errors import NpllmError
from npllm.io.atomic import atomic_write

DPI = 100  # pixels per inch of figure size: a (8, 6) figure is an 800 x 600 PNG
MISSING_MATPLOTLIB = "pictures need matplotlib, the plot extra: pip install 'npllm[plot]' (or pip install matplotlib)"


class PlotError(NpllmError):
    """A picture that cannot be drawn: matplotlib missing, a run without metrics, a file that is not a log."""


def matplotlib_available() -> bool:
    """True when matplotlib can be imported (the chapters print a note instead of a picture otherwise)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def new_figure(width, height):
    """An empty ``Figure`` of ``width`` x ``height`` inches, not attached to any display; PlotError without matplotlib."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError(MISSING_MATPLOTLIB) from None
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def save(figure, path) -> Path:
    """Write ``figure`` to ``path`` atomically, in the format its suffix names (.png, .svg, .pdf); return the path."""
    path = Path(path)
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format=path.suffix.lstrip(".").lower() or None, dpi=DPI)
    except ValueError as error:  # an unknown format
        raise PlotError(f"{path}: cannot write this kind of picture ({error})") from None
    with atomic_write(path) as file:
        file.write(buffer.getvalue())
    return path


def picture(path, draw, *args, log=print, **options):
    """``draw(*args, out=path, **options)`` and log where the picture went; without matplotlib, log a note instead.

    For the examples: a chapter still runs, and teaches in numbers, where matplotlib is not installed.
    """
    if not matplotlib_available():
        log(f"   (no picture {Path(path).name}: {MISSING_MATPLOTLIB})")
        return None
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure = draw(*args, out=path, **options)
    log(f"   picture: {path}")
    return figure
