"""The GPT against an independent PyTorch implementation of GPT-2 given the same weights.

The PyTorch model below is written out from GPT-2's definition (explicit
masked softmax attention, tanh GELU, pre-LayerNorm, tied output projection)
and shares no code with npllm.  Logits, the loss and the gradient of every
parameter must agree.

Tolerances, relative to each array's largest entry.  float64: 1e-12; the
two sides only sum in different orders, and agree to ~2e-15 (measured).
float32: 1e-4 (about 2^-13).  float32 carries ~7 digits; each of the ~20
layers of sums (matmuls of length C to 4C, softmax and LayerNorm
reductions, gradients accumulated over B T positions) rounds in its own
order on each side, and the errors compound through the backward.  The
measured worst is ~1.1e-6, so 1e-4 leaves room for other BLAS builds while
still catching any real bug (those show up at 1e-2 and up).
"""

import math

import numpy as np
import pytest

import npllm.functional as F
from npllm.models import GPT, GPTConfig

pytestmark = pytest.mark.parity
torch = pytest.importorskip("torch")
TF = torch.nn.functional

CONFIG = dict(vocab_size=23, context_length=8, n_layer=2, n_head=2, n_embd=16)


def torch_gpt2_logits(weights, idx, n_layer, n_head):
    """GPT-2's forward in PyTorch, from a dict of name -> tensor in GPT-2's layout."""
    B, T = idx.shape
    C = weights["wte.weight"].shape[1]
    D = C // n_head
    x = weights["wte.weight"][idx] + weights["wpe.weight"][:T]
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    for i in range(n_layer):
        w = {name[len(f"h.{i}."):]: value for name, value in weights.items() if name.startswith(f"h.{i}.")}
        h = TF.layer_norm(x, (C,), w["ln_1.weight"], w["ln_1.bias"], eps=1e-5)
        q, k, v = (h @ w["attn.c_attn.weight"] + w["attn.c_attn.bias"]).split(C, dim=-1)
        q, k, v = (t.view(B, T, n_head, D).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(D)
        attention = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
        y = (attention @ v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ w["attn.c_proj.weight"] + w["attn.c_proj.bias"]
        h = TF.layer_norm(x, (C,), w["ln_2.weight"], w["ln_2.bias"], eps=1e-5)
        hidden = TF.gelu(h @ w["mlp.c_fc.weight"] + w["mlp.c_fc.bias"], approximate="tanh")
        x = x + hidden @ w["mlp.c_proj.weight"] + w["mlp.c_proj.bias"]
    x = TF.layer_norm(x, (C,), weights["ln_f.weight"], weights["ln_f.bias"], eps=1e-5)
    return x @ weights["wte.weight"].T


def max_relative_error(ours, theirs):
    return float(np.max(np.abs(ours - theirs)) / max(np.max(np.abs(theirs)), 1e-30))


@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-12), ("float32", 1e-4)])
def test_logits_loss_and_every_gradient_match_pytorch(dtype, tolerance):
    model = GPT(GPTConfig(**CONFIG, dtype=dtype), seed=0)
    rng = np.random.default_rng(0)
    for p in model.parameters():  # perturb so that biases and LayerNorm gains are not trivial
        p.data += (rng.standard_normal(p.shape) * 0.1).astype(p.dtype)
    idx = rng.integers(0, CONFIG["vocab_size"], size=(3, 8))
    targets = rng.integers(0, CONFIG["vocab_size"], size=(3, 8))

    logits = model(idx)
    loss = F.cross_entropy(logits, targets)
    loss.backward()

    weights = {name: torch.tensor(array.copy(), requires_grad=True) for name, array in model.state_dict().items()}
    torch_logits = torch_gpt2_logits(weights, torch.tensor(idx), CONFIG["n_layer"], CONFIG["n_head"])
    torch_loss = TF.cross_entropy(torch_logits.reshape(-1, CONFIG["vocab_size"]), torch.tensor(targets).reshape(-1))
    torch_loss.backward()

    assert max_relative_error(logits.data, torch_logits.detach().numpy()) < tolerance
    assert abs(loss.item() - torch_loss.item()) < tolerance * abs(torch_loss.item())
    for name, param in model.named_parameters():
        error = max_relative_error(param.grad, weights[name].grad.numpy())
        assert error < tolerance, f"{name}: relative error {error:.2e}"
