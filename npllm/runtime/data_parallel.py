"""Data parallelism on one machine: every core trains on its own slice of the batch.

A training step on a batch computes the mean loss over the targets it
counts (the tokens to predict, the masked positions, the labelled examples:
the *objective* decides, ``npllm.training.objectives``) and its gradient.
Both are averages, so the batch can be cut along its examples into slices
("shards"), each shard's mean loss and gradient computed on its own, and the
results combined, weighting shard i by its share n_i / n of the counted
targets:

    L = sum_i (n_i / n) L_i,        dL/dw = sum_i (n_i / n) dL_i/dw

A batch is a dict of arrays (``input_ids``, ``targets``, an attention mask,
a teacher's logits, ...) whose first axis is the example; every array is cut
at the same places.  The objective counts each shard's targets
(``objective.count(shard)``), so a target it ignores (padding, a prompt not
to be learned) weighs nothing, here as in the loss; a shard with nothing to
count is skipped.

This is how large models are trained on many machines (each holds a copy
of the model, a "replica", and the gradients are summed over the network
after every backward).  Here the "machines" are the cores of one CPU and the
replicas share the weights' memory: a replica is a second set of Parameter
objects whose ``data`` are the very same arrays as the model's, with
gradients of its own.  Each shard runs forward and backward on a thread of
its own; NumPy releases Python's lock inside its ufuncs and BLAS calls, so
the threads really do run at the same time.  Afterwards each replica's
gradients are added into the model's, always in the same order, so a run
is as reproducible as a single-threaded one.

Why not let each op use every core instead, as BLAS does for one large
product?  Because much of a small model's step is not large products: the
attention of every head is a stack of little products too small to split
well, and elementwise ops split into pieces pay for handing the pieces out.
One thread per core, each doing whole ops with single-threaded BLAS
(``npllm.runtime.blas``), keeps both cores busy with no coordination until
the gradients are added.  Measured on the 2-core machine this was built on
(``npllm bench train``), the preset ``tiny`` trained ~1.3x faster and
``small`` ~1.1x.

The objective's loss must be the *mean* over the targets its ``count``
counts (as ``cross_entropy`` is), so that the shards combine by the weights
above.  Frozen parameters (``requires_grad`` False) stay frozen in every
replica.
Each replica has dropout generators of its own (spawned from the model's),
so two shards never share a mask.  More workers than cores is allowed (the
threads then take turns) and gives the same numbers as on a machine with
that many cores: the shards, not the cores, decide the sums.

Across processes and machines the same idea runs one level up
(``npllm.runtime.mpi``): each MPI rank takes its rows of the global batch
and shares them among its own threads here; ``ranks`` says which rank this
is.  A rank other than 0 moves every dropout generator to a stream of its
own (``jumped``), so no two ranks draw the same masks.
"""

import copy
from functools import partial

import numpy as np

from npllm.nn.layers import own_generator
from npllm.runtime.blas import blas_threads_limited
from npllm.runtime.mpi import world
from npllm.runtime.pool import cores, executor, map_tasks, working_alone
from npllm.tensor import no_grad


JOIN_ON_CORES_FROM = 1 << 22  # parameters (4 M): from here the join of the replicas' gradients uses every core


class DataParallel:
    """``model`` trained on ``workers`` threads (default: one per core), each on a slice of the batch.

    >>> parallel = DataParallel(model)
    >>> loss = parallel.forward_backward(batch, objective)   # model's .grad += d mean loss / d w
    >>> loss = parallel.loss(batch, objective)               # forward only, for validation

    ``replicas[0]`` is ``model`` itself; the others share its weights.
    ``ranks`` are the processes of an MPI job this is one of (default:
    ``npllm.runtime.mpi.world()``, one process unless mpiexec started it).
    """

    def __init__(self, model, workers=None, ranks=None):
        workers = cores() if workers is None else workers
        if workers < 1:
            raise ValueError(f"DataParallel: workers must be at least 1, got {workers}")
        self.model = model
        self.replicas = [model] + [_replica(model) for _ in range(workers - 1)]
        self.ranks = world() if ranks is None else ranks
        if self.ranks.rank:
            for replica in self.replicas:
                for _, generator in replica.named_generators():  # rank r: r jumps of 2^127 draws ahead
                    generator.bit_generator.state = generator.bit_generator.jumped(self.ranks.rank).state

    @property
    def workers(self) -> int:
        return len(self.replicas)

    def forward_backward(self, batch: dict, objective, scale=1.0) -> float:
        """The objective's mean loss on ``batch``; adds ``scale`` x its gradient into the model's ``.grad``.

        Every array of ``batch`` is cut along its first axis (examples) into
        at most ``workers`` shards of nearly equal size.  If a shard raises,
        the error reaches the caller and the model's gradients hold only part
        of the batch: zero them before trying again.
        """
        def shard_step(replica, shard, share):
            loss = objective.loss(replica, shard)
            loss.backward(np.asarray(scale * share, dtype=loss.dtype))  # this shard's part of the batch's mean
            return loss.item()

        loss = self._map_shards(shard_step, batch, objective)
        self._add_replica_gradients()
        return loss

    def loss(self, batch: dict, objective) -> float:
        """The objective's mean loss on ``batch``, forward only (no graph): evaluation on every core."""
        def shard_loss(replica, shard, share):
            with no_grad():  # (grad mode is per thread: each shard's thread switches it off for itself)
                return objective.loss(replica, shard).item()

        return self._map_shards(shard_loss, batch, objective)

    def _map_shards(self, work, batch, objective):
        """Run ``work(replica, shard, share)`` on each shard; return its results' mean weighted by share.

        Shard i always runs on replica i (its dropout generators), whichever
        thread takes it: each thread takes the next shard until none is left.
        """
        size = _batch_size(batch)
        bounds = np.linspace(0, size, min(self.workers, size) + 1).round().astype(int)
        shards = [{key: value[start:stop] for key, value in batch.items()}
                  for start, stop in zip(bounds[:-1], bounds[1:])]
        counted = np.array([objective.count(shard) for shard in shards])
        if counted.sum() == 0:  # nothing to learn from: let the objective itself say what that means
            shards, counted = [batch], np.array([1])
        shares = counted / counted.sum()
        jobs = [(replica, shard, share) for replica, shard, share in zip(self.replicas, shards, shares) if share > 0]
        self._share_weights()
        if len(jobs) == 1:
            return work(*jobs[0])
        losses = [None] * len(jobs)
        pending = iter(enumerate(jobs))

        def drain():  # (next() on an iterator over a list is atomic)
            with working_alone():  # every core already has a shard: no helper threads inside ops
                for index, job in pending:
                    losses[index] = work(*job)

        with blas_threads_limited(1):
            helpers = [executor().submit(drain) for _ in range(min(cores(), len(jobs)) - 1)]
            try:
                drain()
            finally:
                for helper in helpers:
                    helper.exception()  # wait for every thread, even after an error, before BLAS gets its threads back
        for helper in helpers:
            helper.result()  # re-raises a thread's error
        return float(np.dot(losses, [job[2] for job in jobs]))

    def _share_weights(self):
        """Point every replica's parameters at the model's current arrays, frozen where they are; clear their gradients.

        Done before each step, so it holds even after an optimizer or
        ``load_state_dict`` gave the model's parameters new arrays.
        """
        params = self.model.parameters()
        for replica in self.replicas[1:]:
            if replica.training != self.model.training:
                replica.train(self.model.training)
            for param, twin in zip(params, replica.parameters()):
                twin.data, twin.grad, twin.requires_grad = param.data, None, param.requires_grad

    def _add_replica_gradients(self):
        """model.grad += each replica's gradient, replica by replica (a fixed order: reproducible sums).

        With many weights the parameters are shared out among the cores
        (largest first, each core taking the next when done), so that the
        join, a pass over every weight's gradient, runs on every core.
        Measured (medians of alternating runs, a loaded 2-core machine):
        0.90x the time on ``small``'s 10.6 M gradients, but 1.46x on
        ``tiny``'s 0.9 M, where handing tasks to a thread costs more than
        the adding; hence one thread below ``JOIN_ON_CORES_FROM`` numbers.
        """
        params = self.model.parameters()
        twins = [replica.parameters() for replica in self.replicas[1:]]

        def add_into(index):
            param = params[index]
            for replica_params in twins:
                grad = replica_params[index].grad
                if grad is None:
                    continue
                if param.grad is None:
                    param.grad = grad  # the replica lets go of it in the next _share_weights
                else:
                    param.grad += grad

        largest_first = sorted(range(len(params)), key=lambda index: -params[index].size)
        tasks = [partial(add_into, index) for index in largest_first]
        if sum(param.size for param in params) < JOIN_ON_CORES_FROM:
            for task in tasks:
                task()
        else:
            map_tasks(tasks)


def _replica(model):
    """A copy of ``model`` whose parameters share the model's arrays, with dropout generators of its own."""
    shared = {id(param.data): param.data for param in model.parameters()}
    shared.update({id(param.grad): None for param in model.parameters() if param.grad is not None})
    replica = copy.deepcopy(model, memo=shared)
    for (_, original), (_, copied) in zip(model.named_generators(), replica.named_generators()):
        copied.bit_generator.state = own_generator(original).bit_generator.state  # a stream of its own
    return replica


def _batch_size(batch: dict) -> int:
    """The number of examples in ``batch``: the common length of its arrays' first axes."""
    sizes = {key: len(value) for key, value in batch.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"DataParallel: a batch's arrays must hold the same number of examples, got {sizes}")
    size = next(iter(sizes.values()))
    if size == 0:
        raise ValueError("DataParallel: the batch is empty")
    return size
