"""BART written in PyTorch, the yardstick for ``npllm bench train --model seq2seq --compare-torch``.

The same architecture as ``npllm.models.bart`` (one shared embedding table,
learned positions with BART's offset of 2, ``layernorm_embedding`` on both
sides, post-LayerNorm encoder and decoder layers, cross-attention over the
encoder's output with the source's padding hidden, exact GELU, the LM head
tied to the table plus ``final_logits_bias``), written as a PyTorch user
would, in eager mode with SDPA attention, holding npllm's parameter names and
(in, out) layout so npllm's weights load by name.  Imported only when a
benchmark compares with PyTorch: npllm itself never imports torch.
"""

import torch
import torch.nn.functional as TF

POSITION_OFFSET = 2


class TorchBART(torch.nn.Module):
    """``model(input_ids, decoder_input_ids, attention_mask)`` -> logits (B, T, V); parameters named as npllm's."""

    def __init__(self, state: dict, config):
        super().__init__()
        self.config = config
        self.params = torch.nn.ParameterDict(
            {name.replace(".", "__"): torch.nn.Parameter(torch.from_numpy(array.copy()),
                                                         requires_grad=name != "final_logits_bias")
             for name, array in state.items()})

    def p(self, name):
        return self.params[name.replace(".", "__")]

    def forward(self, input_ids, decoder_input_ids, attention_mask):
        c = self.config
        keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, S): True = a real source token
        x = self.embed(input_ids, "model.encoder.")
        for i in range(c.encoder_layers):
            layer = f"model.encoder.layers.{i}."
            x = self.layer_norm(x + self.attention(x, x, layer + "self_attn.", c.encoder_attention_heads, mask=keep),
                                layer + "self_attn_layer_norm")
            x = self.mlp(x, layer)
        y = self.embed(decoder_input_ids, "model.decoder.")
        for i in range(c.decoder_layers):
            layer = f"model.decoder.layers.{i}."
            heads = c.decoder_attention_heads
            y = self.layer_norm(y + self.attention(y, y, layer + "self_attn.", heads, causal=True),
                                layer + "self_attn_layer_norm")
            y = self.layer_norm(y + self.attention(y, x, layer + "encoder_attn.", heads, mask=keep),
                                layer + "encoder_attn_layer_norm")
            y = self.mlp(y, layer)
        return torch.matmul(y, self.p("model.shared.weight").T) + self.p("final_logits_bias")

    def embed(self, ids, stack):
        T = ids.shape[1]
        positions = self.p(stack + "embed_positions.weight")[POSITION_OFFSET:POSITION_OFFSET + T]
        return self.layer_norm(self.p("model.shared.weight")[ids] + positions, stack + "layernorm_embedding")

    def mlp(self, x, layer):
        hidden = TF.gelu(self.linear(x, layer + "fc1"))
        return self.layer_norm(x + self.linear(hidden, layer + "fc2"), layer + "final_layer_norm")

    def layer_norm(self, x, prefix):
        return TF.layer_norm(x, (x.shape[-1],), self.p(prefix + ".weight"), self.p(prefix + ".bias"), 1e-5)

    def linear(self, x, prefix):
        return torch.addmm(self.p(prefix + ".bias"), x.reshape(-1, x.shape[-1]), self.p(prefix + ".weight")).view(
            *x.shape[:-1], -1)

    def attention(self, queries_from, keys_from, prefix, n_head, mask=None, causal=False):
        B, T, C = queries_from.shape
        S = keys_from.shape[1]
        def heads(x, L):
            return x.view(B, L, n_head, C // n_head).transpose(1, 2)  # (B, H, L, D)

        q = heads(self.linear(queries_from, prefix + "q_proj"), T)
        k = heads(self.linear(keys_from, prefix + "k_proj"), S)
        v = heads(self.linear(keys_from, prefix + "v_proj"), S)
        y = TF.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        return self.linear(y.transpose(1, 2).reshape(B, T, C), prefix + "out_proj")
