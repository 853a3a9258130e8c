"""npllm.nn: Module bookkeeping, and every layer gradchecked in float64."""

import numpy as np
import pytest

from npllm import Tensor, gradcheck, no_grad
from npllm.nn import (
    MLP, Block, Dropout, Embedding, LayerNorm, Linear, Module, ModuleList, MultiHeadAttention, Parameter,
    ProjectedAttention,
)
from npllm.nn.attention import KVCache

F64 = np.float64


def rand(*shape, seed=0):
    return Tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)


def randomize(module, seed=1):
    """Give every parameter random values (biases and LayerNorm start at 0/1, which would hide bugs)."""
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.5


def check_layer(layer, *inputs, **kwargs):
    """gradcheck a layer with respect to its inputs and all its parameters."""
    randomize(layer)
    n = len(inputs)
    assert gradcheck(lambda *args: layer(*args[:n], **kwargs), [*inputs, *layer.parameters()], max_elements=40)


class Pair(Module):
    def __init__(self):
        super().__init__()
        self.first = Linear(3, 4, dtype=F64)
        self.second = Linear(4, 3, dtype=F64)
        self.second.weight = Parameter(self.first.weight.data.T.copy())
        self.scale = Parameter(np.ones(1))
        self.not_a_param = np.zeros(3)

    def forward(self, x):
        return self.second(self.first(x)) * self.scale


# --- Module bookkeeping ---------------------------------------------------
def test_registration_and_dotted_names():
    model = Pair()
    names = [name for name, _ in model.named_parameters()]
    assert names == ["scale", "first.weight", "first.bias", "second.weight", "second.bias"]  # own ones first
    assert [name for name, _ in model.named_modules()] == ["", "first", "second"]


def test_shared_parameter_appears_once_and_reassignment_unregisters():
    model = Pair()
    model.second.weight = model.first.weight  # tie
    params = model.parameters()
    assert sum(p is model.first.weight for p in params) == 1
    assert "second.weight" not in model.state_dict()
    model.scale = None
    assert "scale" not in dict(model.named_parameters())


def test_forgetting_super_init_is_named():
    class Broken(Module):
        def __init__(self):
            self.w = Parameter(np.ones(2))

    with pytest.raises(AttributeError, match="super"):
        Broken()


def test_state_dict_round_trip_copies_into_existing_arrays():
    source, target = Pair(), Pair()
    randomize(source, seed=5)
    arrays_before = [p.data for p in target.parameters()]
    target.load_state_dict({k: v.copy() for k, v in source.state_dict().items()})
    for (name, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert all(p.data is before for p, before in zip(target.parameters(), arrays_before))


def test_load_state_dict_names_every_problem():
    model = Pair()
    state = {k: v.copy() for k, v in model.state_dict().items()}
    del state["first.bias"]
    state["extra.weight"] = np.zeros(2)
    state["scale"] = np.zeros(2)
    before = model.first.weight.data.copy()
    state["first.weight"] += 1
    with pytest.raises(KeyError) as error:
        model.load_state_dict(state)
    message = str(error.value)
    assert "first.bias" in message and "extra.weight" in message and "scale" in message and "(2,)" in message
    np.testing.assert_array_equal(model.first.weight.data, before)  # a failed load changes nothing
    del state["scale"]
    model.load_state_dict(state, strict=False)
    np.testing.assert_array_equal(model.first.weight.data, before + 1)


def test_train_eval_zero_grad_and_repr():
    model = Pair()
    assert model.eval() is model and not model.first.training
    model.train()
    assert model.second.training
    x = rand(2, 3)
    model(x).sum().backward()
    grads = [p.grad for p in model.parameters()]
    model.zero_grad()
    assert all(p.grad is g and not g.any() for p, g in zip(model.parameters(), grads))
    text = repr(model)
    assert "Pair()" in text and "(first): Linear(3, 4, bias=True)  # 16 parameters" in text
    assert f"# {model.num_parameters():,} parameters" in text.splitlines()[0]


def test_module_list():
    layers = ModuleList(Linear(2, 2) for _ in range(3))
    assert len(layers) == 3 and layers[1] is list(layers)[1]
    assert [name for name, _ in layers.named_parameters()][:2] == ["0.weight", "0.bias"]


# --- layers ---------------------------------------------------------------
def test_linear_is_x_at_w_plus_b_and_gradchecks():
    layer = Linear(4, 3, dtype=F64)
    assert layer.weight.shape == (4, 3)
    x = rand(2, 5, 4)
    randomize(layer)
    expected = x.data @ layer.weight.data + layer.bias.data
    np.testing.assert_allclose(layer(x).data, expected, rtol=1e-12)
    check_layer(layer, x)
    check_layer(Linear(4, 3, bias=False, dtype=F64), rand(6, 4))


def test_embedding_gradchecks_with_repeated_ids():
    layer = Embedding(7, 3, dtype=F64)
    ids = np.array([[1, 1, 6], [0, 1, 6]])
    check_layer(layer, ids)
    np.testing.assert_array_equal(layer(ids).data[0, 1], layer.weight.data[1])


def test_embedding_with_a_padding_row_starts_it_at_zero_and_never_trains_it():
    layer = Embedding(7, 3, dtype=F64, padding_idx=1)
    assert not layer.weight.data[1].any()
    randomize(layer)
    layer(np.array([[1, 1, 6], [0, 1, 6]])).sum().backward()
    assert not layer.weight.grad[1].any() and (layer.weight.grad[6] == 2).all()


def test_layernorm_gradchecks_and_normalises():
    layer = LayerNorm(5, dtype=F64)
    x = rand(3, 4, 5)
    y = layer(x).data
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(-1), 1, rtol=1e-4)
    check_layer(layer, x)
    check_layer(LayerNorm(5, bias=False, dtype=F64), x)


def test_dropout_seeded_scaled_and_off_in_eval():
    x = Tensor(np.ones((200, 50)), requires_grad=True)
    y1, y2 = Dropout(0.3, rng=7)(x).data, Dropout(0.3, rng=7)(x).data
    np.testing.assert_array_equal(y1, y2)
    assert abs((y1 == 0).mean() - 0.3) < 0.02 and np.allclose(y1[y1 != 0], 1 / 0.7)
    layer = Dropout(0.3, rng=7).eval()
    assert layer(x) is x
    train = Dropout(0.3).train()

    def fresh_masks(t):
        train.rng = np.random.default_rng(3)  # the same mask at every call of gradcheck
        return train(t)

    assert gradcheck(fresh_masks, [rand(4, 6)])


def test_mlp_and_block_gradcheck():
    check_layer(MLP(4, dtype=F64, rng=np.random.default_rng(0)), rand(2, 3, 4))
    check_layer(Block(4, 2, dtype=F64, rng=np.random.default_rng(0)), rand(2, 3, 4))


# --- attention --------------------------------------------------------------
def attention(**options):
    return MultiHeadAttention(6, 3, dtype=F64, rng=np.random.default_rng(0), **options)


def test_causal_self_attention_gradchecks():
    check_layer(attention(), rand(2, 4, 6))


def test_bidirectional_attention_with_padding_mask_gradchecks():
    mask = np.array([True, True, True, False])[None, None, None, :]  # (1, 1, 1, 4): the last key is padding
    check_layer(attention(causal=False), rand(2, 4, 6), mask=mask)


def test_cross_attention_gradchecks_and_names_its_projections():
    layer = attention(causal=False, cross=True)
    assert {"q_attn.weight", "c_attn.weight", "c_proj.weight"} <= set(layer.state_dict())
    assert layer.c_attn.weight.shape == (6, 12)
    context = rand(2, 5, 6, seed=1)
    randomize(layer)
    assert gradcheck(lambda x, c, *params: layer(x, context=c), [rand(2, 3, 6), context, *layer.parameters()],
                     max_elements=40)
    with pytest.raises(ValueError, match="context"):
        layer(rand(2, 3, 6))


def test_causal_attention_ignores_the_future():
    layer = attention()
    randomize(layer)
    x = rand(1, 5, 6).data
    changed = x.copy()
    changed[0, 3:] += 1.0
    with no_grad():
        a, b = layer(Tensor(x)).data, layer(Tensor(changed)).data
    np.testing.assert_array_equal(a[0, :3], b[0, :3])
    assert not np.allclose(a[0, 3:], b[0, 3:])


def test_kv_cache_one_token_at_a_time_equals_full_attention():
    layer = attention()
    randomize(layer)
    x = rand(2, 5, 6).data
    cache = layer.new_kv_cache(batch_size=2, capacity=5)
    with no_grad():
        full = layer(Tensor(x)).data
        first = layer(Tensor(x[:, :2]), kv_cache=cache).data  # a prompt of two tokens, then one by one
        steps = [layer(Tensor(x[:, t:t + 1]), kv_cache=cache).data for t in range(2, 5)]
    np.testing.assert_allclose(np.concatenate([first, *steps], axis=1), full, rtol=1e-12, atol=1e-14)
    assert cache.length == 5
    with pytest.raises(ValueError, match="capacity of 5"):
        layer(Tensor(x[:, :1]), kv_cache=cache)


def projected(**options):
    return ProjectedAttention(6, 3, dtype=F64, rng=np.random.default_rng(0), **options)


def test_projected_attention_has_barts_names_and_gradchecks_in_each_use():
    layer = projected(causal=True)
    assert list(layer.state_dict()) == [f"{p}.{leaf}" for p in ("k_proj", "v_proj", "q_proj", "out_proj")
                                        for leaf in ("weight", "bias")]
    check_layer(layer, rand(2, 4, 6))
    padding = np.array([True, True, True, False])[None, None, None, :]
    check_layer(projected(), rand(2, 4, 6), mask=padding)
    check_layer(projected(causal=True), rand(2, 4, 6), mask=padding)  # causal and padded together
    cross = projected(cross=True)
    randomize(cross)
    assert gradcheck(lambda x, c, *params: cross(x, context=c, mask=padding[..., :3]),
                     [rand(2, 4, 6), rand(2, 3, 6, seed=1), *cross.parameters()], max_elements=40)


def test_projected_attention_equals_its_composition():
    layer = projected(causal=True)
    randomize(layer)
    x = rand(2, 4, 6).data
    padding = np.array([[True] * 4, [True, True, False, True]])[:, None, None, :]
    q, k, v = (x @ p.weight.data + p.bias.data for p in (layer.q_proj, layer.k_proj, layer.v_proj))
    heads = [t.reshape(2, 4, 3, 2).transpose(0, 2, 1, 3) for t in (q, k, v)]
    scores = heads[0] @ heads[1].transpose(0, 1, 3, 2) / np.sqrt(2)
    scores = np.where(padding & np.tri(4, dtype=bool), scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    y = (weights @ heads[2]).transpose(0, 2, 1, 3).reshape(2, 4, 6)
    with no_grad():
        np.testing.assert_allclose(layer(Tensor(x), mask=padding).data, y @ layer.out_proj.weight.data
                                   + layer.out_proj.bias.data, rtol=0, atol=1e-12)


def test_cross_attention_reads_its_context_kv_computed_once():
    layer = projected(cross=True)
    randomize(layer)
    x, context = rand(2, 3, 6), rand(2, 5, 6, seed=1)
    with no_grad():
        kv = layer.context_kv(context)
        assert kv[0].shape == (2, 3, 5, 2)
        np.testing.assert_array_equal(layer(x, context_kv=kv).data, layer(x, context=context).data)
        with pytest.raises(ValueError, match="context or its context_kv"):
            layer(x)
        with pytest.raises(ValueError, match="context_kv instead"):
            layer(x, context=context, kv_cache=layer.new_kv_cache(2, 4))


def test_kv_cache_reorder_copies_the_chosen_rows():
    cache = KVCache(3, 1, 2, capacity=4, dtype=F64)
    keys = np.arange(12.0).reshape(3, 1, 2, 2)
    cache.append(keys, -keys)
    cache.reorder([2, 2, 0])
    np.testing.assert_array_equal(cache.keys[:, :, :2], keys[[2, 2, 0]])
    np.testing.assert_array_equal(cache.values[:, :, :2], -keys[[2, 2, 0]])


def test_attention_errors():
    with pytest.raises(ValueError, match="n_embd 6 is not divisible by n_head 4"):
        MultiHeadAttention(6, 4)
    with pytest.raises(ValueError, match="causal=False"):
        MultiHeadAttention(6, 3, cross=True)
    with pytest.raises(ValueError, match="causal=False"):
        ProjectedAttention(6, 3, causal=True, cross=True)
    with pytest.raises(ValueError, match="not divisible"):
        ProjectedAttention(6, 4)


# --- surgery: freezing and replacing sub-modules -----------------------------
def test_requires_grad_freezes_a_sub_tree_and_its_parameters_get_no_gradient():
    block = Block(8, 2, rng=np.random.default_rng(0))
    assert block.attn.requires_grad_(False) is block.attn
    x = Tensor(np.random.default_rng(1).standard_normal((2, 3, 8)).astype(np.float32), requires_grad=True)
    block(x).sum().backward()
    for name, param in block.named_parameters():
        assert (param.grad is None) == name.startswith("attn."), name
    assert "frozen" in repr(block.attn.c_attn.weight)
    block.requires_grad_(True)
    assert all(param.requires_grad for param in block.parameters())


def test_set_submodule_replaces_a_piece_in_place_and_keeps_the_names():
    block = Block(8, 2, rng=np.random.default_rng(0))
    names = [name for name, _ in block.named_parameters()]
    new = Linear(32, 8, rng=np.random.default_rng(2))
    block.set_submodule("mlp.c_proj", new)
    assert block.get_submodule("mlp.c_proj") is new and block.mlp.c_proj is new
    assert [name for name, _ in block.named_parameters()] == names
    assert block.get_submodule("") is block
    with pytest.raises(KeyError, match="no sub-module 'mlp.nowhere'"):
        block.get_submodule("mlp.nowhere")
    with pytest.raises(KeyError, match="no sub-module 'mlp.extra' to replace"):
        block.set_submodule("mlp.extra", new)
    with pytest.raises(TypeError, match="must be replaced by a Module"):
        block.set_submodule("mlp.c_proj", np.zeros(3))
