"""Keeping freed memory for reuse: why a fresh large array costs milliseconds.

NumPy gets every array's memory from the C library's ``malloc``.  On Linux
(glibc), a request above a threshold is served by mapping fresh pages from
the kernel and unmapped again when the array is freed; and free memory at
the top of the heap beyond another threshold is handed back to the kernel
as well.  Either way the next array of that size starts on fresh pages, and
the first write to each 4 KB page is a page fault, in which the kernel
finds and zeroes a page: about 0.5 us per page on the machine this was
measured on, so some 4 ms for a 32 MB array of logits, paid again every
training step, for every large activation and gradient.

A training step allocates and frees the same sizes in the same order, step
after step.  So we ask glibc (``mallopt``) to serve arrays up to its limit of
32 MB from its heap and to keep freed memory for reuse instead of returning
it.  The peak memory does not grow (the same arrays are alive at the peak);
the process simply keeps what it has already used.  Arrays over 32 MB are
still mapped fresh each time; ops that can avoid one reuse a buffer instead
(see ``Context.last_backward``).

One more setting makes this hold for every thread.  glibc gives a thread
other than the main one an "arena" of its own to allocate from, and
unmaps an arena's emptied heaps whatever the trim threshold says; the
thread that trains the second slice of each batch (``npllm.runtime.data_parallel``)
then paid some 1,800 page faults (7 MB of fresh pages) per step of the
tiny preset.  With a single arena for all threads (``M_ARENA_MAX`` = 1) it
pays none; the price, threads taking turns inside ``malloc`` itself, is
a few hundred short calls per step.  It takes effect for threads that
have not allocated yet, which is why the entry points call it first.

It is a setting of the whole process, so importing npllm does not make
it: the entry points that train or benchmark call ``keep_freed_memory``
(``npllm.training.pretrain.train`` and ``resume``, ``npllm bench train`` and
``bench generate``); a notebook or another program that imports npllm keeps its
C library's defaults unless it calls it too.

Nothing changes on other C libraries, where ``mallopt`` is not available.
"""

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's <malloc.h>
MMAP_THRESHOLD = 32 << 20  # the largest value glibc accepts (its DEFAULT_MMAP_THRESHOLD_MAX on 64 bits)
TRIM_THRESHOLD = 1 << 30  # keep up to 1 GB of freed memory for reuse


def keep_freed_memory() -> bool:
    """Ask glibc to reuse freed memory for arrays up to 32 MB, in every thread; True if it agreed."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_ARENA_MAX, 1))
    return all([bool(mallopt(option, value)) for option, value in settings])
