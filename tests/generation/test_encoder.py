"""Using an encoder: mean pooling over the real tokens, batched embeddings in the texts' order, filling masks."""

import numpy as np
import pytest

from npllm.generation.encoder import (bert_input_ids, fill_masks, filled_text, mask_id_of, mean_pooled,
                                     sentence_embeddings)
from npllm.models import BERT, BERTConfig, BERTForMaskedLM
from npllm.tokenizer import BPETokenizer, WordPieceTokenizer

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "##d", "the", "cat", "sat"]
CONFIG = dict(vocab_size=len(VOCAB), context_length=12, n_layer=1, n_head=2, n_embd=8, n_inner=16)


def test_mean_pooling_ignores_padding_and_has_unit_norm():
    hidden = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)
    pooled = mean_pooled(hidden, np.array([[1, 1, 0], [1, 0, 0]]))
    expected = np.array([[1.0, 2.0], [6.0, 7.0]])  # the means of the real rows
    np.testing.assert_allclose(pooled, expected / np.linalg.norm(expected, axis=1, keepdims=True), rtol=1e-6)


def test_embeddings_keep_the_texts_order_and_do_not_depend_on_the_batch():
    model, tokenizer = BERT(BERTConfig(**CONFIG)), WordPieceTokenizer(VOCAB)
    texts = ["the cat sat", "a", "b c cd the", "cat", "a b"]
    together = sentence_embeddings(model, tokenizer, texts, batch_size=2)
    alone = np.stack([sentence_embeddings(model, tokenizer, [text])[0] for text in texts])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-6)
    assert together.shape == (5, 8) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1, rtol=1e-6)


def test_fill_masks_gives_each_mask_its_most_probable_tokens():
    model, tokenizer = BERTForMaskedLM(BERTConfig(**CONFIG)), WordPieceTokenizer(VOCAB)
    ids = bert_input_ids(tokenizer, "the [MASK] sat [MASK]")
    assert ids[0] == 2 and ids[-1] == 3 and ids.count(mask_id_of(tokenizer)) == 2
    guesses = fill_masks(model, ids, tokenizer.mask_id, top_k=3)
    assert len(guesses) == 2 and all(len(choices) == 3 for choices in guesses)
    for choices in guesses:
        probabilities = [p for _, p in choices]
        assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1
    text = filled_text(tokenizer, ids, guesses, tokenizer.mask_id)
    assert text == f"the [{tokenizer.decode([guesses[0][0][0]])}] sat [{tokenizer.decode([guesses[1][0][0]])}]"
    with pytest.raises(TypeError, match="BERTForMaskedLM"):
        fill_masks(BERT(BERTConfig(**CONFIG)), ids, tokenizer.mask_id)


def test_bpe_input_ids_frame_the_text_and_find_the_mask():
    specials = {"[PAD]": 300, "[CLS]": 301, "[SEP]": 302, "[MASK]": 303}
    tokenizer = BPETokenizer.train("hello world " * 50, vocab_size=304, special_tokens=specials)
    ids = bert_input_ids(tokenizer, "hello [MASK] world")
    assert ids[0] == 301 and ids[-1] == 302 and 303 in ids and mask_id_of(tokenizer) == 303
