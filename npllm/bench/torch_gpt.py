"""GPT-2 written in PyTorch, the yardstick for ``npllm bench train --compare-torch``.

The same architecture as ``npllm.models.gpt`` (pre-LayerNorm blocks, fused
q/k/v projection, tanh GELU, learned positions, tied embeddings, weights in
GPT-2's (in, out) layout), written the way a PyTorch user would write it, in
eager mode.  It is imported only when a benchmark is asked to compare with
PyTorch: npllm itself never imports torch.
"""

import torch
import torch.nn.functional as TF


class TorchGPT(torch.nn.Module):
    """GPT-2 in eager PyTorch with npllm's parameter names; load npllm weights by name."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        C, V = config.n_embd, config.vocab_size
        self.params = torch.nn.ParameterDict()
        self.add("wte.weight", (V, C))
        self.add("wpe.weight", (config.context_length, C))
        for i in range(config.n_layer):
            for name, shape in _block_shapes(C).items():
                self.add(f"h.{i}.{name}", shape)
        self.add("ln_f.weight", (C,))
        self.add("ln_f.bias", (C,))

    def add(self, name, shape):
        self.params[name.replace(".", "__")] = torch.nn.Parameter(torch.zeros(shape))

    def p(self, name):
        return self.params[name.replace(".", "__")]

    def load_numpy_state(self, state):
        with torch.no_grad():
            for name, array in state.items():
                self.p(name).copy_(torch.from_numpy(array))

    def forward(self, idx):
        B, T = idx.shape
        x = self.p("wte.weight")[idx] + self.p("wpe.weight")[:T]
        for i in range(self.config.n_layer):
            x = x + self.attention(i, self.layer_norm(x, f"h.{i}.ln_1"))
            x = x + self.mlp(i, self.layer_norm(x, f"h.{i}.ln_2"))
        x = self.layer_norm(x, "ln_f")
        return x @ self.p("wte.weight").T

    def layer_norm(self, x, prefix):
        return TF.layer_norm(x, (x.shape[-1],), self.p(prefix + ".weight"), self.p(prefix + ".bias"), 1e-5)

    def linear(self, x, prefix):
        return torch.addmm(self.p(prefix + ".bias"), x.reshape(-1, x.shape[-1]), self.p(prefix + ".weight")).view(
            *x.shape[:-1], -1
        )

    def attention(self, i, x):
        B, T, C = x.shape
        H = self.config.n_head
        q, k, v = self.linear(x, f"h.{i}.attn.c_attn").split(C, dim=2)
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        y = TF.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.linear(y, f"h.{i}.attn.c_proj")

    def mlp(self, i, x):
        return self.linear(TF.gelu(self.linear(x, f"h.{i}.mlp.c_fc"), approximate="tanh"), f"h.{i}.mlp.c_proj")


def _block_shapes(C):
    return {
        "ln_1.weight": (C,), "ln_1.bias": (C,),
        "attn.c_attn.weight": (C, 3 * C), "attn.c_attn.bias": (3 * C,),
        "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,),
        "ln_2.weight": (C,), "ln_2.bias": (C,),
        "mlp.c_fc.weight": (C, 4 * C), "mlp.c_fc.bias": (4 * C,),
        "mlp.c_proj.weight": (4 * C, C), "mlp.c_proj.bias": (C,),
    }

