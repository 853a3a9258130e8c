"""The transformer block: attention, then a per-position MLP, each on a residual path.

GPT-2's block is *pre-LayerNorm*: each sub-layer reads a normalised copy of
the residual stream x and adds its output back to it,

    x = x + attn(ln_1(x))      positions exchange information
    x = x + mlp(ln_2(x))       each position thinks on its own

so the stream itself is never normalised inside the block and gradients
flow straight down the additions (the original Transformer normalised after
each addition, which trains less stably when deep).

The MLP widens to 4C, applies GELU, and projects back to C:
``c_proj(gelu(c_fc(x)))``, GPT-2's names.

Both sub-layers end in a projection onto the residual stream (c_proj);
``out_std`` sets its initial std, which GPT-2 shrinks with depth (see
``npllm.models.gpt``).  Left out: post-LayerNorm, gated MLPs (SwiGLU),
parallel attention + MLP.
"""

import numpy as np

import npllm.functional as F
from npllm.nn.attention import MultiHeadAttention
from npllm.nn.layers import GPT2_INIT_STD, Dropout, LayerNorm, Linear
from npllm.nn.module import Module


class MLP(Module):
    """x (..., C) -> c_proj(gelu(c_fc(x))) (..., C), through a hidden width of 4C."""

    def __init__(self, n_embd, bias=True, dropout=0.0, dtype=np.float32, rng=None, out_std=GPT2_INIT_STD):
        super().__init__()
        self.c_fc = Linear(n_embd, 4 * n_embd, bias=bias, dtype=dtype, rng=rng)
        self.c_proj = Linear(4 * n_embd, n_embd, bias=bias, dtype=dtype, rng=rng, std=out_std)
        self.dropout = Dropout(dropout, rng)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(Module):
    """One pre-LayerNorm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x)).

    ``attention_options`` go to MultiHeadAttention (``causal=False`` for an encoder);
    ``layer_norm_eps`` to both LayerNorms.
    """

    def __init__(self, n_embd, n_head, bias=True, dropout=0.0, dtype=np.float32, rng=None,
                 out_std=GPT2_INIT_STD, layer_norm_eps=1e-5, **attention_options):
        super().__init__()
        self.ln_1 = LayerNorm(n_embd, bias=bias, eps=layer_norm_eps, dtype=dtype)
        self.attn = MultiHeadAttention(n_embd, n_head, bias=bias, dropout=dropout, dtype=dtype, rng=rng,
                                       out_std=out_std, **attention_options)
        self.ln_2 = LayerNorm(n_embd, bias=bias, eps=layer_norm_eps, dtype=dtype)
        self.mlp = MLP(n_embd, bias=bias, dropout=dropout, dtype=dtype, rng=rng, out_std=out_std)

    def forward(self, x, mask=None, kv_cache=None):
        x = x + self.attn(self.ln_1(x), mask=mask, kv_cache=kv_cache)
        return x + self.mlp(self.ln_2(x))
