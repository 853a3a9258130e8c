"""Optimizers, flat buffers, clipping, parameter groups and schedules."""

import copy

import numpy as np
import pytest

import npllm.functional as F
from npllm.models import GPT, GPTConfig
from npllm.nn import Parameter
from npllm.optim import (
    SGD, Adam, AdamW, ConstantLR, WarmupCosineLR, clip_grad_norm, configure_param_groups, param_groups_by_name, set_lr,
)

SHAPES = [(4, 3), (3,), (2, 2, 2)]


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    return [Parameter(rng.standard_normal(shape)) for shape in SHAPES]


def gradients(step, seed=0):
    rng = np.random.default_rng(1000 * seed + step)
    return [rng.standard_normal(shape) for shape in SHAPES]


# --- flat buffers ---------------------------------------------------------
def test_parameters_and_gradients_become_views_into_flat_buffers():
    params = make_params()
    values = [p.data.copy() for p in params]
    optimizer = SGD(params, lr=0.1)
    flat = optimizer.flat_groups[0]
    for p, value in zip(params, values):
        np.testing.assert_array_equal(p.data, value)
        assert np.shares_memory(p.data, flat.data) and np.shares_memory(p.grad, flat.grad)
    (params[0] * 2.0).sum().backward()  # the engine accumulates into the view
    np.testing.assert_array_equal(flat.grad[:12], 2.0)
    optimizer.zero_grad()
    assert not flat.grad.any() and np.shares_memory(params[0].grad, flat.grad)


def test_rebound_data_and_grad_are_reattached_with_their_values():
    params = make_params()
    optimizer = SGD(params, lr=0.5)
    params[1].grad = None  # counts as zero
    params[2].grad = np.ones((2, 2, 2))
    params[0].data = np.zeros((4, 3))
    optimizer.step()
    flat = optimizer.flat_groups[0]
    assert all(np.shares_memory(p.data, flat.data) and np.shares_memory(p.grad, flat.grad) for p in params)
    np.testing.assert_array_equal(params[0].data, 0.0)
    np.testing.assert_array_equal(params[2].grad, 1.0)


def test_model_state_dict_loads_into_the_optimizers_views():
    model = GPT(GPTConfig(vocab_size=11, context_length=5, n_layer=1, n_head=2, n_embd=8), seed=0)
    optimizer = AdamW(configure_param_groups(model, 0.1), lr=0.1)
    other = GPT(GPTConfig(vocab_size=11, context_length=5, n_layer=1, n_head=2, n_embd=8), seed=1)
    model.load_state_dict(other.state_dict())
    assert all(np.shares_memory(p.data, f.data) for f in optimizer.flat_groups for p, _, _ in f.views)
    np.testing.assert_array_equal(optimizer.flat_groups[0].data[:88], other.wte.weight.data.reshape(-1))


def test_errors():
    with pytest.raises(ValueError, match="more than one parameter group"):
        params = make_params()
        SGD([{"params": params}, {"params": params[:1]}])
    with pytest.raises(TypeError, match="one dtype"):
        SGD([Parameter(np.ones(2)), Parameter(np.ones(2, dtype=np.float32))])
    with pytest.raises(ValueError, match="Nesterov"):
        SGD(make_params(), nesterov=True)
    with pytest.raises(ValueError, match="empty"):
        AdamW([])


# --- parity with torch.optim ----------------------------------------------
def groups_of(params, settings):
    return [{"params": params[:2], **settings[0]}, {"params": params[2:], **settings[1]}]


CASES = [
    ("SGD", dict(lr=0.1), [{}, {"lr": 0.05}]),
    ("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01), [{}, {"momentum": 0.5}]),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True), [{}, {"weight_decay": 0.1}]),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99)), [{}, {"lr": 0.1}]),
    ("Adam", dict(lr=0.01, weight_decay=0.1), [{}, {"weight_decay": 0.0}]),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-6), [{}, {"weight_decay": 0.0}]),
]


@pytest.mark.parity
@pytest.mark.parametrize("name, options, group_settings", CASES)
def test_matches_torch_optim_over_several_steps(name, options, group_settings):
    torch = pytest.importorskip("torch")
    params = make_params()
    torch_params = [torch.tensor(p.data.copy(), requires_grad=True) for p in params]
    ours = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}[name](groups_of(params, group_settings), **options)
    theirs = getattr(torch.optim, name)(groups_of(torch_params, group_settings), **options)
    for step in range(6):
        ours.zero_grad()
        theirs.zero_grad()
        for p, q, g in zip(params, torch_params, gradients(step)):
            p.grad[...] = g
            q.grad = torch.tensor(g)
        ours.step()
        theirs.step()
        for p, q in zip(params, torch_params):
            np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_one_adamw_step_by_hand():
    p = Parameter(np.array([1.0, -2.0]))
    optimizer = AdamW([p], lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    p.grad[...] = [0.5, 0.1]
    optimizer.step()
    # decay: p = p (1 - 0.1 * 0.1) = [0.99, -1.98]
    # m = 0.1 g, v = 0.001 g^2; bias-corrected m^ = g, v^ = g^2; step = lr m^ / (sqrt(v^) + eps)
    expected = [0.99 - 0.1 * 0.5 / (0.5 + 1e-8), -1.98 - 0.1 * 0.1 / (0.1 + 1e-8)]
    np.testing.assert_allclose(p.data, expected, rtol=1e-12)
    state = optimizer.state[0]
    np.testing.assert_allclose(state["exp_avg"], [0.05, 0.01], rtol=1e-12)
    np.testing.assert_allclose(state["exp_avg_sq"], [0.00025, 0.00001], rtol=1e-12)


# --- saving and resuming --------------------------------------------------
def run(optimizer, params, steps, first_step=0):
    for step in range(first_step, first_step + steps):
        optimizer.zero_grad()
        for p, g in zip(params, gradients(step)):
            p.grad[...] = g
        optimizer.step()


@pytest.mark.parametrize("make", [
    lambda groups: AdamW(groups, lr=0.01, weight_decay=0.1),
    lambda groups: SGD(groups, lr=0.01, momentum=0.9),
])
def test_optimizer_state_dict_round_trip_resumes_bit_identically(make):
    params = make_params()
    optimizer = make(groups_of(params, [{}, {"lr": 0.02}]))
    run(optimizer, params, 3)
    saved_params = [p.data.copy() for p in params]
    saved_state = copy.deepcopy(optimizer.state_dict())
    run(optimizer, params, 3, first_step=3)

    resumed = make_params(seed=9)
    resumed_optimizer = make(groups_of(resumed, [{}, {}]))
    for p, value in zip(resumed, saved_params):
        p.data[...] = value
    resumed_optimizer.load_state_dict(saved_state)
    assert resumed_optimizer.param_groups[1]["lr"] == 0.02
    run(resumed_optimizer, resumed, 3, first_step=3)
    for p, q in zip(params, resumed):
        np.testing.assert_array_equal(p.data, q.data)

    with pytest.raises(ValueError, match="shapes"):
        make([Parameter(np.ones(3))]).load_state_dict(saved_state)


# --- clipping, groups, schedules --------------------------------------------
@pytest.mark.parity
def test_clip_grad_norm_matches_torch():
    torch = pytest.importorskip("torch")
    params = make_params()
    torch_params = [torch.tensor(p.data.copy(), requires_grad=True) for p in params]
    for p, q, g in zip(params, torch_params, gradients(0)):
        p.grad = g * 3
        q.grad = torch.tensor(g * 3)
    norm = clip_grad_norm(params, 1.0)
    torch_norm = torch.nn.utils.clip_grad_norm_(torch_params, 1.0)
    assert norm == pytest.approx(float(torch_norm), rel=1e-12)
    for p, q in zip(params, torch_params):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-12)
    before = [p.grad.copy() for p in params]
    assert clip_grad_norm(params, 100.0) == pytest.approx(1.0, rel=1e-5)
    assert all(np.array_equal(p.grad, b) for p, b in zip(params, before))


def tiny_gpt(seed=0):
    return GPT(GPTConfig(vocab_size=11, context_length=5, n_layer=2, n_head=2, n_embd=8), seed=seed)


def test_configure_param_groups_decays_the_matrices_by_shape_and_names_them():
    model = tiny_gpt()
    decay, no_decay = configure_param_groups(model, 0.1)
    names = {id(p): name for name, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert sorted(names[id(p)] for p in decay["params"]) == sorted(
        ["wte.weight", "wpe.weight"]
        + [f"h.{i}.{layer}.weight" for i in range(2) for layer in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]
    )
    assert all(p.ndim == 1 for p in no_decay["params"])
    assert [names[id(p)] for p in decay["params"]] == decay["names"]
    assert len(decay["params"]) + len(no_decay["params"]) == len(model.parameters())


def test_frozen_parameters_get_no_gradient_no_moments_and_no_decay():
    model = tiny_gpt()
    model.h[0].requires_grad_(False)
    frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {name for name, _ in model.named_parameters() if name.startswith("h.0.")}
    groups = configure_param_groups(model, 0.1)
    assert not frozen & {name for group in groups for name in group["names"]}
    optimizer = AdamW(groups, lr=0.1)
    assert sum(flat.data.size for flat in optimizer.flat_groups) == sum(p.size for p in model.parameters() if p.requires_grad)
    before = {name: p.data.copy() for name, p in model.named_parameters()}
    optimizer.zero_grad()
    loss = F.cross_entropy(model(np.array([[1, 2, 3]])), np.array([[2, 3, 4]]))
    loss.backward()
    assert all(p.grad is None for name, p in model.named_parameters() if name in frozen)
    optimizer.step()
    for name, p in model.named_parameters():
        assert np.array_equal(p.data, before[name]) == (name in frozen), name


def test_an_optimizer_refuses_a_parameter_frozen_after_it_was_built():
    model = tiny_gpt()
    optimizer = SGD(model.parameters(), lr=0.1)
    model.ln_f.requires_grad_(False)
    with pytest.raises(RuntimeError, match="frozen after the optimizer was built"):
        optimizer.step()


def test_param_groups_by_name_rebuilds_the_saved_groups():
    model = tiny_gpt()
    embeddings = {"wte.weight", "wpe.weight"}
    saved = AdamW(configure_param_groups(model, 0.1, decays=lambda name, p: p.ndim >= 2 and name not in embeddings),
                  lr=0.1).state_dict()["param_groups"]
    rebuilt = param_groups_by_name(tiny_gpt(seed=1), saved)
    assert [group["names"] for group in rebuilt] == [group["names"] for group in saved]
    assert "wte.weight" in rebuilt[1]["names"] and [g["weight_decay"] for g in rebuilt] == [0.1, 0.0]
    with pytest.raises(KeyError, match="lacks: nowhere.weight"):
        param_groups_by_name(model, [{"names": ["nowhere.weight"], "weight_decay": 0.0}])


def test_schedules():
    assert ConstantLR(0.1)(0) == ConstantLR(0.1)(10**6) == 0.1
    schedule = WarmupCosineLR(max_lr=1.0, warmup_steps=10, total_steps=110, min_lr=0.1)
    assert schedule(0) == pytest.approx(0.1) and schedule(9) == pytest.approx(1.0)
    assert schedule(10) == pytest.approx(1.0)
    assert schedule(60) == pytest.approx(0.55)  # half-way down the cosine: (max + min) / 2
    assert schedule(110) == schedule(10**6) == pytest.approx(0.1)
    values = [schedule(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    optimizer = SGD(make_params(), lr=1.0)
    set_lr(optimizer, schedule(60))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.55)
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosineLR(1.0, warmup_steps=20, total_steps=10)


def test_adamw_trains_a_model_through_the_flat_buffers():
    model = GPT(GPTConfig(vocab_size=11, context_length=5, n_layer=1, n_head=2, n_embd=8), seed=0)
    optimizer = AdamW(model.parameters(), lr=1e-2)
    idx = np.random.default_rng(0).integers(0, 11, size=(2, 5))
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(idx[:, :-1]), idx[:, 1:])
        loss.backward()
        clip_grad_norm(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
