"""How long NumPy's BLAS threads spin when idle: a setting that must come before NumPy loads.

OpenBLAS, NumPy's BLAS, runs each matrix product on a pool of threads, one
per core.  When a product ends, its threads do not sleep at once: they spin
for 2^28 CPU cycles by default (about a tenth of a second), ready for the
next product.  Between two products a training step runs elementwise work
(GELU, softmax, layer norm, AdamW) for milliseconds, some of it on a helper
thread of our own (``npllm.ops.parallel``), and a spinning BLAS thread takes
the core from it.  Not spinning at all costs too, where products follow
each other within microseconds (generating with a KV cache: some forty small
products per token), since every product must then wake a sleeping thread.

So we let them spin 2^17 cycles (some 50 us): long enough to bridge the gap
between back-to-back products, short enough to free the core for
elementwise work.  Measured on the 2-core machine this was tuned on (medians
of alternating runs): tiny-preset training 8,164 tokens/s with 2^28, 9,285
with 2^4, 9,725 with 2^17; cached generation on the small preset 212, 168
and 214 tokens/s.

OpenBLAS reads ``OPENBLAS_THREAD_TIMEOUT`` once, when NumPy is first
imported, so ``npllm.tensor`` imports this module before NumPy.  If NumPy is
already loaded, or the variable is already set, nothing changes.
"""

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "17")  # spin 2^17 cycles (~50 us), not 2^28, before sleeping
