"""BERT's masked-LM model written in PyTorch, the yardstick for ``npllm bench train --model bert --compare-torch``.

The same architecture as ``npllm.models.bert`` (post-LayerNorm blocks,
separate query/key/value projections, exact GELU, learned positions and token
types, the masked-LM head tied to the word embeddings, evaluated at the
masked positions only), written as a PyTorch user would, in eager mode with
SDPA attention, and holding npllm's parameter names and (in, out) layout so
npllm's weights load by name.  Imported only when a benchmark compares with
PyTorch: npllm itself never imports torch.
"""

import torch
import torch.nn.functional as TF


class TorchBERTForMaskedLM(torch.nn.Module):
    """``model(idx, positions)`` -> logits (N, V) at the flat ``positions``; parameters named as npllm's."""

    def __init__(self, state: dict):
        super().__init__()
        self.params = torch.nn.ParameterDict(
            {name.replace(".", "__"): torch.nn.Parameter(torch.from_numpy(array.copy())) for name, array in state.items()})
        self.n_layer = sum(1 for name in state if name.endswith(".attention.self.query.weight"))

    def p(self, name):
        return self.params[name.replace(".", "__")]

    def forward(self, idx, positions, n_head, eps):
        B, T = idx.shape
        e = "bert.embeddings."
        x = self.p(e + "word_embeddings.weight")[idx] + self.p(e + "position_embeddings.weight")[:T] \
            + self.p(e + "token_type_embeddings.weight")[0]
        x = self.layer_norm(x, e + "LayerNorm", eps)
        for i in range(self.n_layer):
            layer = f"bert.encoder.layer.{i}."
            x = self.layer_norm(x + self.linear(self.attention(x, layer + "attention.self.", n_head),
                                                layer + "attention.output.dense"), layer + "attention.output.LayerNorm", eps)
            hidden = TF.gelu(self.linear(x, layer + "intermediate.dense"))
            x = self.layer_norm(x + self.linear(hidden, layer + "output.dense"), layer + "output.LayerNorm", eps)
        rows = x.reshape(B * T, -1)[positions]  # (N, C)
        head = "cls.predictions."
        rows = self.layer_norm(TF.gelu(self.linear(rows, head + "transform.dense")), head + "transform.LayerNorm", eps)
        return torch.addmm(self.p(head + "bias"), rows, self.p("bert.embeddings.word_embeddings.weight").T)

    def layer_norm(self, x, prefix, eps):
        return TF.layer_norm(x, (x.shape[-1],), self.p(prefix + ".weight"), self.p(prefix + ".bias"), eps)

    def linear(self, x, prefix):
        return torch.addmm(self.p(prefix + ".bias"), x.reshape(-1, x.shape[-1]), self.p(prefix + ".weight")).view(
            *x.shape[:-1], -1)

    def attention(self, x, prefix, n_head):
        B, T, C = x.shape
        q, k, v = (self.linear(x, prefix + name).view(B, T, n_head, C // n_head).transpose(1, 2)
                   for name in ("query", "key", "value"))  # (B, H, T, D) each
        return TF.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, C)
