"""LoRA: a frozen base and a trainable low-rank update, proven like every other layer.

The wrapped layer starts as its base exactly (B = 0); its gradient is
gradchecked in float64 and reaches A and B only; merged and unmerged give the
same outputs; adapters round-trip through a file of their own and refuse a
different base; a LoRA step equals one written in PyTorch.
"""

import numpy as np
import pytest

import npllm.functional as F
from npllm import Tensor, gradcheck
from npllm.errors import NpllmError, SettingError
from npllm.models import GPT, GPTConfig
from npllm.nn import Linear, LoRALinear, apply_lora, load_adapters, save_adapters
from npllm.optim import AdamW, configure_param_groups

CONFIG = dict(vocab_size=23, context_length=8, n_layer=2, n_head=2, n_embd=8)
IDS = np.random.default_rng(0).integers(0, 23, size=(2, 5))


def gpt(dtype="float64", seed=0):
    return GPT(GPTConfig(**CONFIG, dtype=dtype), seed=seed)


def with_trained_adapters(model, seed=1):
    """Give the adapters some non-zero B, as training would."""
    for name, param in model.named_parameters():
        if name.endswith("lora_B"):
            param.data[...] = np.random.default_rng(seed).standard_normal(param.shape) * 0.1
    return model


def test_a_lora_layer_starts_as_its_base_and_gradchecks():
    base = Linear(6, 4, dtype=np.float64, rng=np.random.default_rng(0))
    x = Tensor(np.random.default_rng(1).standard_normal((3, 6)), requires_grad=True)
    expected = base(x).data.copy()
    layer = LoRALinear(base, rank=2, alpha=4.0, rng=2)
    np.testing.assert_array_equal(layer(x).data, expected)  # B = 0: exactly the base
    layer.lora_B.data[...] = np.random.default_rng(3).standard_normal((2, 4))
    assert gradcheck(lambda x, a, b: layer(x).tanh().sum(), [x, layer.lora_A, layer.lora_B])  # perturbed in place
    layer(x).sum().backward()
    assert layer.weight.grad is None and layer.bias.grad is None and layer.lora_A.grad is not None


def test_apply_lora_freezes_the_model_and_only_the_adapters_train():
    model = gpt()
    before = model(IDS).data.copy()
    wrapped = apply_lora(model, rank=2, alpha=4.0)
    assert wrapped == [f"h.{i}.{name}" for i in range(2) for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc",
                                                                      "mlp.c_proj")]
    np.testing.assert_array_equal(model(IDS).data, before)
    trainable = [name for name, param in model.named_parameters() if param.requires_grad]
    assert trainable and all(name.rsplit(".", 1)[-1] in ("lora_A", "lora_B") for name in trainable)
    assert "h.0.attn.c_attn.weight" in model.state_dict()  # the base's names are kept
    groups = configure_param_groups(model, 0.1)
    assert sorted(name for group in groups for name in group["names"]) == sorted(trainable)
    optimizer = AdamW(groups, lr=0.1)
    frozen = {name: param.data.copy() for name, param in model.named_parameters() if not param.requires_grad}
    F.cross_entropy(model(IDS), IDS).backward()
    optimizer.step()
    assert all(np.array_equal(param.data, frozen[name]) for name, param in model.named_parameters() if name in frozen)
    assert not np.array_equal(model(IDS).data, before)


def test_merged_and_unmerged_give_the_same_outputs_and_unmerge_restores_the_base():
    model = with_trained_adapters(gpt())
    apply_lora(model, rank=3, alpha=6.0)
    model = with_trained_adapters(model)
    base_weight = model.h[0].attn.c_attn.weight.data.copy()
    unmerged = model(IDS).data.copy()
    for layer in (module for module in model.modules() if isinstance(module, LoRALinear)):
        layer.merge()
    np.testing.assert_allclose(model(IDS).data, unmerged, rtol=1e-12, atol=1e-12)
    for layer in (module for module in model.modules() if isinstance(module, LoRALinear)):
        layer.unmerge()
    np.testing.assert_allclose(model.h[0].attn.c_attn.weight.data, base_weight, rtol=0, atol=1e-15)


def test_adapters_are_saved_alone_and_refuse_another_base(tmp_path):
    model = gpt()
    apply_lora(model, rank=2)
    with_trained_adapters(model)
    save_adapters(model, tmp_path / "adapters.safetensors")
    assert (tmp_path / "adapters.safetensors").stat().st_size < 8_000  # kilobytes, not the model
    fresh = gpt()
    apply_lora(fresh, rank=2)
    load_adapters(fresh, tmp_path / "adapters.safetensors")
    np.testing.assert_array_equal(fresh(IDS).data, model(IDS).data)
    other = gpt(seed=5)
    apply_lora(other, rank=2)
    with pytest.raises(NpllmError, match="trained on another base model"):
        load_adapters(other, tmp_path / "adapters.safetensors")
    wider = gpt()
    apply_lora(wider, rank=4)
    with pytest.raises(NpllmError, match="another rank"):
        load_adapters(wider, tmp_path / "adapters.safetensors")


@pytest.mark.parametrize("settings, message", [
    (dict(rank=0), "`rank` must be a whole number of at least 1, got 0"),
    (dict(alpha=0.0), "`alpha` must be positive, got 0.0"),
    (dict(targets="nowhere"), "`targets` 'nowhere' matches no Linear layer; the model's are: h.0.attn.c_attn"),
], ids=["rank", "alpha", "targets"])
def test_bad_lora_settings_are_one_line(settings, message):
    with pytest.raises(SettingError, match=message):
        apply_lora(gpt(), **settings)


@pytest.mark.parity
def test_a_lora_step_equals_pytorchs():
    torch = pytest.importorskip("torch")
    base = Linear(6, 5, dtype=np.float64, rng=np.random.default_rng(0))
    layer = LoRALinear(base, rank=2, alpha=3.0, rng=4)
    layer.lora_B.data[...] = np.random.default_rng(5).standard_normal((2, 5)) * 0.3
    x = np.random.default_rng(6).standard_normal((4, 6))
    weights = {name: torch.tensor(param.data.copy(), requires_grad=name.startswith("lora"))
               for name, param in layer.named_parameters()}
    torch_out = torch.tensor(x) @ weights["weight"] + weights["bias"] \
        + (torch.tensor(x) @ weights["lora_A"] @ weights["lora_B"]) * (3.0 / 2)
    torch_optimizer = torch.optim.AdamW([weights["lora_A"], weights["lora_B"]], lr=0.05, weight_decay=0.1)
    (torch_out ** 2).mean().backward()
    torch_optimizer.step()
    optimizer = AdamW([layer.lora_A, layer.lora_B], lr=0.05, weight_decay=0.1)
    out = layer(Tensor(x))
    np.testing.assert_allclose(out.data, torch_out.detach().numpy(), rtol=1e-12)
    (out * out).mean().backward()
    optimizer.step()
    for name in ("lora_A", "lora_B"):
        np.testing.assert_allclose(getattr(layer, name).data, weights[name].detach().numpy(), rtol=1e-10, atol=1e-12)
