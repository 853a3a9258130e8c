"""The one stopwatch every benchmark uses: a call's result and its wall-clock seconds."""

import time


def timed(function, *args, **kwargs):
    """(result, seconds) of one call of ``function(*args, **kwargs)``."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def seconds(function, *args, **kwargs) -> float:
    """The wall-clock seconds of one call of ``function(*args, **kwargs)``."""
    return timed(function, *args, **kwargs)[1]
