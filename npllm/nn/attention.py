"""Multi-head attention, the one layer where positions talk to each other, and its KV cache.

Each position emits a query q, a key k and a value v (learned projections of
its vector).  Position i's output is an average of the values, weighted by
how well i's query matches each key:

    out_i = sum_j softmax_j(q_i . k_j / sqrt(D)) v_j.

With H heads, the C channels are cut into H slices of D = C / H channels
and attention runs in each slice independently, so different heads can look
for different things; the c_proj projection then mixes the heads' outputs.

One class serves three uses:

- causal self-attention (GPT): q, k, v all come from x through one fused
  projection ``c_attn`` (C -> 3C, one large matmul instead of three), and
  position i sees only j <= i;
- bidirectional self-attention (an encoder): the same with ``causal=False``,
  optionally with a padding ``mask``;
- cross-attention (a decoder reading an encoder): ``cross=True``; queries
  come from x through ``q_attn`` (C -> C) and keys and values from the
  ``context`` through ``c_attn`` (C -> 2C); the names of Hugging Face's GPT-2
  with cross-attention.

BERT keeps the three projections apart (``query``, ``key``, ``value``, each
C -> C, stored as three checkpoint tensors) and leaves the output
projection to the layer after it: ``QKVSelfAttention``, which joins the
three weights side by side at each call and so still makes one large
product and runs the same fused attention.

BART (fairseq's layout) keeps four projections apart, ``q_proj``, ``k_proj``,
``v_proj`` and ``out_proj``, in all three uses: ``ProjectedAttention``.  Its
self-attention joins q, k, v as BERT's does; its cross-attention joins k and
v and applies them to the context.  A decoder generating from one source
reads the same context at every step, so ``context_kv`` computes the
context's keys and values once and every step passes them back in
(``context_kv=``) instead of projecting the context again.

The KV cache.  When generating, step t would recompute the keys and values
of all t earlier positions, although (attention being causal) they never
change.  A ``KVCache`` keeps them: arrays preallocated to the context
length, into which each step writes only its new keys and values, in place.
The new token's query then attends to the cached keys, so step t costs O(t)
instead of a whole forward pass over t tokens.  The cache stores plain
arrays: it is for inference (under ``no_grad``), not for training.

Beam search keeps several hypotheses per source and, after each step,
continues the best ones: ``KVCache.reorder`` makes row i of the cache a
copy of row ``rows[i]``, the hypothesis it continues.

Looking inside.  ``recording_attention(model)`` is a ``with`` block within
which every attention layer of ``model`` hands its weights (the (B, H, Tq,
Tk) softmax each query spreads over the keys) to a dict, by layer name.
The fused op keeps its arithmetic: a recording layer computes the weights a
second time from the same queries and keys with the composed definition
(``F.attention_weights_composed``, the fused op's tested oracle), without
dropout, and only while recording.  It is for looking (``npllm attention``
draws them), not for training.

Left out on purpose: grouped/multi-query attention, rotary positions.
"""

from contextlib import contextmanager

import numpy as np

import npllm.functional as F
from npllm import ops
from npllm.functional.attention import attention_weights_composed
from npllm.nn.layers import GPT2_INIT_STD, Dropout, Linear, own_generator
from npllm.nn.module import Module
from npllm.tensor import Tensor


class KVCacheError(ValueError):
    """Keys and values that do not fit the cache: too many positions for its capacity, or another shape."""


class KVCache:
    """One layer's keys and values of the positions seen so far: (B, H, capacity, D) arrays filled from the left."""

    def __init__(self, batch_size, n_head, head_size, capacity, dtype=np.float32):
        self.keys = np.empty((batch_size, n_head, capacity, head_size), dtype=dtype)
        self.values = np.empty_like(self.keys)
        self.length = 0

    def append(self, k, v):
        """Write the new (B, H, T, D) key and value arrays after the stored ones; return views of all so far."""
        T = k.shape[2]
        start, end = self.length, self.length + T
        if end > self.keys.shape[2]:
            raise KVCacheError(
                f"KVCache: {self.length} cached + {T} new positions exceed its capacity of {self.keys.shape[2]}"
            )
        if k.shape[:2] + k.shape[3:] != self.keys.shape[:2] + self.keys.shape[3:]:
            raise KVCacheError(f"KVCache: keys of shape {k.shape} do not fit a cache of shape {self.keys.shape}")
        self.keys[:, :, start:end] = k
        self.values[:, :, start:end] = v
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def reorder(self, rows):
        """Row i of the cache becomes (a copy of) row ``rows[i]``: the hypotheses beam search continues."""
        rows = np.asarray(rows)
        self.keys[:, :, :self.length] = self.keys[rows, :, :self.length]
        self.values[:, :, :self.length] = self.values[rows, :, :self.length]


def split_heads(x, n_head):
    """(B, T, C) -> (B, H, T, D): each head's slice of the channels, as its own sequence."""
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)  # (B, H, T, D)


def merge_heads(y):
    """(B, H, T, D) -> (B, T, C): the heads' outputs side by side again."""
    B, H, T, D = y.shape
    return y.transpose(0, 2, 1, 3).reshape(B, T, H * D)  # (B, T, C)


def joined_projection(x, projections):
    """x projected by several Linear layers at once: their weights joined side by side, one product.

    Equal to concatenating ``p(x)`` along the last axis; the join copies
    the weights (small beside the product it saves splitting), and its
    backward hands each weight its slice of the gradient.
    """
    weight = ops.concatenate([p.weight for p in projections], axis=1)  # (C, sum of outs)
    bias = ops.concatenate([p.bias for p in projections], axis=0)  # (sum of outs,)
    return F.linear(x, weight, bias)


def _set_heads(attention, n_embd, n_head, causal, cross, dropout):
    """The shape and kind of an attention layer, checked: C = H x D; cross-attention is not causal."""
    name = type(attention).__name__
    if n_embd % n_head:
        raise ValueError(f"{name}: n_embd {n_embd} is not divisible by n_head {n_head}")
    if cross and causal:
        raise ValueError(f"{name}: cross-attention is not causal; pass causal=False with cross=True")
    attention.n_embd, attention.n_head, attention.head_size = n_embd, n_head, n_embd // n_head
    attention.causal, attention.cross, attention.dropout = causal, cross, dropout


@contextmanager
def recording_attention(model):
    """Within the block, each attention layer of ``model`` writes its last weights into the dict this yields.

    ``with recording_attention(model) as weights: model(idx)`` leaves
    ``weights["h.0.attn"]`` (GPT) or ``weights["encoder.layer.0.attention.self"]``
    (BERT) holding a (B, H, Tq, Tk) array per layer, in the model's order.
    """
    weights = {}
    layers = [(name, module) for name, module in model.named_modules()
              if isinstance(module, (MultiHeadAttention, QKVSelfAttention))]
    for name, layer in layers:
        layer.record_weights = lambda probs, name=name: weights.__setitem__(name, probs)
    try:
        yield weights
    finally:
        for _, layer in layers:
            layer.record_weights = None


def _weights_of(q, k, mask=None, is_causal=False):
    """The attention weights of arrays q (B, H, Tq, D) and k (B, H, Tk, D), as a (B, H, Tq, Tk) array (no graph)."""
    return attention_weights_composed(Tensor(q), Tensor(k), mask=mask, is_causal=is_causal).data


def _heads(x, n_head):
    """(B, T, C) array or Tensor -> (B, H, T, D) view."""
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)  # (B, H, T, D)


def _queries_and_keys(qkv, n_head):
    """The (B, H, T, D) query and key arrays of a packed (B, T, 3C) projection."""
    q, k, _ = (_heads(piece, n_head) for piece in np.split(qkv.data, 3, axis=-1))
    return q, k


class MultiHeadAttention(Module):
    """Multi-head attention over x (B, T, C): causal or bidirectional self-attention, or cross-attention.

    ``out_std`` is the initial std of the output projection c_proj (GPT-2
    shrinks it in deep models, see ``npllm.models.gpt``).  ``record_weights``
    (None, or a function of the (B, H, Tq, Tk) weights) is set by ``recording_attention``.
    """

    record_weights = None

    def __init__(self, n_embd, n_head, bias=True, dropout=0.0, causal=True, cross=False,
                 dtype=np.float32, rng=None, out_std=GPT2_INIT_STD):
        super().__init__()
        _set_heads(self, n_embd, n_head, causal, cross, dropout)
        if cross:
            self.q_attn = Linear(n_embd, n_embd, bias=bias, dtype=dtype, rng=rng)
            self.c_attn = Linear(n_embd, 2 * n_embd, bias=bias, dtype=dtype, rng=rng)
        else:
            self.c_attn = Linear(n_embd, 3 * n_embd, bias=bias, dtype=dtype, rng=rng)
        self.c_proj = Linear(n_embd, n_embd, bias=bias, dtype=dtype, rng=rng, std=out_std)
        self.attn_rng = own_generator(rng)  # masks for the dropout of the attention weights
        self.resid_dropout = Dropout(dropout, rng)

    def new_kv_cache(self, batch_size, capacity) -> KVCache:
        return KVCache(batch_size, self.n_head, self.head_size, capacity, self.c_proj.weight.dtype)

    def forward(self, x, context=None, mask=None, kv_cache=None):
        """x (B, T, C) -> (B, T, C).

        ``context`` (B, S, C): what cross-attention reads (required with
        ``cross=True``).  ``mask``: boolean, True = may attend, broadcastable
        to (B, H, T, S); for the non-causal uses.  ``kv_cache``: a KVCache
        for causal self-attention during generation.
        """
        dropout_p = self.dropout if self.training else 0.0
        if self.cross:
            y = self._cross_attention(x, context, mask, dropout_p, kv_cache)
        else:  # q, k, v split and heads formed inside the fused op
            qkv = self.c_attn(x)
            y = F.self_attention(qkv, self.n_head, mask=mask, is_causal=self.causal,
                                 dropout_p=dropout_p, rng=self.attn_rng, kv_cache=kv_cache)
            if self.record_weights is not None:
                q, k = _queries_and_keys(qkv, self.n_head)
                if kv_cache is not None:  # the new keys are in the cache now, after the earlier ones
                    k = kv_cache.keys[:, :, :kv_cache.length]
                self.record_weights(_weights_of(q, k, mask=mask, is_causal=self.causal))
        return self.resid_dropout(self.c_proj(y))

    def _cross_attention(self, x, context, mask, dropout_p, kv_cache):
        """Queries from x, keys and values from the context; heads merged, (B, T, C)."""
        if context is None:
            raise ValueError("MultiHeadAttention(cross=True) needs a context to attend to")
        if kv_cache is not None:
            raise ValueError("MultiHeadAttention: the KV cache serves causal self-attention, not cross-attention")
        k, v = self.c_attn(context).split(2, axis=-1)
        q, k, v = (split_heads(t, self.n_head) for t in (self.q_attn(x), k, v))
        y = F.scaled_dot_product_attention(q, k, v, mask=mask, dropout_p=dropout_p, rng=self.attn_rng)
        if self.record_weights is not None:
            self.record_weights(_weights_of(q.data, k.data, mask=mask))
        return merge_heads(y)

    def extra_repr(self):
        kind = "cross" if self.cross else ("causal" if self.causal else "bidirectional")
        return f"n_embd={self.n_embd}, n_head={self.n_head}, {kind}"


class QKVSelfAttention(Module):
    """Bidirectional self-attention with separate ``query``, ``key``, ``value`` projections: x (B, T, C) -> (B, T, C).

    BERT's layout (Hugging Face's ``BertSelfAttention``): the heads' outputs
    come back merged but not projected; the output projection belongs to
    the add & norm layer after it.  The three (C, C) weights are joined into
    one (C, 3C) matrix at each call (a copy of 3C^2 numbers, small beside the
    (B T, C) x (C, 3C) product it saves splitting into three), so the packed
    projection feeds ``F.self_attention`` as GPT's ``c_attn`` does; the
    join's backward hands each weight its third of the gradient.
    """

    def __init__(self, n_embd, n_head, dropout=0.0, dtype=np.float32, rng=None):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"QKVSelfAttention: n_embd {n_embd} is not divisible by n_head {n_head}")
        self.n_embd, self.n_head, self.dropout = n_embd, n_head, dropout
        self.query = Linear(n_embd, n_embd, dtype=dtype, rng=rng)
        self.key = Linear(n_embd, n_embd, dtype=dtype, rng=rng)
        self.value = Linear(n_embd, n_embd, dtype=dtype, rng=rng)
        self.attn_rng = own_generator(rng)  # masks for the dropout of the attention weights

    record_weights = None  # see recording_attention

    def forward(self, x, mask=None):
        """``mask``: boolean, True = may attend, broadcastable to (B, H, T, T) (padding: (B, 1, 1, T))."""
        qkv = joined_projection(x, (self.query, self.key, self.value))  # (B, T, 3C)
        dropout_p = self.dropout if self.training else 0.0
        y = F.self_attention(qkv, self.n_head, mask=mask, dropout_p=dropout_p, rng=self.attn_rng)
        if self.record_weights is not None:
            self.record_weights(_weights_of(*_queries_and_keys(qkv, self.n_head), mask=mask))
        return y

    def extra_repr(self):
        return f"n_embd={self.n_embd}, n_head={self.n_head}, bidirectional"


class ProjectedAttention(Module):
    """Attention with four projections of its own, ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj`` (BART's layout).

    Self-attention (``causal`` or not; a ``KVCache`` when causal) or, with
    ``cross=True``, attention from x to a context (the encoder's output).
    ``dropout`` is the dropout of the attention weights; the dropout of the
    output belongs to the layer around it, as in Hugging Face's BART.
    """

    def __init__(self, n_embd, n_head, dropout=0.0, causal=False, cross=False, dtype=np.float32, rng=None,
                 std=GPT2_INIT_STD):
        super().__init__()
        _set_heads(self, n_embd, n_head, causal, cross, dropout)
        for name in ("k_proj", "v_proj", "q_proj", "out_proj"):  # Hugging Face's order
            setattr(self, name, Linear(n_embd, n_embd, dtype=dtype, rng=rng, std=std))
        self.attn_rng = own_generator(rng)  # masks for the dropout of the attention weights

    def new_kv_cache(self, batch_size, capacity) -> KVCache:
        return KVCache(batch_size, self.n_head, self.head_size, capacity, self.out_proj.weight.dtype)

    def context_kv(self, context):
        """The keys and values of ``context`` (B, S, C), each (B, H, S, D): computed once, read at every step."""
        k, v = joined_projection(context, (self.k_proj, self.v_proj)).split(2, axis=-1)  # (B, S, C) each
        return split_heads(k, self.n_head), split_heads(v, self.n_head)

    def forward(self, x, context=None, mask=None, kv_cache=None, context_kv=None):
        """x (B, T, C) -> (B, T, C).

        ``mask``: boolean, True = may attend, broadcastable to (B, H, T, S)
        (padding: (B, 1, 1, S)); causal self-attention adds the causal mask
        to it (and then takes no KV cache).
        Cross-attention reads ``context`` (B, S, C), or its ``context_kv``
        computed before.  ``kv_cache``: causal self-attention's KVCache.
        """
        dropout_p = self.dropout if self.training else 0.0
        if not self.cross:
            qkv = joined_projection(x, (self.q_proj, self.k_proj, self.v_proj))  # (B, T, 3C)
            causal = self.causal
            if causal and mask is not None:  # padding and the future hidden, as one mask
                mask, causal = np.logical_and(mask, F.causal_mask(x.shape[1], x.shape[1])), False
            y = F.self_attention(qkv, self.n_head, mask=mask, is_causal=causal, dropout_p=dropout_p,
                                 rng=self.attn_rng, kv_cache=kv_cache)
            return self.out_proj(y)
        if kv_cache is not None:
            raise ValueError("ProjectedAttention: the KV cache serves causal self-attention; pass context_kv instead")
        if context_kv is None:
            if context is None:
                raise ValueError("ProjectedAttention(cross=True) needs a context or its context_kv")
            context_kv = self.context_kv(context)
        q = split_heads(self.q_proj(x), self.n_head)  # (B, H, T, D)
        y = F.scaled_dot_product_attention(q, *context_kv, mask=mask, dropout_p=dropout_p, rng=self.attn_rng)
        return self.out_proj(merge_heads(y))

    def extra_repr(self):
        kind = "cross" if self.cross else ("causal" if self.causal else "bidirectional")
        return f"n_embd={self.n_embd}, n_head={self.n_head}, {kind}"
