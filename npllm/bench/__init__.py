"""Benchmarks, run as ``npllm bench <name>``; each module has ``main(argv)`` and prints its figures.

Every benchmark times with ``timing.py``'s one stopwatch, and its counts (steps,
repeats, tokens) are flags of type ``at_least_one``, so a zero or negative count
is refused by argparse in one line before anything runs.
"""

import argparse
import importlib.util
import re


def at_least_one(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def description(docstring: str) -> str:
    """A benchmark's ``--help`` description: its docstring's first paragraph, as plain text (no ``markup``)."""
    first_paragraph = docstring.strip().split("\n\n")[0]
    return re.sub(r"``([^`]*)``", r"\1", " ".join(first_paragraph.split()))


def require_torch(parser: argparse.ArgumentParser):
    """Refuse ``--compare-torch`` in one line, before any work, when PyTorch is not installed."""
    if importlib.util.find_spec("torch") is None:
        parser.error("--compare-torch needs PyTorch, which is not installed"
                     " (the CPU build: pip install torch==2.13.0, or the wheel in /opt/wheels)")


def model_benchmark_arguments(parser: argparse.ArgumentParser, presets, compare_help: str):
    """The flags ``bench products`` and ``bench profile`` share: --preset, --compare-torch, --repeats, --json."""
    parser.add_argument("--preset", choices=sorted(presets), default="tiny", help="model shape (default tiny)")
    parser.add_argument("--compare-torch", action="store_true", help=compare_help)
    parser.add_argument("--repeats", type=at_least_one, default=3, help="alternating rounds; medians reported (default 3)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of all figures")
