"""How long NumPy's BLAS threads spin when idle: a setting that must come before NumPy loads.

OpenBLAS, NumPy's BLAS, runs each matrix product on a pool of threads, one
per core.  When a product ends, its threads do not sleep at once: they spin
for 2^28 CPU cycles by default (about a tenth of a second), ready for the
next product.  Between two products a training step runs elementwise work
(GELU, softmax, layer norm, AdamW), some of it on a helper thread of our own
(``npllm.ops.parallel``), and a spinning BLAS thread takes the core from it.
Measured on the 2-core machine this was tuned on, with a spin of 2^4 cycles
instead: the elementwise ops of a training step ran about twice as fast
(GELU forward 149 -> 65 ms per step on the small preset) and a tiny-preset
step took 222 instead of 270 ms.  A product still wakes the threads; only
the idle spinning stops.

OpenBLAS reads ``OPENBLAS_THREAD_TIMEOUT`` once, when NumPy is first
imported, so ``npllm.tensor`` imports this module before NumPy.  If NumPy is
already loaded, or the variable is already set, nothing changes.
"""

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # spin 2^4 cycles, not 2^28, before sleeping
