"""BERT: an encoder-only transformer, exactly as Hugging Face's ``BertModel`` and ``BertForMaskedLM`` lay it out.

From token ids to one vector per position:

    x = word_embeddings[idx] + position_embeddings[0..T-1] + token_type_embeddings[token_type_ids]
    x = embeddings.LayerNorm(x)                  (then dropout)
    x = encoder.layer.0(x, mask), ...            n_layer post-LayerNorm blocks (npllm.nn.PostLNBlock)
    pooled = tanh(pooler.dense(x[:, 0]))         the [CLS] position, for sentence-level heads

What differs from GPT (``npllm.models.gpt``), and why:

- **Bidirectional attention.**  A GPT predicts the next token, so position i
  must not see j > i; an encoder reads a whole given text, so every
  position attends to every other.  It can no longer be trained to predict
  the next token (it would see it), hence the masked-LM objective: hide
  some tokens behind [MASK] and predict them from both sides
  (``npllm.training.objectives.MaskedLM``).  Batches of texts of different
  lengths are padded, and ``attention_mask`` (1 = a real token, 0 = padding)
  hides the padding from every query, so a real token's output never
  depends on what the padded positions hold.
- **Post-LayerNorm.**  BERT (2018) kept the original Transformer's order,
  ``LN(x + sublayer(x))``: the stream is normalised after every addition.
  GPT-2 moved the norm before each sub-layer, which trains deep stacks more
  stably; a post-LN model needs its learning-rate warm-up.  Hence also no
  final LayerNorm: the last block's output is already normalised.
- **Token types.**  BERT reads pairs of texts ("question [SEP] passage"), and
  a learned ``token_type_embeddings`` row (0 for the first text, 1 for the
  second) is added to every position, telling the two apart beyond the
  [SEP] between them.  Single texts use type 0 throughout.
- **Exact GELU.**  BERT's MLP uses the erf form x Phi(x) (``hidden_act``
  "gelu"); GPT-2's tanh form ("gelu_new") is a close approximation.
- **The masked-LM head** (``BERTForMaskedLM``): dense, GELU, LayerNorm, then
  scores against every word embedding (the decoder is tied to
  ``word_embeddings``, as GPT's output is tied to ``wte``) plus a bias of its
  own per token.

Names and shapes are Hugging Face's, so a checkpoint loads by name
(``npllm.pretrained.bert``): ``embeddings.word_embeddings.weight``,
``encoder.layer.0.attention.self.query.weight``, ...,
``pooler.dense.weight``; ``BERTForMaskedLM`` puts the encoder under ``bert.``
(without the pooler, as Hugging Face does) and the head under
``cls.predictions.``.  One difference: npllm's Linear stores its weight
(in, out), PyTorch's (out, in); the loader transposes.

Initialisation is BERT's: weights and embeddings ~ N(0, 0.02^2), biases zero,
LayerNorm gains one, the [PAD] row of the word embeddings zero.

``BERTForPreTraining`` is Hugging Face's ``BertForPreTraining``: the same,
with the pooler, and a second head under ``cls.seq_relationship``, a (C, 2)
layer on the pooled [CLS] vector for next-sentence prediction (was the
second text of a pair the one that followed the first?).  BERT trained both
heads together; RoBERTa (2019) found that dropping the second and packing
every row with contiguous text trains as well or better, so npllm's
pre-training leaves it off unless asked (``npllm train --model bert
--next-sentence``).

Symbols: B batch, T time (sequence length), C = n_embd channels, V vocabulary.
Left out: relative position embeddings, and a KV cache (an encoder reads its
input once).
"""

from dataclasses import dataclass

import numpy as np

import npllm.functional as F
from npllm.errors import NpllmError, SettingError
from npllm.nn import Dropout, Embedding, LayerNorm, Linear, Module, ModuleList, Parameter, PostLNBlock
from npllm.tensor import as_array

# hidden_act in a Hugging Face config -> the GELU form (``F.gelu``'s approximate) it names
GELU_FORMS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}


class BERTInputError(NpllmError, ValueError):
    """Token ids, an attention mask or token types that the model cannot read: one line naming which and why."""


@dataclass
class BERTConfig:
    """The shape of a BERT.  The defaults are bert-base-uncased (110M parameters)."""

    vocab_size: int = 30522         # WordPiece vocabulary of bert-base-uncased
    context_length: int = 512       # the longest sequence (rows of position_embeddings; HF: max_position_embeddings)
    n_layer: int = 12               # number of blocks (HF: num_hidden_layers)
    n_head: int = 12                # attention heads per block; must divide n_embd (HF: num_attention_heads)
    n_embd: int = 768               # width C of the stream (HF: hidden_size)
    n_inner: int = 3072             # width of the MLP, 4C (HF: intermediate_size)
    type_vocab_size: int = 2        # token types: first and second text of a pair
    dropout: float = 0.1            # dropout on embeddings and sub-layer outputs (HF: hidden_dropout_prob)
    attention_dropout: float = 0.1  # dropout on attention weights (HF: attention_probs_dropout_prob)
    layer_norm_eps: float = 1e-12   # BERT's LayerNorm epsilon (GPT-2 uses 1e-5)
    hidden_act: str = "gelu"        # "gelu" = exact erf GELU (BERT); "gelu_new" = GPT-2's tanh form
    pad_token_id: int = 0           # the [PAD] id, whose embedding starts at zero
    dtype: str = "float32"          # float32 to run; float64 for gradient checks

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "n_layer", "n_head", "n_embd", "n_inner", "type_vocab_size"):
            if getattr(self, name) < 1:
                raise SettingError(f"BERTConfig: `{name}` must be at least 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise SettingError(f"BERTConfig: `n_embd` {self.n_embd} is not divisible by `n_head` {self.n_head}")
        for name in ("dropout", "attention_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise SettingError(f"BERTConfig: `{name}` must be in [0, 1), got {getattr(self, name)}")
        if self.hidden_act not in GELU_FORMS:
            raise SettingError(f"BERTConfig: `hidden_act` must be one of {', '.join(GELU_FORMS)},"
                               f" got {self.hidden_act!r}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise SettingError(f"BERTConfig: `pad_token_id` {self.pad_token_id} is outside the vocabulary")
        if np.dtype(self.dtype).kind != "f":
            raise SettingError(f"BERTConfig: `dtype` must be a floating type, got {self.dtype!r}")
        self.dtype = np.dtype(self.dtype).name


class BERTEmbeddings(Module):
    """Word + position + token-type embeddings, normalised (then dropout): ids (B, T) -> (B, T, C)."""

    def __init__(self, config: BERTConfig, rng):
        super().__init__()
        C, dtype = config.n_embd, np.dtype(config.dtype)
        self.word_embeddings = Embedding(config.vocab_size, C, dtype=dtype, rng=rng)
        self.word_embeddings.weight.data[config.pad_token_id] = 0.0
        self.position_embeddings = Embedding(config.context_length, C, dtype=dtype, rng=rng)
        self.token_type_embeddings = Embedding(config.type_vocab_size, C, dtype=dtype, rng=rng)
        self.LayerNorm = LayerNorm(C, eps=config.layer_norm_eps, dtype=dtype)
        self.dropout = Dropout(config.dropout, rng)

    def forward(self, idx, token_type_ids):
        T = idx.shape[1]
        # positions 0..T-1: a slice of the table (its backward a copy, not a scatter-add)
        x = self.word_embeddings(idx) + self.position_embeddings.weight[:T]  # (B, T, C) + (T, C)
        x = x + self.token_type_embeddings(token_type_ids)  # (B, T, C)
        return self.dropout(self.LayerNorm(x))


class BERTEncoder(Module):
    """``layer.0``, ``layer.1``, ...: the post-LN blocks, each reading the same padding mask."""

    def __init__(self, config: BERTConfig, rng):
        super().__init__()
        self.layer = ModuleList(
            PostLNBlock(config.n_embd, config.n_head, config.n_inner, dropout=config.dropout,
                        attention_dropout=config.attention_dropout, eps=config.layer_norm_eps,
                        approximate=GELU_FORMS[config.hidden_act], dtype=np.dtype(config.dtype), rng=rng)
            for _ in range(config.n_layer)
        )

    def forward(self, x, mask):
        for block in self.layer:
            x = block(x, mask=mask)
        return x


class BERTPooler(Module):
    """tanh(dense(x[:, 0])): the [CLS] position's vector, (B, T, C) -> (B, C), for sentence-level heads."""

    def __init__(self, config: BERTConfig, rng):
        super().__init__()
        self.dense = Linear(config.n_embd, config.n_embd, dtype=np.dtype(config.dtype), rng=rng)

    def forward(self, hidden):
        return self.dense(hidden[:, 0]).tanh()


class BERT(Module):
    """BERT's encoder (Hugging Face's ``BertModel``): ``model(idx, attention_mask, token_type_ids)`` -> (B, T, C).

    ``pooler=False`` leaves the pooler out, as ``BertForMaskedLM`` does.
    """

    def __init__(self, config: BERTConfig, seed=0, pooler=True, rng=None):
        super().__init__()
        self.config = config
        rng = np.random.default_rng(seed) if rng is None else rng
        self.embeddings = BERTEmbeddings(config, rng)
        self.encoder = BERTEncoder(config, rng)
        self.pooler = BERTPooler(config, rng) if pooler else None

    def forward(self, idx, attention_mask=None, token_type_ids=None):
        """Hidden states (B, T, C) for token ids ``idx`` (B, T).

        ``attention_mask`` (B, T): 1 or True for a real token, 0 or False for
        padding (default: all real).  ``token_type_ids`` (B, T): 0 for the first
        text of a pair, 1 for the second (default: all 0).
        """
        idx, mask, token_type_ids = self._checked_inputs(idx, attention_mask, token_type_ids)
        x = self.embeddings(idx, token_type_ids)
        keep = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, T): every query, every head
        return self.encoder(x, keep)

    def pool(self, hidden):
        """The pooler's (B, C) output for hidden states (B, T, C): tanh(dense(hidden[:, 0]))."""
        if self.pooler is None:
            raise SettingError("BERT: this model was built without a pooler (`pooler` False)")
        return self.pooler(hidden)

    def _checked_inputs(self, idx, attention_mask, token_type_ids):
        """``idx``, the mask as booleans (or None) and the token types (zeros by default), each checked."""
        config = self.config
        idx = as_array(idx)
        if idx.ndim != 2 or idx.dtype.kind not in "iu":
            raise BERTInputError(f"BERT: token ids must be a (B, T) array of integers, got {idx.dtype}"
                                 f" of shape {idx.shape}")
        _require_range(idx, config.vocab_size, "token id", "the vocabulary")
        if idx.shape[1] > config.context_length:
            raise BERTInputError(f"BERT: sequence length {idx.shape[1]} exceeds the position table's"
                                 f" {config.context_length} positions (`context_length`)")
        mask = None
        if attention_mask is not None:
            mask = as_array(attention_mask)
            if mask.shape != idx.shape:
                raise BERTInputError(f"BERT: attention_mask must have the token ids' shape {idx.shape},"
                                     f" got {mask.shape}")
            if mask.dtype != bool:
                if mask.dtype.kind not in "iu" or ((mask != 0) & (mask != 1)).any():
                    raise BERTInputError(f"BERT: attention_mask must be booleans or integers 0/1"
                                         f" (1 = a real token), got {mask.dtype}"
                                         + (" with other values" if mask.dtype.kind in "iu" else ""))
                mask = mask.astype(bool)
        if token_type_ids is None:
            token_type_ids = np.zeros(idx.shape, dtype=np.int64)
        token_type_ids = as_array(token_type_ids)
        if token_type_ids.shape != idx.shape or token_type_ids.dtype.kind not in "iu":
            raise BERTInputError(f"BERT: token_type_ids must be integers of the token ids' shape {idx.shape},"
                                 f" got {token_type_ids.dtype} of shape {token_type_ids.shape}")
        _require_range(token_type_ids, config.type_vocab_size, "token type", "the token types")
        return idx, mask, token_type_ids

    def extra_repr(self):
        c = self.config
        return f"vocab_size={c.vocab_size}, context_length={c.context_length}, n_layer={c.n_layer}, " \
               f"n_head={c.n_head}, n_embd={c.n_embd}, n_inner={c.n_inner}, dtype={c.dtype}"


def _require_range(ids, size, what, where):
    """Raise BERTInputError naming the first of ``ids`` outside 0..size-1."""
    outside = (ids < 0) | (ids >= size)
    if outside.any():
        position = tuple(int(i) for i in np.argwhere(outside)[0])
        raise BERTInputError(f"BERT: {what} {int(ids[position])} at (batch, position) {position} is outside"
                             f" {where} of {size} ids (0..{size - 1})")


class PredictionTransform(Module):
    """LayerNorm(gelu(dense(x))): the masked-LM head's own layer (Hugging Face's ``BertPredictionHeadTransform``)."""

    def __init__(self, config: BERTConfig, rng):
        super().__init__()
        dtype = np.dtype(config.dtype)
        self.dense = Linear(config.n_embd, config.n_embd, dtype=dtype, rng=rng)
        self.LayerNorm = LayerNorm(config.n_embd, eps=config.layer_norm_eps, dtype=dtype)
        self.approximate = GELU_FORMS[config.hidden_act]

    def forward(self, x):
        return self.LayerNorm(F.gelu(self.dense(x), self.approximate))


class MaskedLMPredictions(Module):
    """transform(x) @ word_embeddings^T + bias: a score per vocabulary entry (Hugging Face's ``BertLMPredictionHead``)."""

    def __init__(self, config: BERTConfig, rng):
        super().__init__()
        self.transform = PredictionTransform(config, rng)
        self.bias = Parameter(np.zeros(config.vocab_size, dtype=np.dtype(config.dtype)))

    def forward(self, x, word_embeddings):
        return F.linear(self.transform(x), word_embeddings.T, self.bias)  # (..., C) @ (C, V) + (V,)


class MaskedLMHead(Module):
    """``predictions``, under the name Hugging Face gives it (``cls``, a ``BertOnlyMLMHead``).

    With ``next_sentence``, also ``seq_relationship``: two scores from the
    pooled [CLS] vector, "B follows A" (0) and "B is random" (1), Hugging
    Face's label order (``cls`` is then a ``BertPreTrainingHeads``).
    """

    def __init__(self, config: BERTConfig, rng, next_sentence=False):
        super().__init__()
        self.predictions = MaskedLMPredictions(config, rng)
        if next_sentence:
            self.seq_relationship = Linear(config.n_embd, 2, dtype=np.dtype(config.dtype), rng=rng)

    def forward(self, x, word_embeddings):
        return self.predictions(x, word_embeddings)


class BERTForMaskedLM(Module):
    """BERT with its masked-LM head (Hugging Face's ``BertForMaskedLM``): logits (B, T, V) for every position."""

    next_sentence = False  # BERTForPreTraining: the pooler and the next-sentence head too

    def __init__(self, config: BERTConfig, seed=0):
        super().__init__()
        self.config = config
        rng = np.random.default_rng(seed)
        self.bert = BERT(config, pooler=self.next_sentence, rng=rng)
        self.cls = MaskedLMHead(config, rng, next_sentence=self.next_sentence)

    def forward(self, idx, attention_mask=None, token_type_ids=None):
        """Logits (B, T, V): at each position, a score for every token that could stand there."""
        hidden = self.bert(idx, attention_mask, token_type_ids)
        return self.cls(hidden, self.bert.embeddings.word_embeddings.weight)

    def masked_logits(self, idx, positions, attention_mask=None, token_type_ids=None):
        """Logits (N, V) at the N flat ``positions`` (indices into B * T) only: the masked-LM loss needs no other.

        The encoder runs on every position (each one is context), but the head,
        a (C, V) product per position, only where a token is predicted: 15% of them.
        """
        return self.predict(self.bert(idx, attention_mask, token_type_ids), positions)

    def predict(self, hidden, positions):
        """The head's logits (N, V) at the N flat ``positions`` of the encoder's ``hidden`` states (B, T, C)."""
        rows = hidden.reshape(-1, self.config.n_embd)[np.asarray(positions)]  # (N, C)
        return self.cls(rows, self.bert.embeddings.word_embeddings.weight)

    def flops_per_token(self, T=None, masked_share=0.15) -> int:
        """Floating-point operations to train on one token (forward + backward) at sequence length T.

            6 N_encoder + 12 n_layer n_embd T + 6 N_head x masked_share

        As ``GPT.flops_per_token``: 6 per parameter that multiplies (the three
        embedding tables are lookups), attention's scores and weighted sums
        (both directions: every score is used), and the head, a dense layer
        and the (C, V) tied decoder, only at the masked share of positions.
        """
        T = self.config.context_length if T is None else T
        tables = self.bert.embeddings
        lookups = sum(table.weight.size for table in
                      (tables.word_embeddings, tables.position_embeddings, tables.token_type_embeddings))
        head = sum(param.size for param in self.cls.parameters()) + tables.word_embeddings.weight.size
        encoder = self.bert.num_parameters() - lookups
        attention = 12 * self.config.n_layer * self.config.n_embd * T
        return int(6 * encoder + attention + 6 * head * masked_share)

    def extra_repr(self):
        return self.bert.extra_repr()


class BERTForPreTraining(BERTForMaskedLM):
    """BERT with both of its pre-training heads (Hugging Face's ``BertForPreTraining``).

    Everything ``BERTForMaskedLM`` does (its ``forward`` gives the masked-LM
    logits, so it fills masks and trains on masked LM alike), and the
    next-sentence logits (B, 2) from the pooled [CLS] vector.
    """

    next_sentence = True

    def heads(self, idx, attention_mask=None, token_type_ids=None):
        """Both heads' logits, as Hugging Face's forward gives them: masked LM (B, T, V) and next sentence (B, 2)."""
        hidden = self.bert(idx, attention_mask, token_type_ids)
        return self.cls(hidden, self.bert.embeddings.word_embeddings.weight), self.next_sentence_logits(hidden)

    def next_sentence_logits(self, hidden):
        """seq_relationship(pooler(hidden[:, 0])): (B, 2) scores of "B follows A" and "B is random"."""
        return self.cls.seq_relationship(self.bert.pool(hidden))
