"""Two pictures the chapters need: a histogram of lengths, and a classifier's confusion matrix.

- ``histogram``: how many of each length, for one or more collections side
  by side (the tokenizer chapter: the vocabulary's tokens and the tokens of
  an encoded text, by their length in bytes: a BPE vocabulary holds many
  long tokens, but text is mostly spelled with short ones);
- ``confusion_matrix``: row = the true label, column = the predicted one,
  each cell's count written in it; a good classifier is a bright diagonal,
  and the bright cells off it name the labels it mixes up.
"""

import numpy as np

from npllm.plot import new_figure, save


def histogram(collections: dict, xlabel: str, out=None, title=""):
    """Bars of the share of each integer value in each collection (name -> integers); saved to ``out``."""
    figure = new_figure(8, 4.5)
    axes = figure.subplots()
    largest = max(int(np.max(values)) for values in collections.values())
    edges = np.arange(0.5, largest + 1.5)  # one bin per integer 1 .. largest
    width = 0.8 / len(collections)
    for index, (name, values) in enumerate(collections.items()):
        counts, _ = np.histogram(values, bins=edges)
        axes.bar(edges[:-1] + 0.5 + (index - (len(collections) - 1) / 2) * width, counts / counts.sum(),
                 width=width, label=f"{name} ({len(values):,})", color=f"C{index}")
    axes.set(xlabel=xlabel, ylabel="share", title=title)
    axes.legend()
    axes.grid(alpha=0.3, axis="y")
    if out is not None:
        save(figure, out)
    return figure


def confusion_matrix(matrix, labels, out=None, title="confusion matrix"):
    """The (n, n) count matrix (rows true, columns predicted) as a labelled heat map; saved to ``out``."""
    matrix = np.asarray(matrix)
    side = 2.0 + 0.55 * len(labels)
    figure = new_figure(side + 1.5, side)
    axes = figure.subplots()
    image = axes.imshow(matrix, cmap="Blues", interpolation="nearest")
    ticks = np.arange(len(labels))
    axes.set_xticks(ticks, labels, rotation=60, ha="right")
    axes.set_yticks(ticks, labels)
    axes.set(xlabel="predicted label", ylabel="true label", title=title)
    darkest = matrix.max() or 1
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(column, row, str(count), ha="center", va="center", fontsize="small",
                  color="white" if count > darkest / 2 else "black")
    figure.colorbar(image, ax=axes, label="texts")
    if out is not None:
        save(figure, out)
    return figure
