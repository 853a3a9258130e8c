"""npllm: a large language model built from first principles in pure NumPy.

Read it bottom-up, as the project's design map (``DESIGN.md`` at the top of
the repository) lays it out: ``tensor.py`` (the autograd engine), ``ops/``
(primitive ops, each a forward paired with its backward), ``functional/``
(fused ops with hand-derived backward, each beside its composition from
primitives), ``nn/`` (layers), ``models/`` (GPT), ``optim/``, then
``generation/`` and ``training/``.  The tokenizer and data packages stand
apart: they do not use autograd.  ``runtime/`` (threads, BLAS, memory) is
the speed machinery, kept out of the rooms a learner reads.
"""

import npllm.runtime.blas  # noqa: F401 (sets how long BLAS threads spin; must come before NumPy loads)
from npllm.tensor import Tensor, ShapeError, is_grad_enabled, no_grad
from npllm import ops
from npllm import functional  # noqa: F401 (wires the fused GELU into Tensor.gelu)
from npllm.gradcheck import GradcheckError, gradcheck
from npllm.pretrained import load_pretrained, save_pretrained

__version__ = "0.1.0"

__all__ = [
    "Tensor", "ShapeError", "no_grad", "is_grad_enabled",
    "ops", "gradcheck", "GradcheckError", "load_pretrained", "save_pretrained", "__version__",
]
