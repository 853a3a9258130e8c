"""The one stopwatch every benchmark uses: a call's result and its wall-clock seconds."""

import time


def timed(function, *args):
    """(result, seconds) of one call of ``function(*args)``."""
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def seconds(function, *args) -> float:
    """The wall-clock seconds of one call of ``function(*args)``."""
    return timed(function, *args)[1]
