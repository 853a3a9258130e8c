"""Running large elementwise and row-wise work in cache-sized pieces, on every core.

Matrix products already use every core (BLAS has its own threads), but a
NumPy ufunc such as ``np.tanh(x, out=x)`` runs on one core and, on a large
array, streams the whole array through main memory once per call.  A fused
op that makes eight passes over a 12 MB activation therefore reads and
writes 200 MB.  Two cheap remedies, both used by ``map_rows``:

1. **Blocking.**  Cut the arrays into pieces of consecutive rows of about
   ``CHUNK_ELEMENTS`` elements (a few hundred KB, which fits in a core's L2
   cache) and make all eight passes over one piece before moving on: the
   passes then hit cache instead of memory.
2. **Threads.**  NumPy releases the GIL inside ufuncs and reductions, so
   the pieces can be shared between the calling thread and a small,
   persistent pool of helper threads (one per further core), and really
   run in parallel.  Each thread takes the next piece when it is done with
   one, so a thread slowed down by another program does less of the work.

Small arrays (fewer than two pieces) are processed directly in the calling
thread: below that, the pool's overhead would cost more than it saves.
Inside ``working_alone()`` the calling thread does every piece itself:
data-parallel training (``npllm.runtime.data_parallel``) already keeps one
thread busy per core, each with its own slice of the batch, and must not
hand pieces to helpers too (a pool thread that did would wait for a task
queued behind itself: a deadlock).
The pieces are views of the arrays, so a function that writes into its
arguments (``out=``) writes into the whole result.  Rows never straddle two
pieces, so a reduction along the last axis (softmax, layer norm) sees each
row whole.
"""

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np

from npllm.runtime.blas import cores_per_rank

CHUNK_ELEMENTS = 1 << 17  # elements per piece: 512 KB of float32
_pool = None
_this_thread = threading.local()  # .alone: map_rows in this thread uses no helpers (see working_alone)


def cores() -> int:
    """The number of cores this process may run on (under mpiexec: its share of them, ``cores_per_rank``)."""
    return cores_per_rank()


def executor() -> ThreadPoolExecutor:
    """The persistent pool of helper threads, one per core beyond the first (made on first use)."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=max(cores() - 1, 1), thread_name_prefix="npllm")
    return _pool


@contextlib.contextmanager
def working_alone():
    """Within the block, ``map_rows`` called from *this* thread does all its pieces itself."""
    before = getattr(_this_thread, "alone", False)
    _this_thread.alone = True
    try:
        yield
    finally:
        _this_thread.alone = before


def map_rows(fn, *arrays):
    """Call ``fn(*pieces)`` on matching pieces of consecutive rows (axis 0) of ``arrays``, in parallel.

    Every array must have the same number of rows; outputs that ``fn``
    writes into must be arrays (views are fine), not temporaries.  Returns
    nothing: ``fn`` works through ``out=`` and in-place updates.
    """
    rows = len(arrays[0])
    row_size = arrays[0].size // rows if rows else 1
    step = max(1, CHUNK_ELEMENTS // max(row_size, 1))
    if rows <= step:
        fn(*arrays)
        return
    map_tasks([partial(fn, *(a[start:start + step] for a in arrays)) for start in range(0, rows, step)])


def map_tasks(tasks):
    """Call each zero-argument function of ``tasks`` once, on every core: each thread takes the next one left.

    A thread slowed down by another program simply takes fewer tasks.
    Inside ``working_alone()`` this thread calls them all itself, in order.
    """
    pending = iter(tasks)

    def drain():  # (next() on a list iterator is atomic)
        for task in pending:
            task()

    if getattr(_this_thread, "alone", False):
        drain()
        return
    helpers = [executor().submit(drain) for _ in range(min(cores(), len(tasks)) - 1)]
    drain()  # the calling thread works too
    for helper in helpers:
        helper.result()  # re-raises a helper's error


def flat(array: np.ndarray) -> np.ndarray:
    """A 1-D view of a C-contiguous array (for elementwise work: every element is a row)."""
    if not array.flags.c_contiguous:
        raise ValueError("flat: the array must be C-contiguous, so that its 1-D form is a view")
    return array.reshape(-1)
