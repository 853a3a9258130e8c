"""The BART model: Hugging Face's names, padding that changes nothing, the cached decoder step, gradients, errors.

The parity with ``transformers``' own BART is in tests/pretrained/test_pretrained_bart.py.
"""

import numpy as np
import pytest

from npllm import gradcheck, no_grad
from npllm.errors import SettingError
from npllm.models import BART, BARTConfig, BARTForConditionalGeneration
from npllm.models.bart import BARTInputError, shift_tokens_right

TINY = dict(vocab_size=17, d_model=8, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
            decoder_attention_heads=4, encoder_ffn_dim=12, decoder_ffn_dim=10, max_position_embeddings=9,
            dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)


def tiny_config(**overrides):
    return BARTConfig(**{**TINY, **overrides})


def token_ids(B=3, T=6, V=17, seed=0):
    return np.random.default_rng(seed).integers(3, V, size=(B, T))


def shaken(model, scale=0.3, seed=1):
    """``model`` with every trainable parameter moved off its initialisation (zero biases, unit gains)."""
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data += rng.standard_normal(p.shape) * scale
    return model


def test_state_dict_names_are_hugging_faces():
    attention = [f"{p}.{leaf}" for p in ("k_proj", "v_proj", "q_proj", "out_proj") for leaf in ("weight", "bias")]
    mlp = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "final_layer_norm.weight", "final_layer_norm.bias"]
    norm = lambda name: [f"{name}.weight", f"{name}.bias"]  # noqa: E731
    encoder_layer = [*(f"self_attn.{n}" for n in attention), *norm("self_attn_layer_norm"), *mlp]
    decoder_layer = [*(f"self_attn.{n}" for n in attention), *norm("self_attn_layer_norm"),
                     *(f"encoder_attn.{n}" for n in attention), *norm("encoder_attn_layer_norm"), *mlp]
    expected = ["model.shared.weight"]
    for stack, layer in (("encoder", encoder_layer), ("decoder", decoder_layer)):
        expected += [f"model.{stack}.embed_positions.weight",
                     *(f"model.{stack}.layers.{i}.{name}" for i in range(2) for name in layer),
                     *(f"model.{stack}.{name}" for name in norm("layernorm_embedding"))]
    model = BARTForConditionalGeneration(tiny_config())
    assert list(model.state_dict()) == ["final_logits_bias", *expected]  # lm_head is model.shared: no entry
    shapes = {name: array.shape for name, array in model.state_dict().items()}
    assert shapes["model.encoder.embed_positions.weight"] == (9 + 2, 8)  # BART's offset of 2
    assert shapes["model.decoder.layers.0.fc1.weight"] == (8, 10)  # (in, out): npllm's layout
    assert shapes["final_logits_bias"] == (1, 17)
    assert list(BART(tiny_config()).state_dict()) == [name[len("model."):] for name in expected]


def test_initialisation_is_barts():
    model = BARTForConditionalGeneration(BARTConfig(**{**TINY, "d_model": 64, "encoder_ffn_dim": 128}))
    state = model.state_dict()
    assert abs(state["model.encoder.layers.1.fc1.weight"].std() - 0.02) < 0.002
    assert not state["model.shared.weight"][1].any()  # <pad>
    assert (state["model.decoder.layernorm_embedding.weight"] == 1).all() and not state["final_logits_bias"].any()
    assert all(array.dtype == np.float32 for array in state.values())
    assert not model.final_logits_bias.requires_grad  # a buffer in Hugging Face's BART
    assert model.final_logits_bias not in [p for p in model.parameters() if p.requires_grad]


def test_forward_shapes_dtypes_and_the_encode_decode_split():
    model = shaken(BARTForConditionalGeneration(tiny_config()))
    source, target = token_ids(T=7), token_ids(T=4, seed=2)
    logits = model(source, target)
    assert logits.shape == (3, 4, 17) and logits.dtype == np.float32
    memory = model.encode(source)
    assert memory.shape == (3, 7, 8)
    np.testing.assert_allclose(model.decode(target, memory).data, logits.data, rtol=0, atol=1e-6)
    hidden = BART(tiny_config(dtype="float64"))(source, target)
    assert hidden.shape == (3, 4, 8) and hidden.dtype == np.float64


def test_the_decoder_is_causal_and_the_encoder_bidirectional():
    model = shaken(BARTForConditionalGeneration(tiny_config(dtype="float64")))
    source, target = token_ids(B=1), token_ids(B=1, T=5, seed=2)
    with no_grad():
        base, base_memory = model(source, target).data, model.encode(source).data
        later = target.copy()
        later[0, -1] = later[0, -1] % 16 + 1
        np.testing.assert_allclose(model(source, later).data[:, :-1], base[:, :-1], rtol=0, atol=1e-12)
        other_source = source.copy()
        other_source[0, -1] = other_source[0, -1] % 16 + 1
        assert not np.allclose(model.encode(other_source).data[0, 0], base_memory[0, 0])  # first read the last
        assert not np.allclose(model(other_source, target).data[0, 0], base[0, 0])  # cross-attention read it


def test_padding_changes_no_output_of_a_real_position():
    model = shaken(BARTForConditionalGeneration(tiny_config(dtype="float64")))
    source, target = token_ids(T=7), token_ids(T=5, seed=2)
    source_mask, target_mask = np.ones_like(source), np.ones_like(target)
    source_mask[0, 4:], source_mask[2, 2:] = 0, 0
    target_mask[1, 3:] = 0
    with no_grad():
        base = model(source, target, source_mask, target_mask).data
        alone = [model(source[i:i + 1, :source_mask[i].sum()], target[i:i + 1, :target_mask[i].sum()]).data[0]
                 for i in range(3)]
        for i in range(3):  # each row unpadded, on its own, gives the same outputs at its real positions
            np.testing.assert_allclose(base[i, :target_mask[i].sum()], alone[i], rtol=0, atol=1e-12)
        rng = np.random.default_rng(7)
        other_source = np.where(source_mask == 1, source, rng.integers(0, 17, size=source.shape))
        other_target = np.where(target_mask == 1, target, rng.integers(0, 17, size=target.shape))
        changed = model(other_source, other_target, source_mask.astype(bool), target_mask).data
    real = target_mask == 1
    np.testing.assert_allclose(changed[real], base[real], rtol=0, atol=1e-12)


def test_cached_decoder_steps_equal_the_whole_target_at_once():
    model = shaken(BARTForConditionalGeneration(tiny_config()))
    source, target = token_ids(T=7), token_ids(T=6, seed=2)
    source_mask = np.ones_like(source)
    source_mask[1, 3:] = 0
    with no_grad():
        whole = model(source, target, source_mask).data
        cache = model.new_decoder_cache(model.encode(source, source_mask), source_mask)
        first = model.decode(target[:, :2], cache=cache).data  # two tokens, then one at a time
        steps = [first] + [model.decode(target[:, t:t + 1], cache=cache).data for t in range(2, 6)]
    assert cache.length == 6
    np.testing.assert_allclose(np.concatenate(steps, axis=1), whole, rtol=0, atol=1e-5)


def test_reordering_the_cache_continues_the_chosen_rows():
    model = shaken(BARTForConditionalGeneration(tiny_config(dtype="float64")))
    source = np.repeat(token_ids(B=1, T=5), 3, axis=0)  # one source, three hypotheses
    prefixes = token_ids(B=3, T=3, seed=4)
    rows = np.array([2, 2, 0])
    with no_grad():
        cache = model.new_decoder_cache(model.encode(source))
        model.decode(prefixes, cache=cache)
        cache.reorder(rows)
        nxt = token_ids(B=3, T=1, seed=5)
        stepped = model.decode(nxt, cache=cache).data[:, -1]
        whole = model(source, np.concatenate([prefixes[rows], nxt], axis=1)).data[:, -1]
    np.testing.assert_allclose(stepped, whole, rtol=0, atol=1e-12)


def test_whole_bart_gradchecks_in_float64_including_cross_attention():
    model = shaken(BARTForConditionalGeneration(tiny_config(dtype="float64", encoder_layers=1, decoder_layers=1)))
    source, target = token_ids(B=2, T=5), token_ids(B=2, T=4, seed=2)
    source[1, 3:] = 1  # padding, masked
    source_mask = (source != 1).astype(int)
    params = [p for p in model.parameters() if p.requires_grad]
    assert any("encoder_attn" in name for name, p in model.named_parameters())
    assert gradcheck(lambda *_: model(source, target, source_mask), params, max_elements=12)


def test_the_pad_row_gets_no_gradient_from_the_lookups():
    model = shaken(BARTForConditionalGeneration(tiny_config(dtype="float64")))
    source = token_ids(B=2, T=5)
    source[0, 3:] = 1  # <pad>, read by the lookup (unmasked here, so it changes the outputs)
    memory = model.encode(source)
    (memory * memory).sum().backward()
    table = model.model.shared.weight
    assert not table.grad[1].any() and table.grad[source[1, 0]].any()
    table.grad = None
    logits = model(source, token_ids(B=2, T=3, seed=2))
    logits.sum().backward()
    assert table.grad[1].any()  # the tied head still scores <pad>, and that use trains the row


def test_shift_tokens_right_puts_the_start_token_first():
    labels = np.array([[5, 6, 2], [7, 2, -100]])
    np.testing.assert_array_equal(shift_tokens_right(labels, pad_token_id=1, decoder_start_token_id=2),
                                  [[2, 5, 6], [2, 7, 2]])
    np.testing.assert_array_equal(shift_tokens_right(np.array([[5, -100, -100]]), 1, 2), [[2, 5, 1]])


def test_scale_embedding_multiplies_the_token_vectors():
    model = BARTForConditionalGeneration(tiny_config(dtype="float64", scale_embedding=True))
    ids = token_ids(B=1, T=3)
    summed = model.model.shared.weight.data[ids] * np.sqrt(8) + model.model.encoder.embed_positions.weight.data[2:5]
    normalised = (summed - summed.mean(-1, keepdims=True)) / np.sqrt(summed.var(-1, keepdims=True) + 1e-5)
    with no_grad():
        np.testing.assert_allclose(model.model.encoder.embed(ids).data, normalised, rtol=0, atol=1e-12)


def test_dropout_is_active_in_training_only():
    model = BARTForConditionalGeneration(tiny_config(dropout=0.3, attention_dropout=0.3, activation_dropout=0.3))
    source, target = token_ids(), token_ids(T=4, seed=2)
    with no_grad():
        first, second = model(source, target).data, model(source, target).data
        model.eval()
        third, fourth = model(source, target).data, model(source, target).data
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(third, fourth)


@pytest.mark.parametrize("call, message", [
    (lambda m: m(np.array([[3, 17]]), np.array([[2]])), "input_ids holds token id 17 at (batch, position) (0, 1),"
                                                        " outside the vocabulary of 17 ids"),
    (lambda m: m(np.array([[3]]), np.array([[2, -1]])), "decoder_input_ids holds token id -1"),
    (lambda m: m(np.ones((1, 10), dtype=int), np.array([[2]])), "input_ids has length 10, more than the position"
                                                                " table's 9 (`max_position_embeddings`)"),
    (lambda m: m(np.array([[3]]), np.ones((1, 10), dtype=int)), "decoder_input_ids has length 10"),
    (lambda m: m(np.ones(4, dtype=int), np.array([[2]])), "input_ids must be a (B, T) array of integers"),
    (lambda m: m(np.ones((1, 3)), np.array([[2]])), "array of integers, got float64"),
    (lambda m: m(np.ones((1, 0), dtype=int), np.array([[2]])), "input_ids holds no token"),
    (lambda m: m(np.ones((2, 3), dtype=int), np.ones((2, 1), dtype=int), np.ones((2, 4))),
     "attention_mask must have shape (2, 3), got (2, 4)"),
    (lambda m: m(np.ones((2, 3), dtype=int), np.ones((2, 2), dtype=int), None, np.ones((1, 2))),
     "decoder_attention_mask must have shape (2, 2)"),
    (lambda m: m(np.ones((2, 3), dtype=int), np.ones((2, 2), dtype=int), np.full((2, 3), 2)), "with other values"),
    (lambda m: m.decode(np.ones((2, 2), dtype=int)), "decode needs encoder_hidden_states"),
    (lambda m: m.decode(np.ones((2, 2), dtype=int), np.ones((3, 4, 8))), "encoder_hidden_states must be (2, S, 8)"),
])
def test_bad_input_is_one_line_naming_it(call, message):
    with pytest.raises(BARTInputError) as error:
        call(BARTForConditionalGeneration(tiny_config()))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_cached_step_past_the_position_table_or_of_another_batch_is_refused():
    model = BARTForConditionalGeneration(tiny_config())
    with no_grad():
        cache = model.new_decoder_cache(model.encode(token_ids(B=2)))
        model.decode(np.ones((2, 9), dtype=int), cache=cache)
        with pytest.raises(BARTInputError, match=r"length 10 \(9 cached \+ 1 new\), more than"):
            model.decode(np.ones((2, 1), dtype=int), cache=cache)
        with pytest.raises(BARTInputError, match="3 decoder rows for a cache of 2 sequences"):
            model.decode(np.ones((3, 1), dtype=int), cache=model.new_decoder_cache(model.encode(token_ids(B=2))))


@pytest.mark.parametrize("overrides, setting", [
    (dict(d_model=9), "d_model"), (dict(decoder_attention_heads=3), "decoder_attention_heads"),
    (dict(activation_function="relu"), "activation_function"), (dict(dropout=1.0), "dropout"),
    (dict(encoder_ffn_dim=0), "encoder_ffn_dim"), (dict(pad_token_id=17), "pad_token_id"),
    (dict(forced_eos_token_id=-1), "forced_eos_token_id"), (dict(dtype="int32"), "dtype"),
    (dict(init_std=0), "init_std"),
])
def test_bad_config_names_the_setting(overrides, setting):
    with pytest.raises(SettingError, match=f"`{setting}`"):
        tiny_config(**overrides)


def test_flops_per_token_counts_both_stacks_the_head_and_attention():
    model = BARTForConditionalGeneration(tiny_config())
    C, V, ffn_enc, ffn_dec, L = 8, 17, 12, 10, 2
    attention = 4 * (C * C + C)
    encoder_layer = attention + (C * ffn_enc + ffn_enc) + (ffn_enc * C + C) + 2 * 2 * C
    decoder_layer = 2 * attention + (C * ffn_dec + ffn_dec) + (ffn_dec * C + C) + 3 * 2 * C
    matrices = L * encoder_layer + L * decoder_layer + 2 * 2 * C + V * C  # + layernorm_embedding twice, the head
    S, T = 6, 4
    assert model.flops_per_token(S, T) == 6 * matrices + 12 * C * (L * S + L * (T + S))
