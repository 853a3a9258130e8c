"""The speed machinery, kept out of the rooms a learner reads.

- ``pool``: cache-sized pieces of elementwise work on every core (``map_rows``, ``cores``);
- ``blas``: how long NumPy's BLAS threads spin, and how many a product may use;
- ``memory``: the allocator told to keep freed memory (no page faults per step);
- ``data_parallel``: one thread per core, each training a replica on a slice of the batch.

Nothing here changes a result, only how fast it comes.  The textbook floors
(tensor, ops, functional, nn, models, optim) import none of it, except the
fused ops' ``functional/_kernels.py``, which runs pieces on the pool (and
through which the optimizers reach ``map_rows`` too: one door, not two).  This
``__init__`` imports nothing, so ``npllm`` can load ``blas`` before NumPy.
"""
