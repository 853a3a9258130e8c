"""Fused ops: the transformer's building blocks, each one forward and one hand-derived backward.

Every op here could be written with the primitives of ``npllm.ops``, and is:
each file opens with that composition (``softmax_composed``,
``cross_entropy_composed``, ...), the definition, whose backward autograd
derives from the primitives' gradchecked backwards.  The fused ``Function``
follows it, and the tests hold the two equal, forward and backward.  Fusing
buys three things:

1. **Numerical stability.**  Softmax subtracts each row's maximum before
   ``exp`` whenever the inputs are large enough to need it (the result is
   unchanged, since softmax(x) = softmax(x - c), but no ``exp`` overflows),
   and cross-entropy works with log-probabilities ``x - logsumexp(x)``
   instead of taking the log of a probability that may have underflowed to 0.
2. **Speed.**  A composed softmax records five ops and keeps five arrays; the
   fused one keeps only its output and its backward is one short formula.
   Work happens in place on arrays the op itself allocated (``out=``,
   ``-=``), matrix products go to BLAS as few large 2-D calls, and float32 in
   means float32 throughout (a float64 array or ``np.float64`` scalar would
   silently promote; Python floats do not).  The few idioms replaced by
   faster equivalents live in ``_kernels.py``, each named beside the idiom.
3. **Memory.**  Only what backward needs is saved.

The files, in reading order: ``probabilities`` (softmax, log-softmax),
``losses`` (cross-entropy), ``distillation`` (the soft-target KL of a
student against a teacher, and DistilBERT's cosine loss), ``normalization``
(layer norm), ``activations`` (GELU), ``lookup`` (embedding),
``regularization`` (dropout), ``projection`` (linear, the two ops that
fuse a projection with what a block does next: ``linear_gelu``, an MLP's
widening, and ``linear_add_layer_norm``, a post-LN sub-layer's residual add
and norm, and ``lora_linear``, a frozen projection beside its LoRA update),
``attention``.  (They are named for what they hold rather than for
their functions: a module called ``softmax`` would be shadowed by the
function ``F.softmax`` of the same name.)

Each docstring derives the backward in a few lines; each backward quotes the
forward line it inverts.  Conventions: the gradient arriving in backward is
``grad`` and is never modified in place (it may be shared with another op);
gradients are named with a ``d`` prefix; B, T, C, H, D, V are batch, time,
channels, heads, head size and vocabulary size.  Fused classes are named
``Fused...``, so a tensor's repr (``op=FusedLayerNorm``) never mistakes them
for the ``nn`` layers of the same idea.

Left out on purpose: reductions other than the mean in cross-entropy,
class weights, and attention variants (ALiBi, sliding windows).
"""

from npllm.functional.activations import gelu
from npllm.functional.attention import causal_mask, scaled_dot_product_attention, self_attention
from npllm.functional.distillation import cosine_loss, kl_div
from npllm.functional.losses import IGNORE_INDEX, cross_entropy
from npllm.functional.lookup import embedding
from npllm.functional.normalization import layer_norm
from npllm.functional.probabilities import log_softmax, softmax
from npllm.functional.projection import linear, linear_add_layer_norm, linear_gelu, lora_linear
from npllm.functional.regularization import dropout

__all__ = [
    "softmax", "log_softmax", "cross_entropy", "layer_norm", "gelu", "embedding", "dropout",
    "scaled_dot_product_attention", "self_attention", "causal_mask", "linear", "linear_gelu", "linear_add_layer_norm",
    "lora_linear",
    "kl_div", "cosine_loss",
    "IGNORE_INDEX",
]
