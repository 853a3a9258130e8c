"""npllm: a large language model built from first principles in pure NumPy.

Read it bottom-up, as DESIGN.md lays it out: ``tensor.py`` (the autograd
engine), ``ops/`` (primitive ops, each a forward paired with its backward),
``functional.py`` (fused ops with hand-derived backward), ``nn/`` (layers),
``models/`` (GPT), ``optim/``, then training and generation.  The tokenizer
and data packages stand apart: they do not use autograd.
"""

from npllm.tensor import Tensor, ShapeError, is_grad_enabled, no_grad
from npllm import ops
from npllm.gradcheck import GradcheckError, gradcheck

__version__ = "0.1.0"

__all__ = [
    "Tensor", "ShapeError", "no_grad", "is_grad_enabled",
    "ops", "gradcheck", "GradcheckError", "__version__",
]
