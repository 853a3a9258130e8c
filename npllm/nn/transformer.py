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
``npllm.models.gpt``).

BERT's block (``PostLNBlock``) is the original Transformer's
*post-LayerNorm* order: each sub-layer reads the stream itself, and the sum
is normalised,

    x = LayerNorm(x + attn(x))
    x = LayerNorm(x + mlp(x))

so the stream leaving every block has unit scale per position.  Gradients
to early layers now pass through a LayerNorm per sub-layer, which is why
deep post-LN models need a learning-rate warm-up; BERT has it.  Its pieces
carry the names of Hugging Face's BERT (attention.self.query,
attention.output.dense, attention.output.LayerNorm, intermediate.dense,
output.dense, output.LayerNorm), so its checkpoints load by name, and its
MLP's GELU is the exact erf form by default.  Left out: gated MLPs (SwiGLU),
parallel attention + MLP.
"""

import numpy as np

import npllm.functional as F
from npllm.nn.attention import MultiHeadAttention, QKVSelfAttention
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
        return self.dropout(self.c_proj(widened(self.c_fc, x, "tanh")))


def widened(linear, x, approximate):
    """gelu(linear(x)): one fused op (``F.linear_gelu``) for a plain Linear; a wrapped one (LoRA) composes its own."""
    if type(linear) is Linear:
        return F.linear_gelu(x, linear.weight, linear.bias, approximate)
    return F.gelu(linear(x), approximate)


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


class AddNorm(Module):
    """LayerNorm(residual + dropout(dense(x))): a post-LN sub-layer's projection, residual add and norm.

    Hugging Face's ``BertSelfOutput`` (after attention, in_features = C) and
    ``BertOutput`` (after the MLP's widening, in_features = the inner width).
    """

    def __init__(self, in_features, n_embd, dropout=0.0, eps=1e-12, dtype=np.float32, rng=None):
        super().__init__()
        self.dense = Linear(in_features, n_embd, dtype=dtype, rng=rng)
        self.LayerNorm = LayerNorm(n_embd, eps=eps, dtype=dtype)
        self.dropout = Dropout(dropout, rng)

    def forward(self, x, residual):
        if type(self.dense) is Linear and not (self.training and self.dropout.p):  # one fused op, the same function
            norm = self.LayerNorm
            return F.linear_add_layer_norm(x, self.dense.weight, self.dense.bias, residual, norm.weight, norm.bias, norm.eps)
        return self.LayerNorm(residual + self.dropout(self.dense(x)))


class PostLNAttention(Module):
    """``output(self(x), x)``: bidirectional self-attention, then add & norm (Hugging Face's ``BertAttention``)."""

    def __init__(self, n_embd, n_head, dropout=0.0, attention_dropout=0.0, eps=1e-12, dtype=np.float32, rng=None):
        super().__init__()
        self.self = QKVSelfAttention(n_embd, n_head, dropout=attention_dropout, dtype=dtype, rng=rng)
        self.output = AddNorm(n_embd, n_embd, dropout=dropout, eps=eps, dtype=dtype, rng=rng)

    def forward(self, x, mask=None):
        return self.output(self.self(x, mask=mask), x)


class Intermediate(Module):
    """gelu(dense(x)): the MLP's widening to ``n_inner`` (Hugging Face's ``BertIntermediate``).

    ``approximate``: "none" for the exact erf GELU (BERT's), "tanh" for GPT-2's.
    """

    def __init__(self, n_embd, n_inner, approximate="none", dtype=np.float32, rng=None):
        super().__init__()
        self.dense = Linear(n_embd, n_inner, dtype=dtype, rng=rng)
        self.approximate = approximate

    def forward(self, x):
        return widened(self.dense, x, self.approximate)


class PostLNBlock(Module):
    """One post-LayerNorm block: x = LN(x + attn(x)), then x = LN(x + mlp(x)) (Hugging Face's ``BertLayer``).

    ``mask`` (boolean, True = may attend, broadcastable to (B, H, T, T)) hides
    padding from every query.
    """

    def __init__(self, n_embd, n_head, n_inner, dropout=0.0, attention_dropout=0.0, eps=1e-12,
                 approximate="none", dtype=np.float32, rng=None):
        super().__init__()
        self.attention = PostLNAttention(n_embd, n_head, dropout=dropout, attention_dropout=attention_dropout,
                                         eps=eps, dtype=dtype, rng=rng)
        self.intermediate = Intermediate(n_embd, n_inner, approximate=approximate, dtype=dtype, rng=rng)
        self.output = AddNorm(n_inner, n_embd, dropout=dropout, eps=eps, dtype=dtype, rng=rng)

    def forward(self, x, mask=None):
        x = self.attention(x, mask=mask)
        return self.output(self.intermediate(x), x)
