"""Data parallelism on one machine: every core trains on its own slice of the batch.

A training step on a batch computes the mean loss over its n targets (the
tokens to predict) and its gradient.  Both are averages, so the batch can be
cut along its examples into slices ("shards"), each shard's mean loss and
gradient computed on its own, and the results combined, weighting shard i
by its share n_i / n of the targets:

    L = sum_i (n_i / n) L_i,        dL/dw = sum_i (n_i / n) dL_i/dw

A target equal to ``ignore_index`` (-100 unless told otherwise, as in
``cross_entropy``: padding, a prompt not to be learned) counts for nothing,
here as in the loss; a shard with no target left is skipped.

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
(``npllm.blas_threads``), keeps both cores busy with no coordination until
the gradients are added.  Measured on the 2-core machine this was built on
(``npllm bench train``), the preset ``tiny`` trained ~1.3x faster and
``small`` ~1.1x.

The loss function must return the *mean* over the targets it counts (as
``cross_entropy`` does), so that the shards combine by the weights above.
Each replica has dropout generators of its own (spawned from the model's),
so two shards never share a mask.  More workers than cores is allowed (the
threads then take turns) and gives the same numbers as on a machine with
that many cores: the shards, not the cores, decide the sums.
"""

import copy

import numpy as np

from npllm.blas_threads import blas_threads_limited
from npllm.functional import IGNORE_INDEX, cross_entropy
from npllm.ops.parallel import cores, executor, working_alone
from npllm.tensor import no_grad
from npllm.nn.layers import own_generator


class DataParallel:
    """``model`` trained on ``workers`` threads (default: one per core), each on a slice of the batch.

    >>> parallel = DataParallel(model)
    >>> loss = parallel.forward_backward(inputs, targets)   # model's .grad += d mean loss / d w
    >>> loss = parallel.loss(inputs, targets)               # forward only, for validation

    ``replicas[0]`` is ``model`` itself; the others share its weights.
    """

    def __init__(self, model, workers=None):
        workers = cores() if workers is None else workers
        if workers < 1:
            raise ValueError(f"DataParallel: workers must be at least 1, got {workers}")
        self.model = model
        self.replicas = [model] + [_replica(model) for _ in range(workers - 1)]

    @property
    def workers(self) -> int:
        return len(self.replicas)

    def forward_backward(self, inputs, targets, loss_fn=cross_entropy, scale=1.0, ignore_index=IGNORE_INDEX) -> float:
        """Mean loss of ``loss_fn(model(inputs), targets)``; adds ``scale`` x its gradient into the model's ``.grad``.

        ``inputs`` and ``targets`` are cut along their first axis (examples)
        into at most ``workers`` shards of nearly equal size; ``ignore_index``
        must be the one ``loss_fn`` skips (it weighs the shards).  If a shard
        raises, the error reaches the caller and the model's gradients hold
        only part of the batch: zero them before trying again.
        """
        def shard_step(replica, inputs, targets, share):
            loss = loss_fn(replica(inputs), targets)
            loss.backward(np.asarray(scale * share, dtype=loss.dtype))  # this shard's part of the batch's mean
            return loss.item()

        loss = self._map_shards(shard_step, inputs, targets, ignore_index)
        self._add_replica_gradients()
        return loss

    def loss(self, inputs, targets, loss_fn=cross_entropy, ignore_index=IGNORE_INDEX) -> float:
        """Mean loss of ``loss_fn(model(inputs), targets)``, forward only (no graph): evaluation on every core."""
        with no_grad():
            return self._map_shards(lambda replica, inputs, targets, share: loss_fn(replica(inputs), targets).item(),
                                    inputs, targets, ignore_index)

    def _map_shards(self, work, inputs, targets, ignore_index):
        """Run ``work(replica, inputs, targets, share)`` on each shard; return its results' mean weighted by share.

        Shard i always runs on replica i (its dropout generators), whichever
        thread takes it: each thread takes the next shard until none is left.
        """
        if len(inputs) != len(targets):
            raise ValueError(f"DataParallel: {len(inputs)} inputs but {len(targets)} targets")
        if len(inputs) == 0:
            raise ValueError("DataParallel: the batch is empty")
        bounds = np.linspace(0, len(inputs), min(self.workers, len(inputs)) + 1).round().astype(int)
        counted = np.array([np.count_nonzero(np.asarray(targets[start:stop]) != ignore_index)
                            for start, stop in zip(bounds[:-1], bounds[1:])])
        if counted.sum() == 0:  # nothing to learn from: let the model itself say what that means for loss_fn
            counted, bounds = np.array([1]), bounds[[0, -1]]
        shares = counted / counted.sum()
        jobs = [(replica, inputs[start:stop], targets[start:stop], share)
                for replica, start, stop, share in zip(self.replicas, bounds[:-1], bounds[1:], shares) if share > 0]
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
        return float(np.dot(losses, [job[3] for job in jobs]))

    def _share_weights(self):
        """Point every replica's parameters at the model's current arrays; clear their gradients.

        Done before each step, so it holds even after an optimizer or
        ``load_state_dict`` gave the model's parameters new arrays.
        """
        params = self.model.parameters()
        for replica in self.replicas[1:]:
            if replica.training != self.model.training:
                replica.train(self.model.training)
            for param, twin in zip(params, replica.parameters()):
                twin.data, twin.grad = param.data, None

    def _add_replica_gradients(self):
        """model.grad += each replica's gradient, replica by replica (a fixed order: reproducible sums)."""
        params = self.model.parameters()
        for replica in self.replicas[1:]:
            for param, twin in zip(params, replica.parameters()):
                if twin.grad is None:
                    continue
                if param.grad is None:
                    param.grad = twin.grad  # the replica lets go of it in the next _share_weights
                else:
                    param.grad += twin.grad


def _replica(model):
    """A copy of ``model`` whose parameters share the model's arrays, with dropout generators of its own."""
    shared = {id(param.data): param.data for param in model.parameters()}
    shared.update({id(param.grad): None for param in model.parameters() if param.grad is not None})
    replica = copy.deepcopy(model, memo=shared)
    for (_, original), (_, copied) in zip(model.named_generators(), replica.named_generators()):
        copied.bit_generator.state = own_generator(original).bit_generator.state  # a stream of its own
    return replica
