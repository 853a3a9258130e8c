"""NumPy's BLAS threads: how long they spin when idle, and how many a product may use.

OpenBLAS, NumPy's BLAS, runs each matrix product on a pool of threads, one
per core.  Two settings of that pool matter to training speed.

**Spinning.**  When a product ends, its threads do not sleep at once: they
spin for 2^28 CPU cycles by default (about a tenth of a second), ready for
the next product.  Between two products a training step runs elementwise
work (GELU, softmax, layer norm, AdamW) for milliseconds, some of it on a
helper thread of our own (``npllm.runtime.pool``), and a spinning BLAS
thread takes the core from it.  Not spinning at all costs too, where
products follow each other within microseconds (generating with a KV cache:
some forty small products per token), since every product must then wake a
sleeping thread.  So we let them spin 2^17 cycles (some 50 us): long enough
to bridge the gap between back-to-back products, short enough to free the
core for elementwise work.  Measured on the 2-core machine this was tuned on
(medians of alternating runs): tiny-preset training 8,164 tokens/s with
2^28, 9,285 with 2^4, 9,725 with 2^17; cached generation on the small
preset 212, 168 and 214 tokens/s.  OpenBLAS reads ``OPENBLAS_THREAD_TIMEOUT``
once, when NumPy is first imported, so ``npllm`` (the package's ``__init__``) imports this module
before NumPy.  If NumPy is already loaded, or the variable is already set,
nothing changes.

**Sharing the machine with other ranks.**  Under ``mpiexec`` several
processes (ranks, ``npllm.runtime.mpi``) may run on one machine; each then
owns its share of the cores (``cores_per_rank``), and its BLAS pool is made
that size (``OPENBLAS_NUM_THREADS``, read when NumPy loads, like the
timeout): two ranks on two cores, each with a two-thread BLAS, would make
four threads fight over two cores.

**How many threads.**  When our own threads already keep every core busy
(data-parallel training, ``npllm.runtime.data_parallel``: one thread per core,
each on its slice of the batch), a product must not split itself over the
cores as well: two threads each starting a two-thread product would make
four threads fight over two cores.  ``blas_threads_limited(1)`` makes every
product single-threaded for the duration of a ``with`` block.  OpenBLAS has
a C function for that but NumPy does not expose it, so we find the OpenBLAS
library NumPy loaded (its file appears in the process's memory map) and
call it through ``ctypes`` (NumPy's own copy first, should another program
have loaded a second OpenBLAS).  With another BLAS, or on a system without
``/proc``, the limit is simply not applied (``blas_thread_control()`` says
whether it can be).
"""

import contextlib
import ctypes
import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "17")  # spin 2^17 cycles (~50 us), not 2^28, before sleeping

# How many processes of one MPI job run on this machine, as the launchers say: MPICH's Hydra, Open MPI.
_LOCAL_RANKS_VARIABLES = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE")


def _allowed_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cores_per_rank() -> int:
    """The cores this process may use: those it may run on, shared equally with its job's other ranks here."""
    local = next((int(os.environ[name]) for name in _LOCAL_RANKS_VARIABLES if os.environ.get(name, "").isdigit()), 1)
    return max(1, _allowed_cores() // max(local, 1))


if cores_per_rank() < _allowed_cores():
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(cores_per_rank()))  # (only under mpiexec, with company)

# The names of OpenBLAS's get/set functions: plain builds, and NumPy's wheels (scipy-openblas, 64-bit integers).
_THREAD_FUNCTION_NAMES = (
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
)
_control = None  # (get, set) once looked up; False if there is none


def blas_thread_control():
    """(get_num_threads, set_num_threads) of the OpenBLAS NumPy uses, or None if it cannot be found."""
    global _control
    if _control is None:
        _control = _find_openblas_thread_functions() or False
    return _control or None


def _find_openblas_thread_functions():
    import numpy  # (loads the BLAS library, so that it is in the memory map)

    try:
        with open("/proc/self/maps") as maps:
            lines = [line.split(maxsplit=5) for line in maps]  # address, perms, offset, dev, inode, path
    except OSError:  # no /proc (macOS, Windows)
        return None
    paths = {fields[5].rstrip("\n") for fields in lines if len(fields) == 6}
    paths = {path for path in paths if "openblas" in path.rsplit("/", 1)[-1].lower() and not path.endswith("(deleted)")}
    numpy_home = os.path.dirname(os.path.dirname(numpy.__file__))  # where numpy/ and its wheel's numpy.libs/ live
    for path in sorted(paths, key=lambda path: (not path.startswith(os.path.join(numpy_home, "numpy")), path)):
        try:
            library = ctypes.CDLL(path)  # already loaded: this returns the same library, not a second copy
        except OSError:
            continue
        for get_name, set_name in _THREAD_FUNCTION_NAMES:
            if hasattr(library, get_name) and hasattr(library, set_name):
                get, set_ = getattr(library, get_name), getattr(library, set_name)
                get.restype, set_.restype, set_.argtypes = ctypes.c_int, None, [ctypes.c_int]
                return get, set_
    return None


@contextlib.contextmanager
def blas_threads_limited(threads: int):
    """Within the block, every BLAS product uses at most ``threads`` threads.

    A process-wide setting, restored on leaving: enter it from one thread
    at a time (``DataParallel`` does, from the thread that calls it).
    """
    control = blas_thread_control()
    if control is None:
        yield
        return
    get, set_ = control
    before = get()
    set_(min(threads, before))
    try:
        yield
    finally:
        set_(before)
