"""BART: an encoder–decoder transformer, exactly as Hugging Face's ``BartModel`` / ``BartForConditionalGeneration``.

The encoder reads the whole source once; the decoder writes the target one
token at a time, reading at every layer both its own past (causal
self-attention) and the encoder's output (cross-attention):

    source ids (B, S) -> encoder -> memory (B, S, C)            once per source
        x = shared[ids] * embed_scale + embed_positions[2 + 0..S-1]
        x = layernorm_embedding(x)                 (then dropout)
        x = layers.0(x, source mask), ...          post-LN: self-attention, MLP
    target ids (B, T) + memory -> decoder -> hidden (B, T, C)   once per target position when generating
        y = shared[ids] * embed_scale + embed_positions[2 + t0..t0+T-1]
        y = layernorm_embedding(y)
        y = layers.0(y, memory), ...               post-LN: causal self-attention,
                                                   cross-attention (queries from y, keys and values
                                                   from memory), MLP
    logits (B, T, V) = hidden @ shared^T + final_logits_bias

Cross-attention is where the two halves meet: target position t asks, in
every decoder layer, which source positions matter for the next token, and
reads a mix of their vectors.  Its keys and values are projections of the
memory alone, the same at every step, so a generating decoder computes them
once per source (``new_decoder_cache``) and carries them beside the KV
cache of its own self-attention: a step then feeds one token per sequence
(``decode(..., cache=)``), as GPT's cached step does.

What differs from GPT (``npllm.models.gpt``) and BERT (``npllm.models.bert``), and why:

- **Two stacks.**  BERT is the encoder alone (it reads a text), GPT the
  decoder alone (it continues one); BART reads one text and writes another
  (a summary, a translation, a docstring), so it needs both, joined by
  cross-attention, which neither has.  Its pre-training corrupts a text
  (spans replaced by one mask token) and asks the decoder for the original.
- **Post-LayerNorm** in both stacks, as BERT (and the original
  Transformer): ``x = LN(x + sublayer(x))`` after each of the two (encoder)
  or three (decoder) sub-layers; GPT normalises before each one instead.
  No final LayerNorm, but one after the embeddings (``layernorm_embedding``).
- **Positions with an offset of 2.**  fairseq reserved the table's first two
  rows, so position p reads row p + 2 and the table has
  ``max_position_embeddings + 2`` rows; there are no token types.
- **One shared table** (``model.shared``) embeds the source and the target
  and is the LM head (as GPT's ``wte``); ``final_logits_bias`` (zeros in
  BART's checkpoints, a buffer in Hugging Face's, here a frozen Parameter)
  is added to the logits.  The pad row of the table receives no gradient
  from the lookups (PyTorch's ``padding_idx``).
- **Separate projections** ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj``
  (``npllm.nn.ProjectedAttention``), and names ``self_attn_layer_norm``,
  ``fc1``, ``fc2``, ``final_layer_norm``, fairseq's, which Hugging Face kept;
  hence its own layers here rather than BERT's ``PostLNBlock``, whose pieces
  carry BERT's names.  The GELU is the exact erf form, as BERT's.

Names and shapes are Hugging Face's (``model.shared.weight``,
``model.encoder.embed_positions.weight``,
``model.decoder.layers.0.encoder_attn.k_proj.weight``, ...,
``final_logits_bias``); the tied ``lm_head.weight`` and the per-stack
``embed_tokens`` are ``model.shared`` and have no entries of their own.
npllm's Linear stores its weight (in, out), PyTorch's (out, in): the loader
(``npllm.pretrained.bart``) transposes.  Initialisation is BART's:
N(0, init_std^2) weights and embeddings, zero biases, unit LayerNorm gains,
the pad row zero.

Teacher forcing: the decoder reads the target shifted right behind
``decoder_start_token_id`` (``shift_tokens_right``) and is scored on the
target itself.  Symbols: B batch, S source length, T target length,
C = d_model, H heads, D = C / H, V vocabulary.  Left out: the sequence
classification and question-answering heads, layer drop, and attention
with a KV cache over a padded target (generation pads no target).
"""

import math
from dataclasses import dataclass

import numpy as np

import npllm.functional as F
from npllm.errors import NpllmError, SettingError
from npllm.models.bert import GELU_FORMS
from npllm.nn import Dropout, Embedding, LayerNorm, Linear, Module, ModuleList, Parameter, ProjectedAttention
from npllm.tensor import as_array

POSITION_OFFSET = 2  # fairseq's two reserved rows at the top of each position table


class BARTInputError(NpllmError, ValueError):
    """Token ids or a mask that the model cannot read: one line naming which and why."""


@dataclass
class BARTConfig:
    """The shape of a BART, under Hugging Face's ``BartConfig`` names.  The defaults are facebook/bart-base (139M)."""

    vocab_size: int = 50265             # GPT-2's byte-level BPE, with BART's <s> <pad> </s> <unk> and <mask>
    d_model: int = 768                  # width C of both stacks
    encoder_layers: int = 6
    decoder_layers: int = 6
    encoder_attention_heads: int = 12   # must divide d_model
    decoder_attention_heads: int = 12
    encoder_ffn_dim: int = 3072         # width of the MLP, 4C
    decoder_ffn_dim: int = 3072
    max_position_embeddings: int = 1024  # the longest source and target (each table has 2 more rows)
    activation_function: str = "gelu"   # "gelu" = exact erf GELU; "gelu_new" = GPT-2's tanh form
    dropout: float = 0.1                # on embeddings and sub-layer outputs
    attention_dropout: float = 0.1      # on attention weights
    activation_dropout: float = 0.1     # after the MLP's activation
    init_std: float = 0.02              # std of the initial weights and embeddings
    scale_embedding: bool = False       # multiply token embeddings by sqrt(d_model) (mBART, Marian do)
    pad_token_id: int = 1               # <pad>: its embedding starts at zero and is never trained by a lookup
    bos_token_id: int = 0               # <s>, the first token of every text
    eos_token_id: int = 2               # </s>, the last
    decoder_start_token_id: int = 2     # the decoder's first input (BART starts from </s>)
    forced_bos_token_id: int | None = None  # a token generation must write first (None: none)
    forced_eos_token_id: int | None = 2     # the token generation writes when it reaches its length limit
    dtype: str = "float32"              # float32 to run; float64 for gradient checks

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
                     "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "max_position_embeddings"):
            if getattr(self, name) < 1:
                raise SettingError(f"BARTConfig: `{name}` must be at least 1, got {getattr(self, name)}")
        for name in ("encoder_attention_heads", "decoder_attention_heads"):
            if self.d_model % getattr(self, name):
                raise SettingError(f"BARTConfig: `d_model` {self.d_model} is not divisible by"
                                   f" `{name}` {getattr(self, name)}")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise SettingError(f"BARTConfig: `{name}` must be in [0, 1), got {getattr(self, name)}")
        if self.activation_function not in GELU_FORMS:
            raise SettingError(f"BARTConfig: `activation_function` must be one of {', '.join(GELU_FORMS)},"
                               f" got {self.activation_function!r}")
        if not self.init_std > 0:
            raise SettingError(f"BARTConfig: `init_std` must be positive, got {self.init_std}")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id",
                     "forced_bos_token_id", "forced_eos_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise SettingError(f"BARTConfig: `{name}` {value} is outside the vocabulary of {self.vocab_size}")
        if np.dtype(self.dtype).kind != "f":
            raise SettingError(f"BARTConfig: `dtype` must be a floating type, got {self.dtype!r}")
        self.dtype = np.dtype(self.dtype).name


def shift_tokens_right(labels, pad_token_id: int, decoder_start_token_id: int) -> np.ndarray:
    """The decoder's input for teacher forcing: ``labels`` (B, T) moved one step right behind the start token.

    Ignored label positions (-100, the loss's ``IGNORE_INDEX``) become padding.
    """
    labels = as_array(labels)
    shifted = np.empty_like(labels)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    shifted[shifted == F.IGNORE_INDEX] = pad_token_id
    return shifted


class _PostLNLayer(Module):
    """What BART's two layers share: add & norm after a sub-layer, and the MLP sub-layer ``fc1``, ``fc2``."""

    def _build_mlp(self, config: BARTConfig, ffn_dim: int, rng):
        dtype, C = np.dtype(config.dtype), config.d_model
        self.fc1 = Linear(C, ffn_dim, dtype=dtype, rng=rng, std=config.init_std)
        self.fc2 = Linear(ffn_dim, C, dtype=dtype, rng=rng, std=config.init_std)
        self.final_layer_norm = LayerNorm(C, eps=1e-5, dtype=dtype)
        self.dropout = Dropout(config.dropout, rng)
        self.activation_dropout = Dropout(config.activation_dropout, rng)
        self.approximate = GELU_FORMS[config.activation_function]

    def _add_norm(self, norm, residual, update):
        """norm(residual + dropout(update)): post-LN's closing of a sub-layer."""
        return norm(residual + self.dropout(update))

    def _mlp(self, x):
        """final_layer_norm(x + fc2(gelu(fc1(x))))."""
        hidden = self.activation_dropout(F.gelu(self.fc1(x), self.approximate))
        return self._add_norm(self.final_layer_norm, x, self.fc2(hidden))


def _attention(config: BARTConfig, heads: int, rng, **kind):
    return ProjectedAttention(config.d_model, heads, dropout=config.attention_dropout, dtype=np.dtype(config.dtype),
                              rng=rng, std=config.init_std, **kind)


def _layer_norm(config: BARTConfig):
    return LayerNorm(config.d_model, eps=1e-5, dtype=np.dtype(config.dtype))


class BARTEncoderLayer(_PostLNLayer):
    """x = LN(x + self_attn(x)), then x = LN(x + mlp(x)) (Hugging Face's ``BartEncoderLayer``)."""

    def __init__(self, config: BARTConfig, rng):
        super().__init__()
        self.self_attn = _attention(config, config.encoder_attention_heads, rng)
        self.self_attn_layer_norm = _layer_norm(config)
        self._build_mlp(config, config.encoder_ffn_dim, rng)

    def forward(self, x, mask=None):
        """x (B, S, C); ``mask`` (B, 1, 1, S) boolean, True = a real token."""
        x = self._add_norm(self.self_attn_layer_norm, x, self.self_attn(x, mask=mask))
        return self._mlp(x)


class BARTDecoderLayer(_PostLNLayer):
    """Causal self-attention, cross-attention over the encoder's output, the MLP; each closed by add & norm."""

    def __init__(self, config: BARTConfig, rng):
        super().__init__()
        heads = config.decoder_attention_heads
        self.self_attn = _attention(config, heads, rng, causal=True)
        self.self_attn_layer_norm = _layer_norm(config)
        self.encoder_attn = _attention(config, heads, rng, cross=True)
        self.encoder_attn_layer_norm = _layer_norm(config)
        self._build_mlp(config, config.decoder_ffn_dim, rng)

    def forward(self, y, context_kv, source_mask=None, target_mask=None, kv_cache=None):
        """y (B, T, C) -> (B, T, C).

        ``context_kv``: the cross-attention's keys and values of the
        encoder's output (``encoder_attn.context_kv``), each (B, H, S, D).
        ``source_mask`` (B, 1, 1, S) hides source padding from every query;
        ``target_mask`` (B, 1, 1, T) target padding (with the causal mask).
        """
        y = self._add_norm(self.self_attn_layer_norm, y, self.self_attn(y, mask=target_mask, kv_cache=kv_cache))
        cross = self.encoder_attn(y, mask=source_mask, context_kv=context_kv)
        y = self._add_norm(self.encoder_attn_layer_norm, y, cross)
        return self._mlp(y)


class _Stack(Module):
    """What the encoder and the decoder share: embedding tokens and positions, then ``layernorm_embedding``."""

    def __init__(self, config: BARTConfig, shared: Embedding, n_layers: int, layer_class, rng):
        super().__init__()
        self.config = config
        object.__setattr__(self, "shared", shared)  # the model's table, read here but registered once, as model.shared
        self.embed_scale = math.sqrt(config.d_model) if config.scale_embedding else 1.0
        self.embed_positions = Embedding(config.max_position_embeddings + POSITION_OFFSET, config.d_model,
                                         dtype=np.dtype(config.dtype), rng=rng, std=config.init_std)
        self.layers = ModuleList(layer_class(config, rng) for _ in range(n_layers))
        self.layernorm_embedding = _layer_norm(config)
        self.dropout = Dropout(config.dropout, rng)

    def embed(self, ids, start=0):
        """ids (B, T) at positions start..start+T-1 -> normalised embeddings (B, T, C)."""
        tokens = self.shared(ids)
        if self.embed_scale != 1.0:
            tokens = tokens * self.embed_scale
        first = start + POSITION_OFFSET
        # consecutive positions: a slice of the table (its backward a copy, not a scatter-add)
        x = tokens + self.embed_positions.weight[first:first + ids.shape[1]]  # (B, T, C) + (T, C)
        return self.dropout(self.layernorm_embedding(x))


class BARTEncoder(_Stack):
    """Source ids (B, S) -> the encoder's output (B, S, C), the memory the decoder reads."""

    def __init__(self, config: BARTConfig, shared: Embedding, rng):
        super().__init__(config, shared, config.encoder_layers, BARTEncoderLayer, rng)

    def forward(self, ids, mask=None):
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x, mask)
        return x


class BARTDecoder(_Stack):
    """Target ids (B, T) and the cross-attention's keys and values -> decoder hidden states (B, T, C)."""

    def __init__(self, config: BARTConfig, shared: Embedding, rng):
        super().__init__(config, shared, config.decoder_layers, BARTDecoderLayer, rng)

    def context_kv(self, memory):
        """Each layer's cross-attention keys and values of the encoder's output ``memory`` (B, S, C)."""
        return [layer.encoder_attn.context_kv(memory) for layer in self.layers]

    def forward(self, ids, context_kv, source_mask=None, target_mask=None, kv_caches=None, start=0):
        y = self.embed(ids, start)
        for i, layer in enumerate(self.layers):
            y = layer(y, context_kv[i], source_mask, target_mask, kv_caches[i] if kv_caches else None)
        return y


class DecoderCache:
    """What a generating decoder keeps for one batch of sequences between its steps.

    Per decoder layer: the KVCache of its causal self-attention (the target
    positions so far) and the cross-attention's keys and values of the
    encoder's output, computed once; and the source's padding mask.
    ``length`` is the number of target positions already fed.
    """

    def __init__(self, self_attention, cross_attention, source_mask):
        self.self_attention = self_attention  # [KVCache] per layer
        self.cross_attention = cross_attention  # [(keys, values)] per layer, each (B, H, S, D)
        self.source_mask = source_mask  # (B, 1, 1, S) booleans, or None

    @property
    def length(self) -> int:
        return self.self_attention[0].length

    def reorder(self, rows):
        """Row i continues sequence ``rows[i]`` (beam search), which must read the same source as row i.

        Only the self-attention caches move: rows of one source share its
        cross-attention keys and values, so those stay where they are.
        """
        for cache in self.self_attention:
            cache.reorder(rows)


class BART(Module):
    """BART's two stacks (Hugging Face's ``BartModel``): ``model(input_ids, decoder_input_ids)`` -> (B, T, C)."""

    def __init__(self, config: BARTConfig, seed=0, rng=None):
        super().__init__()
        self.config = config
        rng = np.random.default_rng(seed) if rng is None else rng
        self.shared = Embedding(config.vocab_size, config.d_model, dtype=np.dtype(config.dtype), rng=rng,
                                std=config.init_std, padding_idx=config.pad_token_id)
        self.encoder = BARTEncoder(config, self.shared, rng)
        self.decoder = BARTDecoder(config, self.shared, rng)

    def forward(self, input_ids, decoder_input_ids, attention_mask=None, decoder_attention_mask=None):
        """Decoder hidden states (B, T, C) for source ids (B, S) and decoder input ids (B, T).

        ``attention_mask`` (B, S) and ``decoder_attention_mask`` (B, T): 1 or
        True for a real token, 0 or False for padding (default: all real).
        """
        memory = self.encode(input_ids, attention_mask)
        return self.decode(decoder_input_ids, memory, attention_mask, decoder_attention_mask)

    def encode(self, input_ids, attention_mask=None):
        """The encoder's output (B, S, C) for source ids (B, S): computed once per source."""
        input_ids, mask = self._checked(input_ids, attention_mask, "input_ids", "attention_mask")
        return self.encoder(input_ids, _padding_mask(mask))

    def decode(self, decoder_input_ids, encoder_hidden_states=None, attention_mask=None,
               decoder_attention_mask=None, cache: DecoderCache = None):
        """Decoder hidden states (B, T, C) for decoder input ids (B, T) reading the encoder's output.

        Without ``cache``: the whole target at once, reading
        ``encoder_hidden_states`` (B, S, C) whose source padding is
        ``attention_mask`` (B, S).  With a ``cache`` (``new_decoder_cache``):
        only the new target tokens, at the positions after those cached;
        the encoder's part comes from the cache.
        """
        start = cache.length if cache is not None else 0
        ids, target_mask = self._checked(decoder_input_ids, decoder_attention_mask, "decoder_input_ids",
                                         "decoder_attention_mask", start)
        if cache is not None:
            if target_mask is not None:
                raise BARTInputError("BART: a cached decoder step reads no decoder_attention_mask"
                                     " (generation pads no target)")
            if ids.shape[0] != cache.self_attention[0].keys.shape[0]:
                raise BARTInputError(f"BART: {ids.shape[0]} decoder rows for a cache of"
                                     f" {cache.self_attention[0].keys.shape[0]} sequences")
            return self.decoder(ids, cache.cross_attention, cache.source_mask, kv_caches=cache.self_attention,
                                start=start)
        if encoder_hidden_states is None:
            raise BARTInputError("BART: decode needs encoder_hidden_states (from encode) or a cache")
        source_mask = self._checked_source_mask(attention_mask, encoder_hidden_states, ids.shape[0])
        return self.decoder(ids, self.decoder.context_kv(encoder_hidden_states), source_mask,
                            _padding_mask(target_mask))

    def new_decoder_cache(self, encoder_hidden_states, attention_mask=None, capacity=None,
                          rows_per_source=1) -> DecoderCache:
        """An empty DecoderCache for the sources of ``encoder_hidden_states`` (B, S, C).

        The cross-attention keys and values are computed here, once per
        source (call it under ``no_grad``), and each source's are repeated
        for its ``rows_per_source`` sequences (beam search's beams: rows
        b * rows_per_source ... read source b).  ``capacity`` (default: the
        position table) bounds the target length.
        """
        hidden = as_array(encoder_hidden_states)
        source_mask = self._checked_source_mask(attention_mask, hidden, hidden.shape[0])
        capacity = self.config.max_position_embeddings if capacity is None else capacity
        rows = hidden.shape[0] * rows_per_source
        self_attention = [layer.self_attn.new_kv_cache(rows, capacity) for layer in self.decoder.layers]
        cross_attention = [tuple(np.repeat(as_array(t), rows_per_source, axis=0) for t in kv)
                           for kv in self.decoder.context_kv(encoder_hidden_states)]  # (B * rows, H, S, D) each
        if source_mask is not None:
            source_mask = np.repeat(source_mask, rows_per_source, axis=0)
        return DecoderCache(self_attention, cross_attention, source_mask)

    def _checked(self, ids, mask, ids_name, mask_name, start=0):
        """Token ids (B, T) checked against the vocabulary and the position table, and their mask as booleans."""
        config = self.config
        ids = as_array(ids)
        if ids.ndim != 2 or ids.dtype.kind not in "iu":
            raise BARTInputError(f"BART: {ids_name} must be a (B, T) array of integers, got {ids.dtype}"
                                 f" of shape {ids.shape}")
        if ids.shape[1] == 0:
            raise BARTInputError(f"BART: {ids_name} holds no token (shape {ids.shape})")
        outside = (ids < 0) | (ids >= config.vocab_size)
        if outside.any():
            where = tuple(int(i) for i in np.argwhere(outside)[0])
            raise BARTInputError(f"BART: {ids_name} holds token id {int(ids[where])} at (batch, position) {where},"
                                 f" outside the vocabulary of {config.vocab_size} ids (0..{config.vocab_size - 1})")
        if start + ids.shape[1] > config.max_position_embeddings:
            cached = f" ({start} cached + {ids.shape[1]} new)" if start else ""
            raise BARTInputError(f"BART: {ids_name} has length {start + ids.shape[1]}{cached}, more than the"
                                 f" position table's {config.max_position_embeddings} (`max_position_embeddings`)")
        return ids, _boolean_mask(mask, ids.shape, mask_name)

    def _checked_source_mask(self, attention_mask, hidden, batch_size):
        """The source padding mask (B, 1, 1, S) for encoder states ``hidden`` (B, S, C), or None."""
        shape = as_array(hidden).shape
        if len(shape) != 3 or shape[0] != batch_size or shape[2] != self.config.d_model:
            raise BARTInputError(f"BART: encoder_hidden_states must be ({batch_size}, S, {self.config.d_model}),"
                                 f" got shape {shape}")
        return _padding_mask(_boolean_mask(attention_mask, shape[:2], "attention_mask"))

    def extra_repr(self):
        c = self.config
        return (f"vocab_size={c.vocab_size}, d_model={c.d_model}, encoder_layers={c.encoder_layers}, "
                f"decoder_layers={c.decoder_layers}, max_position_embeddings={c.max_position_embeddings}, "
                f"dtype={c.dtype}")


def _boolean_mask(mask, shape, name):
    """``mask`` (1/True = a real token) as booleans of ``shape``, or None for no mask."""
    if mask is None:
        return None
    mask = as_array(mask)
    if mask.shape != tuple(shape):
        raise BARTInputError(f"BART: {name} must have shape {tuple(shape)}, got {mask.shape}")
    if mask.dtype != bool:
        if mask.dtype.kind not in "iu" or ((mask != 0) & (mask != 1)).any():
            raise BARTInputError(f"BART: {name} must hold booleans or integers 0/1 (1 = a real token),"
                                 f" got {mask.dtype}" + (" with other values" if mask.dtype.kind in "iu" else ""))
        mask = mask.astype(bool)
    return mask


def _padding_mask(mask):
    """(B, L) booleans -> (B, 1, 1, L): every head and every query sees the same real keys."""
    return None if mask is None else mask[:, None, None, :]


class BARTForConditionalGeneration(Module):
    """BART with its LM head (Hugging Face's ``BartForConditionalGeneration``): logits (B, T, V) per target position.

    ``model.encode`` runs the encoder, ``model.decode`` the decoder and the
    head (with a ``new_decoder_cache`` for generation, one step at a time).
    """

    def __init__(self, config: BARTConfig, seed=0):
        super().__init__()
        self.config = config
        self.model = BART(config, rng=np.random.default_rng(seed))
        self.final_logits_bias = Parameter(np.zeros((1, config.vocab_size), dtype=np.dtype(config.dtype)))
        self.final_logits_bias.requires_grad = False  # a buffer in Hugging Face's BART: never trained

    def forward(self, input_ids, decoder_input_ids, attention_mask=None, decoder_attention_mask=None):
        """Logits (B, T, V) for source ids (B, S) and decoder input ids (B, T) (masks: 1 = a real token)."""
        return self.lm_logits(self.model(input_ids, decoder_input_ids, attention_mask, decoder_attention_mask))

    def encode(self, input_ids, attention_mask=None):
        """The encoder's output (B, S, C)."""
        return self.model.encode(input_ids, attention_mask)

    def decode(self, decoder_input_ids, encoder_hidden_states=None, attention_mask=None,
               decoder_attention_mask=None, cache: DecoderCache = None):
        """Logits (B, T, V) for decoder input ids (B, T): ``BART.decode`` and the LM head."""
        return self.lm_logits(self.model.decode(decoder_input_ids, encoder_hidden_states, attention_mask,
                                                decoder_attention_mask, cache))

    def new_decoder_cache(self, encoder_hidden_states, attention_mask=None, capacity=None,
                          rows_per_source=1) -> DecoderCache:
        return self.model.new_decoder_cache(encoder_hidden_states, attention_mask, capacity, rows_per_source)

    def lm_logits(self, hidden):
        """hidden (B, T, C) @ shared^T (C, V) + final_logits_bias: the tied LM head."""
        bias = self.final_logits_bias.reshape(self.config.vocab_size)
        return F.linear(hidden, self.model.shared.weight.T, bias)

    def flops_per_token(self, source_length=None, target_length=None) -> int:
        """Floating-point operations to train on one target token (forward + backward), source and target as long.

            6 (N_encoder + N_decoder + N_head) + 12 C (L_enc S + L_dec (T + S))

        As ``GPT.flops_per_token``: 6 per multiplying parameter (the tables
        are lookups; the tied head is a (C, V) product), attention's scores
        and weighted sums against S source keys (encoder self-attention,
        decoder cross-attention) and T target keys (decoder self-attention).
        Counts one source token per target token (denoising: S = T).
        """
        c = self.config
        S = c.max_position_embeddings if source_length is None else source_length
        T = S if target_length is None else target_length
        tables = self.model.shared.weight.size + 2 * self.model.encoder.embed_positions.weight.size
        trainable = sum(p.size for p in self.parameters() if p.requires_grad)
        head = self.model.shared.weight.size
        attention = 12 * c.d_model * (c.encoder_layers * S + c.decoder_layers * (T + S))
        return int(6 * (trainable - tables + head) + attention)

    def extra_repr(self):
        return self.model.extra_repr()
