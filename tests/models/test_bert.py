"""The BERT model: Hugging Face's names, padding that changes nothing, bidirectionality, gradients, errors."""

import numpy as np
import pytest

from npllm import gradcheck, no_grad
from npllm.models import BERT, BERTConfig, BERTForMaskedLM
from npllm.models.bert import BERTInputError
from npllm.errors import SettingError

TINY = dict(vocab_size=13, context_length=6, n_layer=2, n_head=2, n_embd=8, n_inner=12, dropout=0.0,
            attention_dropout=0.0)


def tiny_config(**overrides):
    return BERTConfig(**{**TINY, **overrides})


def token_ids(B=3, T=6, V=13, seed=0):
    return np.random.default_rng(seed).integers(1, V, size=(B, T))


def test_state_dict_names_are_hugging_faces():
    block = ["attention.self.query.weight", "attention.self.query.bias", "attention.self.key.weight",
             "attention.self.key.bias", "attention.self.value.weight", "attention.self.value.bias",
             "attention.output.dense.weight", "attention.output.dense.bias", "attention.output.LayerNorm.weight",
             "attention.output.LayerNorm.bias", "intermediate.dense.weight", "intermediate.dense.bias",
             "output.dense.weight", "output.dense.bias", "output.LayerNorm.weight", "output.LayerNorm.bias"]
    embeddings = ["embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
                  "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight",
                  "embeddings.LayerNorm.bias"]
    encoder = [f"encoder.layer.{i}.{name}" for i in range(2) for name in block]
    assert list(BERT(tiny_config()).state_dict()) == [*embeddings, *encoder, "pooler.dense.weight",
                                                      "pooler.dense.bias"]
    head = ["cls.predictions.bias", "cls.predictions.transform.dense.weight",
            "cls.predictions.transform.dense.bias", "cls.predictions.transform.LayerNorm.weight",
            "cls.predictions.transform.LayerNorm.bias"]
    names = list(BERTForMaskedLM(tiny_config()).state_dict())
    assert names == [f"bert.{name}" for name in [*embeddings, *encoder]] + head  # the decoder is tied: no entry
    shapes = {name: array.shape for name, array in BERT(tiny_config()).state_dict().items()}
    assert shapes["encoder.layer.0.intermediate.dense.weight"] == (8, 12)  # (in, out): npllm's layout
    assert shapes["embeddings.token_type_embeddings.weight"] == (2, 8)


def test_initialisation_is_berts():
    state = BERT(BERTConfig(vocab_size=64, context_length=16, n_layer=2, n_head=2, n_embd=64, n_inner=128)).state_dict()
    assert abs(state["encoder.layer.1.output.dense.weight"].std() - 0.02) < 0.002
    assert not state["embeddings.word_embeddings.weight"][0].any()  # [PAD]
    assert (state["embeddings.LayerNorm.weight"] == 1).all() and not state["pooler.dense.bias"].any()
    assert all(array.dtype == np.float32 for array in state.values())


def test_forward_shapes_and_dtypes():
    model = BERTForMaskedLM(tiny_config())
    assert model(token_ids()).shape == (3, 6, 13) and model(token_ids()).dtype == np.float32
    encoder = BERT(tiny_config(dtype="float64"))
    hidden = encoder(token_ids(T=4))
    assert hidden.shape == (3, 4, 8) and hidden.dtype == np.float64
    assert encoder.pool(hidden).shape == (3, 8)


def test_padding_changes_no_output_of_a_real_token():
    model = BERTForMaskedLM(tiny_config())
    idx = token_ids()
    mask = np.ones_like(idx)
    mask[0, 4:], mask[2, 1:] = 0, 0
    types = np.zeros_like(idx)
    types[1, 3:] = 1
    with no_grad():
        base = model(idx, mask, types).data
        for seed in range(3):
            rng = np.random.default_rng(seed + 10)
            other_ids = np.where(mask == 1, idx, rng.integers(0, 13, size=idx.shape))
            other_types = np.where(mask == 1, types, rng.integers(0, 2, size=idx.shape))
            changed = model(other_ids, mask.astype(bool), other_types).data
            real = mask == 1
            np.testing.assert_allclose(changed[real], base[real], rtol=0, atol=1e-6)
            assert not np.allclose(changed[~real], base[~real])  # (the padded positions did change)


def test_attention_sees_both_directions():
    model = BERT(tiny_config(), pooler=False)
    idx = token_ids(B=1)
    with no_grad():
        base = model(idx).data
        changed = idx.copy()
        changed[0, -1] = changed[0, -1] % 12 + 1
        after = model(changed).data
    assert not np.allclose(after[0, 0], base[0, 0])  # the first position read the last


def test_masked_logits_are_the_forward_logits_at_those_positions():
    model = BERTForMaskedLM(tiny_config())
    idx, positions = token_ids(), np.array([0, 5, 7, 17])
    with no_grad():
        every = model(idx).data.reshape(-1, 13)
        picked = model.masked_logits(idx, positions).data
    np.testing.assert_allclose(picked, every[positions], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("hidden_act", ["gelu", "gelu_new"])
def test_whole_bert_gradchecks_in_float64(hidden_act):
    model = BERTForMaskedLM(tiny_config(dtype="float64", hidden_act=hidden_act))
    rng = np.random.default_rng(1)
    for p in model.parameters():  # away from the zero biases and unit gains of the initialisation
        p.data += rng.standard_normal(p.shape) * 0.3
    idx = token_ids(B=2, T=5)
    mask = np.ones_like(idx)
    mask[1, 3:] = 0
    types = np.zeros_like(idx)
    types[0, 2:] = 1
    assert gradcheck(lambda *_: model(idx, mask, types), model.parameters(), max_elements=20)


def test_pooler_gradchecks_in_float64():
    model = BERT(tiny_config(dtype="float64", n_layer=1))
    idx = token_ids(B=2, T=4)
    params = [model.pooler.dense.weight, model.pooler.dense.bias, model.embeddings.word_embeddings.weight]
    assert gradcheck(lambda *_: model.pool(model(idx)), params, max_elements=20)


@pytest.mark.parametrize("call, message", [
    (lambda m: m(np.array([[1, 13]])), "token id 13 at (batch, position) (0, 1) is outside the vocabulary"),
    (lambda m: m(np.array([[1, -1]])), "token id -1"),
    (lambda m: m(np.ones((1, 7), dtype=int)), "sequence length 7 exceeds the position table's 6"),
    (lambda m: m(np.ones(4, dtype=int)), "(B, T) array of integers"),
    (lambda m: m(np.ones((1, 3))), "(B, T) array of integers, got float64"),
    (lambda m: m(np.ones((2, 3), dtype=int), np.ones((2, 4), dtype=int)), "attention_mask must have the token ids' shape"),
    (lambda m: m(np.ones((2, 3), dtype=int), np.ones((2, 3))), "attention_mask must be booleans or integers 0/1"),
    (lambda m: m(np.ones((2, 3), dtype=int), np.full((2, 3), 2)), "with other values"),
    (lambda m: m(np.ones((2, 3), dtype=int), None, np.full((2, 3), 2)), "token type 2 at (batch, position) (0, 0)"),
    (lambda m: m(np.ones((2, 3), dtype=int), None, np.zeros((2, 2), dtype=int)), "token_type_ids must be integers"),
])
def test_bad_input_is_one_line_naming_it(call, message):
    with pytest.raises(BERTInputError) as error:
        call(BERT(tiny_config()))
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("overrides, setting", [
    (dict(n_embd=9), "n_embd"), (dict(hidden_act="relu"), "hidden_act"), (dict(dropout=1.0), "dropout"),
    (dict(n_inner=0), "n_inner"), (dict(pad_token_id=13), "pad_token_id"), (dict(dtype="int32"), "dtype"),
])
def test_bad_config_names_the_setting(overrides, setting):
    with pytest.raises(SettingError, match=f"`{setting}`"):
        tiny_config(**overrides)


def test_dropout_is_active_in_training_only():
    model = BERTForMaskedLM(tiny_config(dropout=0.3, attention_dropout=0.3))
    idx = token_ids()
    with no_grad():
        first, second = model(idx).data, model(idx).data
        model.eval()
        third, fourth = model(idx).data, model(idx).data
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(third, fourth)


@pytest.mark.parity
def test_the_benchmarks_pytorch_bert_is_the_same_model():
    torch = pytest.importorskip("torch")
    from npllm.bench.torch_bert import TorchBERTForMaskedLM

    model = BERTForMaskedLM(tiny_config(dtype="float64"))
    for p in model.parameters():
        p.data += np.random.default_rng(3).standard_normal(p.shape) * 0.1
    idx, positions = token_ids(), np.array([1, 4, 9, 17])
    with no_grad():
        ours = model.masked_logits(idx, positions).data
    theirs = TorchBERTForMaskedLM(model.state_dict())(torch.tensor(idx), torch.tensor(positions), 2, 1e-12)
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=0, atol=1e-12)


def test_flops_per_token_counts_the_head_at_the_masked_share():
    model = BERTForMaskedLM(tiny_config())
    C, V, L, T, inner = 8, 13, 2, 6, 12
    per_block = 4 * (C * C + C) + (C * inner + inner) + (inner * C + C) + 4 * C
    encoder = 2 * C + L * per_block  # the embeddings' LayerNorm and the blocks
    head = (C * C + C) + 2 * C + V + V * C
    assert model.flops_per_token() == int(6 * encoder + 12 * L * C * T + 6 * head * 0.15)
