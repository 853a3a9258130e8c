"""Data parallelism on one machine: every core trains on its own slice of the batch.

A training step on a batch of B examples computes the mean loss and its
gradient.  Both are averages over examples, so the batch can be cut into
slices ("shards"), each shard's mean loss and gradient computed on its
own, and the results combined, weighting each shard by its share of the
batch:

    L = sum_i (B_i / B) L_i,        dL/dw = sum_i (B_i / B) dL_i/dw

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

The loss function must return the *mean* over the examples of its batch
(as ``cross_entropy`` does over every token of every example), so that the
shards combine by the weights above.  Each replica has dropout generators of
its own (spawned from the model's), so two shards never share a mask.
"""

import copy
from concurrent.futures import wait

import numpy as np

from npllm.blas_threads import blas_threads_limited
from npllm.functional import cross_entropy
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

    def forward_backward(self, inputs, targets, loss_fn=cross_entropy, scale=1.0) -> float:
        """Mean loss of ``loss_fn(model(inputs), targets)``; adds ``scale`` x its gradient into the model's ``.grad``.

        ``inputs`` and ``targets`` are cut along their first axis (examples)
        into at most ``workers`` shards of nearly equal size.
        """
        def shard_step(replica, inputs, targets, share):
            loss = loss_fn(replica(inputs), targets)
            loss.backward(np.asarray(scale * share, dtype=loss.dtype))  # this shard's part of the batch's mean
            return loss.item()

        loss, shards = self._map_shards(shard_step, inputs, targets)
        self._add_replica_gradients(shards)
        return loss

    def loss(self, inputs, targets, loss_fn=cross_entropy) -> float:
        """Mean loss of ``loss_fn(model(inputs), targets)``, forward only (no graph): evaluation on every core."""
        with no_grad():
            return self._map_shards(lambda replica, inputs, targets, share: loss_fn(replica(inputs), targets).item(),
                                    inputs, targets)[0]

    def _map_shards(self, work, inputs, targets):
        """Run ``work(replica, inputs, targets, share)`` on each shard, shard i on replica i; (mean, shards used)."""
        if len(inputs) != len(targets):
            raise ValueError(f"DataParallel: {len(inputs)} inputs but {len(targets)} targets")
        batch = len(inputs)
        bounds = np.linspace(0, batch, min(self.workers, batch) + 1).round().astype(int)
        shares = np.diff(bounds) / batch  # each shard's weight in the batch's mean
        jobs = [(replica, inputs[start:stop], targets[start:stop], share)
                for replica, start, stop, share in zip(self.replicas, bounds[:-1], bounds[1:], shares)]
        self._share_weights()
        if len(jobs) == 1:
            return work(*jobs[0]), 1
        with blas_threads_limited(1):
            others = [executor().submit(_alone, work, *job) for job in jobs[1:]]
            try:
                first = _alone(work, *jobs[0])
            finally:
                wait(others)  # every thread has finished before BLAS gets its threads back, even after an error
        losses = [first] + [other.result() for other in others]  # (re-raises a thread's error)
        return float(np.dot(losses, shares)), len(jobs)

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

    def _add_replica_gradients(self, used):
        """model.grad += each used replica's gradient, replica by replica (a fixed order: reproducible sums)."""
        params = self.model.parameters()
        for replica in self.replicas[1:used]:
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
    for original, twin in zip(model.modules(), replica.modules()):
        for name, value in vars(original).items():
            if isinstance(value, np.random.Generator):
                object.__setattr__(twin, name, own_generator(value))
    return replica


def _alone(work, *job):
    with working_alone():  # every core already has a shard: no helper threads inside ops
        return work(*job)
