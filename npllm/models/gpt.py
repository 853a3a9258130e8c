"""GPT: a decoder-only transformer, exactly GPT-2's architecture.

From token ids to next-token logits:

    x = wte[idx] + wpe[positions]          token embedding + learned position embedding
    x = h.0(x), h.1(x), ...                n_layer pre-LayerNorm blocks (npllm.nn.transformer)
    x = ln_f(x)                            a final LayerNorm
    logits = x @ wte.T                     scores against every token's embedding

The output projection is *tied* to the token embedding (the same matrix
read twice): a token's input vector is also the direction that predicts it.
That saves V x C parameters and is what GPT-2 does; the tied matrix is
counted, stored and updated once, and receives the gradient of both uses.

Names and layout are GPT-2's, without Hugging Face's ``transformer.`` prefix
(wte.weight, wpe.weight, h.0.ln_1.weight, h.0.attn.c_attn.weight,
h.0.attn.c_proj.bias, h.0.mlp.c_fc.weight, ..., ln_f.bias; no lm_head entry,
since it is wte), with Linear weights stored (in, out) as GPT-2's Conv1D
does: a GPT-2 checkpoint's tensors map onto this model one to one, by name
(``npllm.pretrained.gpt2`` reads and writes Hugging Face's GPT-2 folders).

Initialisation is GPT-2's: every weight matrix and embedding ~ N(0, 0.02^2),
biases zero, LayerNorm gains one; and the two projections that write into
the residual stream in each block (attn.c_proj, mlp.c_proj) get std
0.02 / sqrt(2 n_layer).  The stream is a sum of 2 n_layer such outputs; if
each added a term of fixed variance the stream's variance would grow with
depth, and the scaling keeps it the same at any depth.

Symbols: B batch, T time (sequence length), C = n_embd channels, V vocabulary.
Left out here: sampling and the KV-cache loop (``npllm.generation``, which
drives any decoder through ``forward(idx, kv_cache)`` and ``new_kv_cache``),
weight sharing across layers, other position schemes.
"""

import math
from dataclasses import dataclass

import numpy as np

import npllm.functional as F
from npllm.nn import Block, Dropout, Embedding, LayerNorm, Module, ModuleList
from npllm.nn.layers import GPT2_INIT_STD
from npllm.errors import SettingError
from npllm.tensor import as_array


@dataclass
class GPTConfig:
    """The shape of a GPT.  The defaults are GPT-2 small (124M parameters)."""

    vocab_size: int = 50257     # number of token ids: GPT-2's 256 bytes + 50,000 merges + <|endoftext|>
    context_length: int = 1024  # the longest sequence the model reads (the rows of wpe)
    n_layer: int = 12           # number of transformer blocks
    n_head: int = 12            # attention heads per block; must divide n_embd
    n_embd: int = 768           # width C of the residual stream
    dropout: float = 0.0        # dropout probability in training (GPT-2 used 0.1; 0 is best for short runs)
    bias: bool = True           # biases in Linear and LayerNorm layers, as in GPT-2
    layer_norm_eps: float = 1e-5  # added to the variance in every LayerNorm (GPT-2's layer_norm_epsilon)
    dtype: str = "float32"      # float32 to train; float64 for gradient checks

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise SettingError(f"GPTConfig: `{name}` must be at least 1, got {getattr(self, name)}")
        if not self.layer_norm_eps > 0:
            raise SettingError(f"GPTConfig: `layer_norm_eps` must be positive, got {self.layer_norm_eps}")
        if self.n_embd % self.n_head:
            raise SettingError(f"GPTConfig: `n_embd` {self.n_embd} is not divisible by `n_head` {self.n_head}")
        if np.dtype(self.dtype).kind != "f":
            raise SettingError(f"GPTConfig: `dtype` must be a floating type, got {self.dtype!r}")
        self.dtype = np.dtype(self.dtype).name  # a plain string ("float32"), whatever form was given


class GPT(Module):
    """GPT-2: ``model(idx)`` maps token ids (B, T) to next-token logits (B, T, V)."""

    def __init__(self, config: GPTConfig, seed=0):
        super().__init__()
        self.config = config
        C, dtype = config.n_embd, np.dtype(config.dtype)
        rng = np.random.default_rng(seed)
        residual_std = GPT2_INIT_STD / math.sqrt(2 * config.n_layer)
        self.wte = Embedding(config.vocab_size, C, dtype=dtype, rng=rng)
        self.wpe = Embedding(config.context_length, C, dtype=dtype, rng=rng)
        self.drop = Dropout(config.dropout, rng)
        self.h = ModuleList(
            Block(C, config.n_head, bias=config.bias, dropout=config.dropout, dtype=dtype, rng=rng,
                  out_std=residual_std, layer_norm_eps=config.layer_norm_eps)
            for _ in range(config.n_layer)
        )
        self.ln_f = LayerNorm(C, bias=config.bias, eps=config.layer_norm_eps, dtype=dtype)

    def forward(self, idx, kv_cache=None):
        """Logits (B, T, V) for token ids ``idx`` (B, T), an integer ndarray or Tensor.

        With ``kv_cache`` (from ``new_kv_cache``), ``idx`` holds only the new
        tokens; they take the positions after those already cached.
        """
        x = self.hidden_states(idx, kv_cache)
        return F.linear(x, self.wte.weight.T)  # (B, T, C) @ (C, V): the tied output projection

    def hidden_states(self, idx, kv_cache=None):
        """The final hidden states (B, T, C), after ``ln_f``: what the output projection, or a new head, reads."""
        idx = as_array(idx)
        start = kv_cache[0].length if kv_cache else 0
        self._check_input(idx, start)
        T = idx.shape[1]
        # positions start..start+T-1 are consecutive: a slice of wpe, whose backward is a plain
        # copy into rows of zeros (an embedding lookup would sort and scatter-add its ids)
        x = self.drop(self.wte(idx) + self.wpe.weight[start:start + T])  # (B, T, C) + (T, C)
        for i, block in enumerate(self.h):
            x = block(x, kv_cache=kv_cache[i] if kv_cache else None)
        return self.ln_f(x)

    def _check_input(self, idx, start):
        V, context_length = self.config.vocab_size, self.config.context_length
        if idx.ndim != 2 or idx.dtype.kind not in "iu":
            raise ValueError(
                f"GPT: idx must be a (B, T) array of integer token ids, got {idx.dtype} of shape {idx.shape}"
            )
        outside = (idx < 0) | (idx >= V)
        if outside.any():
            where = tuple(int(i) for i in np.argwhere(outside)[0])
            raise ValueError(
                f"GPT: token id {int(idx[where])} at (batch, position) {where} is outside the vocabulary"
                f" of {V} ids (0..{V - 1})"
            )
        if start + idx.shape[1] > context_length:
            cached = f" ({start} cached + {idx.shape[1]} new)" if start else ""
            raise ValueError(
                f"GPT: sequence length {start + idx.shape[1]}{cached} exceeds context_length {context_length}"
            )

    def new_kv_cache(self, batch_size):
        """One empty KVCache per block, each with room for ``context_length`` positions."""
        return [block.attn.new_kv_cache(batch_size, self.config.context_length) for block in self.h]

    def num_parameters(self, include_position_embeddings=True) -> int:
        """Number of parameters, the tied wte/lm_head counted once; optionally without wpe."""
        total = super().num_parameters()
        return total if include_position_embeddings else total - self.wpe.weight.size

    def flops_per_token(self, T=None) -> int:
        """Floating-point operations to train on one token (forward + backward) at sequence length T.

            6 N + 12 n_layer n_embd T

        Each parameter takes part in one multiply-add (2 flops) per token in
        the forward pass and two in the backward (the input's and the
        weight's gradient): 6 flops.  N excludes wpe (a lookup does no
        arithmetic) but includes wte, because the tied output projection is
        a real matmul.  Attention adds, per layer, q.k against T keys and the
        weighted sum of T values: 2 x 2 T C forward, times 3 with backward.
        The causal mask makes half of those scores unused, but they are
        computed, so they are counted (PaLM's convention).  T defaults to
        ``context_length``.
        """
        T = self.config.context_length if T is None else T
        N = self.num_parameters(include_position_embeddings=False)
        return 6 * N + 12 * self.config.n_layer * self.config.n_embd * T

    def extra_repr(self):
        c = self.config
        return f"vocab_size={c.vocab_size}, context_length={c.context_length}, n_layer={c.n_layer}, " \
               f"n_head={c.n_head}, n_embd={c.n_embd}, dtype={c.dtype}"
