"""Using an encoder: sentence embeddings for search, and filling in masked tokens.

**Sentence embeddings.**  An encoder gives one vector per token; a sentence
encoder such as all-MiniLM-L6-v2 was fine-tuned so that the *mean* of its
real tokens' vectors (padding left out by the attention mask), scaled to
length 1, places sentences of similar meaning close together.  The cosine
similarity of two texts is then the dot product of their embeddings, and a
search is one matrix product against a stored (N, C) array::

    vectors = sentence_embeddings(model, tokenizer, documents)     # (N, C), each of norm 1
    scores = vectors @ sentence_embeddings(model, tokenizer, [query])[0]

Texts are embedded in batches of similar length (sorted by length first),
so little of a batch is padding.

**Filling masks.**  A masked-LM model (``BERTForMaskedLM``) scores every
token of the vocabulary at each [MASK]; ``fill_masks`` returns the best
few with their probabilities.  Each [MASK] is filled independently of the
others, as BERT was trained.
"""

import numpy as np

import npllm.functional as F
from npllm.models import BERTForMaskedLM
from npllm.tensor import no_grad
from npllm.tokenizer import WordPieceTokenizer


def mean_pooled(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """The mean of each row's real tokens' vectors (B, T, C) -> (B, C), scaled to norm 1."""
    weights = attention_mask[..., None].astype(hidden.dtype)  # (B, T, 1)
    means = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1)  # (B, C)
    return means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)


def sentence_embeddings(model, tokenizer: WordPieceTokenizer, texts: list[str], batch_size: int = 32,
                        max_length: int | None = None) -> np.ndarray:
    """(N, C) unit vectors for ``texts``: mean-pooled hidden states, each text cut to ``max_length`` tokens.

    ``model`` is a ``BERT`` (or a ``BERTForMaskedLM``, whose encoder is used);
    ``max_length`` defaults to the model's position table.
    """
    encoder = model.bert if isinstance(model, BERTForMaskedLM) else model
    max_length = max_length or encoder.config.context_length
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.empty((len(texts), encoder.config.n_embd), dtype=np.dtype(encoder.config.dtype))
    encoder.eval()
    with no_grad():
        for first in range(0, len(order), batch_size):
            rows = order[first:first + batch_size]
            batch = tokenizer.encode_batch([texts[i] for i in rows], max_length=max_length)
            hidden = encoder(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).data
            out[rows] = mean_pooled(hidden, batch["attention_mask"])
    return out


def bert_input_ids(tokenizer, text: str) -> list[int]:
    """``[CLS] text [SEP]`` as ids, "[MASK]" in the text becoming the mask token, for either tokenizer.

    A WordPiece tokenizer does it itself; npllm's BPE (from ``npllm train
    --model bert``) has [CLS], [SEP] and [MASK] among its special tokens.
    """
    if isinstance(tokenizer, WordPieceTokenizer):
        return tokenizer.encode(text)[0]
    special = tokenizer.special_tokens
    return [special["[CLS]"], *tokenizer.encode(text, allowed_special={"[MASK]"}), special["[SEP]"]]


def mask_id_of(tokenizer) -> int:
    return tokenizer.mask_id if isinstance(tokenizer, WordPieceTokenizer) else tokenizer.special_tokens["[MASK]"]


def fill_masks(model: BERTForMaskedLM, ids: list[int], mask_id: int, top_k: int = 5) -> list[list[tuple[int, float]]]:
    """For each [MASK] in ``ids`` (in order), its ``top_k`` most probable tokens as (id, probability)."""
    if not isinstance(model, BERTForMaskedLM):
        raise TypeError(f"fill_masks needs a BERTForMaskedLM (a model with its masked-LM head), got {type(model).__name__}")
    idx = np.asarray([ids], dtype=np.int64)  # (1, T)
    positions = np.flatnonzero(idx[0] == mask_id)
    model.eval()
    with no_grad():
        probabilities = F.softmax(model.masked_logits(idx, positions), axis=-1).data  # (masks, V)
    best = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
    return [[(int(i), float(row[i])) for i in choices] for row, choices in zip(probabilities, best)]


def filled_text(tokenizer, ids: list[int], guesses, mask_id: int) -> str:
    """The text of ``ids`` (without [CLS] and [SEP]) with each [MASK] replaced by its best guess, in brackets."""
    parts, run, best = [], [], iter(choices[0][0] for choices in guesses)
    for token in [*ids[1:-1], None]:
        if token is not None and token != mask_id:
            run.append(token)
            continue
        if run:
            parts.append(tokenizer.decode(run))
            run = []
        if token is not None:
            parts.append(f"[{tokenizer.decode([next(best)])}]")
    return (" " if isinstance(tokenizer, WordPieceTokenizer) else "").join(parts)  # (BPE tokens carry their spaces)


__all__ = ["mean_pooled", "sentence_embeddings", "bert_input_ids", "mask_id_of", "fill_masks", "filled_text"]
