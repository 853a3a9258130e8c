"""Data parallelism across processes and machines: MPI ranks, each a set of threads.

``data_parallel`` splits a batch over the cores of one machine.  This module
splits it over *processes* first, which may sit on many machines, with MPI,
the message-passing standard that clusters (and Horovod-style training) run
on.  ``mpiexec -n N npllm train ...`` starts N copies of the same command,
its *ranks* 0 .. N-1.  Every rank

- builds the same model from the same seed and reads the same corpus and
  token cache (rank 0 builds what is missing, the others wait for it:
  ``writer_first``), so every rank holds identical weights and token ids
  (each learns the tokenizer, which is deterministic, and the ranks check
  that their token files are the same);
- draws every *global* batch from the same seeded sampler and keeps its own
  rows of it (``shard``), cut at the same places whatever the threads, so the
  batch the model learns from does not depend on N;
- runs forward and backward on its rows, on its threads, and scales its
  gradient by its share n_r / n of the batch's counted targets;
- sums the scaled gradients of all ranks with one ``Allreduce`` over the
  optimizer's flat gradient buffers (``sum_gradients``).  Since

      dL/dw = sum_r (n_r / n) dL_r/dw,

  the sum is the gradient of the whole global batch, the very gradient one
  process would compute, up to the order of float32 additions;
- takes the same AdamW step on the same numbers, so the weights stay equal
  on every rank without ever being sent.

The same Allreduce carries the rank's share of the loss and its vote to
stop (Ctrl-C or SIGTERM on any rank): after it every rank knows the global
loss and whether anyone asked to stop, so all of them save the same step and
leave together.  Rank 0 alone writes (the log, ``metrics.jsonl``,
checkpoints, the progress bar); a failure there is told to every rank
(``on_writer``), so nobody waits for a partner that is gone.

How a job fails.  MPI's collectives wait for every rank, so one rank that
leaves early could leave the others waiting forever.  Three things prevent
that: errors that the ranks detect together (settings that differ, an output
folder some rank cannot write) are agreed on (``require_same``,
``require_everywhere``) and raised on every rank, with rank 0 saying them;
an error that only one rank meets waits at most ``AGREEMENT_SECONDS`` for
the others (``everyone_failed``) and then aborts the whole job
(``MPI_Abort``); and a rank that dies (killed, out of memory) is noticed by
``mpiexec`` (MPICH's Hydra), which ends the other ranks at once.

``mpi4py`` is imported only here, only when a run is started by ``mpiexec``
(its environment says so: ``PMI_RANK``, ``OMPI_COMM_WORLD_SIZE``, ...) or
asked for (``--mpi``); ``import npllm`` never loads it.  One process, the
usual case, is ``Ranks()``: rank 0 of 1, whose collectives do nothing.
"""

import os
import pickle
import sys
import time

import numpy as np

from npllm.errors import NpllmError

INSTALL_HINT = "pip install 'npllm[mpi]' (mpi4py, and MPICH with its mpiexec)"

# Set in a process that mpiexec started: MPICH's Hydra and PMI, Open MPI, PMIx.
LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
                      "HYDRA_CONTROL_FD", "MPI_LOCALNRANKS")

# How long a rank that met an error alone waits for the others before aborting the job.
AGREEMENT_SECONDS = 5.0


class RanksError(NpllmError):
    """The ranks of one job disagree, or one of them cannot do what all must: one line, raised on every rank."""


def launched_by_mpiexec(environ=os.environ) -> bool:
    """Whether this process was started by ``mpiexec`` (one of its variables is set)."""
    return any(name in environ for name in LAUNCHER_VARIABLES)


def ranks_and_threads(workers: int) -> str:
    """How a batch is shared, for the log: ``2 ranks × 1 thread``."""
    size = world().size
    return f"{size} rank{'s' * (size > 1)} × {workers} thread{'s' * (workers > 1)}"


class Ranks:
    """One process alone: rank 0 of 1.  Every collective is the identity; ``MPIRanks`` is the real thing."""

    rank, size = 0, 1
    # For npllm bench mpi: seconds spent in sum_gradients' Allreduce, and (with measure_waiting, a barrier just
    # before it) apart from them the seconds spent waiting for the slowest rank to finish its backward pass.
    allreduce_seconds = waiting_seconds = 0.0
    measure_waiting = False

    @property
    def is_writer(self) -> bool:
        """Rank 0 writes the run's files and speaks for the job."""
        return self.rank == 0

    def shard(self, batch: dict, objective, every_rank=True) -> tuple[dict, float]:
        """This rank's rows of ``batch`` and their share n_r / n of its counted targets.

        ``every_rank``: refuse a batch with fewer examples than ranks (training;
        evaluation's last batch may leave a rank nothing, and share 0).
        """
        return batch, 1.0

    def sum_gradients(self, optimizer, scalars: list) -> list:
        """Sum every rank's gradients (the optimizer's flat buffers, in place) and ``scalars``; return the summed scalars."""
        return scalars

    def sum(self, values: np.ndarray) -> np.ndarray:
        """The element-wise sum of ``values`` over the ranks (float64)."""
        return values

    def gather_to_writer(self, value) -> list:
        """Every rank's ``value``, in rank order, on the writer (None elsewhere)."""
        return [value]

    def require_same(self, values: dict, what: str):
        """Refuse, on every rank, ``values`` (name -> plain value) that differ from rank 0's, naming the first."""

    def require_everywhere(self, check):
        """Run ``check()`` on every rank; if it raises NpllmError on any, raise on every rank, naming the first."""
        check()

    def on_writer(self, work):
        """Run ``work()`` on the writer alone (its result there, None elsewhere); its NpllmError or OSError raised on every rank."""
        return work()

    def writer_first(self, work):
        """``work()`` on the writer, then on the others (which find what it built); its error raised on every rank."""
        return work()

    def everyone_failed(self, timeout=AGREEMENT_SECONDS) -> bool:
        """After an error here: whether every rank met one too (within ``timeout``); if not, the caller aborts the job."""
        return True

    def lost_partner(self, error: BaseException) -> str | None:
        """The line to say if ``error`` is MPI's report that another rank is gone (None for anything else)."""
        return None

    def abort(self, code: int):
        sys.exit(code)


class MPIRanks(Ranks):
    """The ranks of an MPI job (``mpi4py``'s ``COMM_WORLD``)."""

    def __init__(self, MPI):
        self.MPI = MPI
        self.comm = MPI.COMM_WORLD
        self.errors = self.comm.Dup()  # failures are agreed on apart, never entangled with a step's collective
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.packed = None  # the Allreduce buffer, kept between steps

    def shard(self, batch, objective, every_rank=True):
        """Rows ``bounds[r]:bounds[r + 1]`` of the global batch: nearly equal blocks, whatever the threads do.

        The counts come from the whole batch, which every rank holds, so no
        message is needed to weigh a rank's part.  A batch that counts nothing
        goes to rank 0 whole, which lets the objective say what that means, as
        one process would.
        """
        size = len(next(iter(batch.values())))
        if every_rank and size < self.size:
            raise RanksError(f"a batch of {size} example{'s' * (size > 1)} cannot be shared by {self.size} ranks:"
                             f" raise `batch_size` to at least {self.size}, or start fewer ranks")
        bounds = np.linspace(0, size, self.size + 1).round().astype(int)
        own = {key: value[bounds[self.rank]:bounds[self.rank + 1]] for key, value in batch.items()}
        total = objective.count(batch)
        if total == 0:
            return (batch, 1.0) if self.rank == 0 else (own, 0.0)
        return own, objective.count(own) / total

    def sum_gradients(self, optimizer, scalars):
        """One Allreduce over [every flat gradient buffer | scalars], then the sums copied back.

        The buffers are packed into one array (a copy costs a memory pass;
        one message instead of one per parameter group saves a latency per
        group and lets MPI pipeline the whole gradient).  The scalars travel in
        the gradient's dtype: float32 for the loss, exact for the stop votes.
        """
        grads = []
        for flat in optimizer.flat_groups:
            flat.reattach()  # (a gradient rebound during backward goes back into the buffer first)
            grads.append(flat.grad)
        sizes = [grad.size for grad in grads]
        total = sum(sizes) + len(scalars)
        dtype = np.result_type(*grads) if grads else np.float64
        if self.packed is None or self.packed.size != total or self.packed.dtype != dtype:
            self.packed = np.empty(total, dtype=dtype)
        offsets = np.cumsum([0, *sizes])
        for grad, start, stop in zip(grads, offsets[:-1], offsets[1:]):
            self.packed[start:stop] = grad
        self.packed[offsets[-1]:] = scalars
        if self.measure_waiting:
            started = time.perf_counter()
            self.comm.Barrier()
            self.waiting_seconds += time.perf_counter() - started
        started = time.perf_counter()
        self.comm.Allreduce(self.MPI.IN_PLACE, self.packed, op=self.MPI.SUM)
        self.allreduce_seconds += time.perf_counter() - started
        for grad, start, stop in zip(grads, offsets[:-1], offsets[1:]):
            grad[...] = self.packed[start:stop]
        return [float(value) for value in self.packed[offsets[-1]:]]

    def sum(self, values):
        values = np.ascontiguousarray(values, dtype=np.float64)
        summed = np.empty_like(values)
        self.comm.Allreduce(values, summed, op=self.MPI.SUM)
        return summed

    def gather_to_writer(self, value):
        return self.comm.gather(value, root=0)

    def require_same(self, values, what):
        """Rank 0's ``values`` go to every rank; each compares, and every rank raises if any differs."""
        reference = self.comm.bcast(values, root=0)
        own = _first_difference(reference, values)
        differences = self.comm.allgather(own)
        for rank, difference in enumerate(differences):
            if difference is not None:
                name, theirs, mine = difference
                raise RanksError(f"the ranks disagree on the {what} `{name}`: rank 0 has {theirs!r},"
                                 f" rank {rank} has {mine!r}; start every rank with the same command and files")

    def require_everywhere(self, check):
        try:
            check()
            failure = None
        except (NpllmError, OSError) as error:
            failure = str(error)
        failures = self.comm.allgather(failure)
        for rank, failure in enumerate(failures):
            if failure is not None:
                raise RanksError(failure if rank == 0 else f"rank {rank} of {self.size}: {failure}")

    def on_writer(self, work):
        result, failure = None, None
        if self.is_writer:
            try:
                result = work()
            except (NpllmError, OSError) as error:
                failure = _picklable(error)
        failure = self.comm.bcast(failure, root=0)
        if failure is not None:
            raise failure
        return result

    def writer_first(self, work):
        """The writer works first while the others wait at a broadcast; then they do the same work.

        Whatever ``work`` writes (a token cache, a downloaded corpus) is then
        written once, by rank 0, before any other rank looks for it.  (On
        machines that share no disk every machine builds its own copy, each
        written atomically.)
        """
        result = self.on_writer(work)
        return result if self.is_writer else work()

    def everyone_failed(self, timeout=AGREEMENT_SECONDS):
        """A barrier on the errors' own communicator, given ``timeout`` seconds; a rank alone aborts the job."""
        request = self.errors.Ibarrier()
        deadline = time.monotonic() + timeout
        while not request.Test():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def lost_partner(self, error):
        if not isinstance(error, self.MPI.Exception):
            return None
        reason = error.Get_error_string().splitlines()[0].strip()
        return (f"rank {self.rank} of {self.size}: another rank of the job stopped during a collective ({reason});"
                " every rank stops")

    def abort(self, code):
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)


def _first_difference(reference: dict, values: dict):
    """(name, reference's value, values' value) of the first name whose values differ, or None."""
    for name in sorted(set(reference) | set(values)):
        if reference.get(name) != values.get(name):
            return name, reference.get(name), values.get(name)
    return None


def _picklable(error):
    """``error`` itself if it survives pickling (to travel to the other ranks), else an NpllmError with its line."""
    if error is None:
        return None
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # (an exception class whose constructor takes other arguments than its message)
        return NpllmError(str(error))


_WORLD = None


def world(required=False) -> Ranks:
    """The ranks of this job: MPI's when ``mpiexec`` started the process (or ``required``), else one process.

    Decided once per process.  Without mpi4py, a process that mpiexec
    started (or that asked with ``required``, the CLI's ``--mpi``) is refused
    with the command that installs it.
    """
    global _WORLD
    if _WORLD is None or (required and not isinstance(_WORLD, MPIRanks)):
        _WORLD = _join() if required or launched_by_mpiexec() else Ranks()
    return _WORLD


def current_ranks() -> Ranks:
    """The ranks ``world`` decided on, without deciding (one process if it has not been asked)."""
    return _WORLD or Ranks()


def _join() -> Ranks:
    try:
        import mpi4py
    except ImportError:
        raise NpllmError(f"training on several processes needs mpi4py: {INSTALL_HINT};"
                         " then start it with mpiexec -n N npllm train ...") from None
    mpi4py.rc.thread_level = "funneled"  # only the main thread calls MPI; the step's threads never do
    from mpi4py import MPI

    return MPIRanks(MPI) if MPI.COMM_WORLD.Get_size() > 1 else Ranks()
