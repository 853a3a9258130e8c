"""LoRA: fine-tune a big model by training two thin matrices beside each frozen weight.

Fine-tuning changes a pre-trained weight W (in, out) by some dW.  Hu et al.
(2021) observed that the useful dW has low rank, so they learn it as a
product of two thin matrices and leave W frozen:

    y = x W + b + (alpha / r) dropout(x) A B        A (in, r), B (r, out), r << in, out

A starts random and B at zero, so A B = 0 and training starts from the base
model exactly.  Only A and B are trained: r (in + out) numbers per layer
instead of in x out (for GPT-2's 768 x 2304 attention projection at r = 8,
24,576 instead of 1.8 M), so the optimizer's moments shrink with them and an
adapter file holds kilobytes, not the model.  alpha / r keeps the update's
scale steady when r changes.  When training is done, ``merge`` adds
(alpha / r) A B into W once, and the model runs as fast as the base again;
``unmerge`` takes it out.

``LoRALinear`` keeps the base Linear's own Parameters under their own names
(``weight``, ``bias``) and adds ``lora_A`` and ``lora_B``, so a model with
adapters still loads its base checkpoint by name.  ``apply_lora`` freezes a
model and wraps the Linear layers whose names a pattern selects (default:
the attention and MLP projections of a transformer block);
``save_adapters`` / ``load_adapters`` write and read only A and B, with a
fingerprint of the base weights they were trained on, so adapters never
land on the wrong base; ``merge_lora`` folds them in and gives back plain
Linear layers.

The forward is one fused op, ``F.lora_linear`` (its backward derived in
``functional/projection.py``): for g = dL/dy and u = dropout(x) A,
    dB = (alpha / r) u^T g,   dA = (alpha / r) dropout(x)^T (g B^T),
and no gradient is computed for the frozen W and b.  Composed of separate
ops (three ``linear`` and an add, as this layer was written before), the
same layer kept two more (N, out) arrays for backward and took 1.2-1.4x the
time, forward and backward on one core (GPT small's (1024, 384) -> 1536 and
tiny's (2048, 128) -> 512 at rank 8, medians of alternating runs);
``functional.projection.lora_linear_composed`` is its tested reference.

Left out on purpose: adapters on embeddings, and several adapters at once.
"""

import re

import numpy as np

import npllm.functional as F
from npllm.errors import NpllmError, SettingError
from npllm.io.checksums import arrays_sha256
from npllm.io.safetensors import load_safetensors, safetensors_metadata, save_safetensors
from npllm.nn.layers import Dropout, Linear, uninitialised
from npllm.nn.module import Module, Parameter

DEFAULT_TARGETS = r"(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)$"  # a GPT block's four projections
BERT_TARGETS = r"(self\.query|self\.key|self\.value|output\.dense|intermediate\.dense)$"  # a BERT layer's six


class LoRALinear(Module):
    """A frozen Linear plus a trainable rank-``rank`` update: y = x W + b + (alpha / rank) dropout(x) A B."""

    def __init__(self, base: Linear, rank=8, alpha=16.0, dropout=0.0, rng=None):
        super().__init__()
        if not (isinstance(rank, int) and rank >= 1):
            raise SettingError(f"LoRA: `rank` must be a whole number of at least 1, got {rank!r}")
        if not alpha > 0:
            raise SettingError(f"LoRA: `alpha` must be positive, got {alpha}")
        rng = np.random.default_rng(rng)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias  # the base's own Parameters, under their own names
        self.weight.requires_grad = False
        if self.bias is not None:
            self.bias.requires_grad = False
        dtype = self.weight.dtype
        bound = 1.0 / np.sqrt(self.in_features)  # A: uniform in +-1/sqrt(in), as Hugging Face PEFT draws it
        self.lora_A = Parameter(rng.uniform(-bound, bound, (self.in_features, rank)).astype(dtype))
        self.lora_B = Parameter(np.zeros((rank, self.out_features), dtype=dtype))  # B = 0: A B = 0 at the start
        self.drop = Dropout(dropout, rng)
        self.rank, self.alpha, self.scale = rank, float(alpha), float(alpha) / rank
        self.merged = False

    def forward(self, x):
        if self.merged:
            return F.linear(x, self.weight, self.bias)
        dropped = self.drop(x)  # x itself when no dropout runs (p = 0, or evaluating)
        return F.lora_linear(x, self.weight, self.bias, self.lora_A, self.lora_B, self.scale,
                             None if dropped is x else dropped)

    def delta(self) -> np.ndarray:
        """(alpha / r) A B, the adapter's change to the weight, (in, out)."""
        return (self.lora_A.data @ self.lora_B.data) * np.asarray(self.scale, dtype=self.weight.dtype)

    def merge(self):
        """W += (alpha / r) A B: the model runs as fast as its base, with the adapter's effect."""
        if not self.merged:
            self.weight.data += self.delta()
            self.merged = True

    def unmerge(self):
        """W -= (alpha / r) A B: back to the base weight and the separate adapter."""
        if self.merged:
            self.weight.data -= self.delta()
            self.merged = False

    def merged_linear(self) -> Linear:
        """A plain Linear whose weight is W + (alpha / r) A B (this layer is merged for it), trainable again."""
        self.merge()
        with uninitialised():
            linear = Linear(self.in_features, self.out_features, bias=self.bias is not None, dtype=self.weight.dtype)
        linear.weight, linear.bias = self.weight, self.bias
        for param in (linear.weight, linear.bias):
            if param is not None:
                param.requires_grad = True
        return linear

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, rank={self.rank}, alpha={self.alpha:g}"


def apply_lora(model: Module, rank=8, alpha=16.0, dropout=0.0, targets=DEFAULT_TARGETS, seed=0) -> list[str]:
    """Freeze ``model`` and wrap every Linear whose dotted name matches ``targets`` (a regex) in a LoRALinear.

    Returns the wrapped names.  Afterwards only the adapters require a
    gradient, so an optimizer built on the model trains them alone.
    """
    linears = [name for name, module in model.named_modules() if isinstance(module, Linear)]
    chosen = [name for name in linears if re.search(targets, name)]
    if not chosen:
        raise SettingError(f"LoRA: `targets` {targets!r} matches no Linear layer; the model's are:"
                           f" {', '.join(linears) or 'none'}")
    model.requires_grad_(False)
    rng = np.random.default_rng(seed)
    for name in chosen:
        model.set_submodule(name, LoRALinear(model.get_submodule(name), rank, alpha, dropout, rng=rng.spawn(1)[0]))
    return chosen


def lora_layers(model: Module) -> dict[str, LoRALinear]:
    return {name: module for name, module in model.named_modules() if isinstance(module, LoRALinear)}


def merge_lora(model: Module) -> Module:
    """Merge every adapter into its base weight and put plain Linear layers back: the base's kind of model again.

    What a tuned model is used as afterwards (generation at the base's speed,
    an export, the start of another run).
    """
    for name, layer in lora_layers(model).items():
        model.set_submodule(name, layer.merged_linear())
    return model


def base_fingerprint(model: Module) -> str:
    """The SHA-256 of the base weights (every parameter but the adapters'), unmerged: what the adapters fit."""
    layers = lora_layers(model)
    if any(layer.merged for layer in layers.values()):
        raise NpllmError("LoRA: unmerge the adapters before taking the base's fingerprint")
    return arrays_sha256({name: param.data for name, param in model.named_parameters()
                          if not name.rsplit(".", 1)[-1].startswith("lora_")})


def save_adapters(model: Module, path):
    """Write only the adapters (A and B of every LoRALinear), with the base's fingerprint and the LoRA settings."""
    layers = lora_layers(model)
    if not layers:
        raise NpllmError("LoRA: this model has no adapters to save (apply_lora first)")
    tensors = {f"{name}.{part}": getattr(layer, part).data for name, layer in layers.items()
               for part in ("lora_A", "lora_B")}
    first = next(iter(layers.values()))
    save_safetensors(path, tensors, metadata={"base_sha256": base_fingerprint(model), "rank": str(first.rank),
                                              "alpha": str(first.alpha)})


def load_adapters(model: Module, path):
    """Copy the adapters saved in ``path`` into ``model``'s LoRALinear layers, if they were trained on this base."""
    saved_base = safetensors_metadata(path).get("base_sha256")
    if saved_base != base_fingerprint(model):
        raise NpllmError(f"{path}: these adapters were trained on another base model (its weights differ)")
    tensors = load_safetensors(path)
    layers = lora_layers(model)
    expected = {f"{name}.{part}" for name in layers for part in ("lora_A", "lora_B")}
    if set(tensors) != expected:
        missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
        raise NpllmError(f"{path}: the adapters do not fit this model's LoRA layers"
                         f" (missing {', '.join(missing) or 'none'}; unexpected {', '.join(unexpected) or 'none'})")
    for name, layer in layers.items():
        for part in ("lora_A", "lora_B"):
            target = getattr(layer, part)
            if tensors[f"{name}.{part}"].shape != target.shape:
                raise NpllmError(f"{path}: {name}.{part} has shape {tensors[f'{name}.{part}'].shape},"
                                 f" this model's {target.shape} (another rank?)")
            np.copyto(target.data, tensors[f"{name}.{part}"])


def apply_saved_adapters(model: Module, path) -> list[str]:
    """Wrap the layers the adapter file ``path`` names (with its rank and alpha) and load it; returns their names.

    The file must have been trained on this very base: its fingerprint is
    checked before the model is touched.
    """
    if safetensors_metadata(path).get("base_sha256") != base_fingerprint(model):
        raise NpllmError(f"{path}: these adapters were trained on another base model (its weights differ)")
    metadata, names = safetensors_metadata(path), sorted({key.rsplit(".", 1)[0] for key in load_safetensors(path)})
    wrapped = apply_lora(model, int(metadata["rank"]), float(metadata["alpha"]),
                         targets="^(" + "|".join(map(re.escape, names)) + ")$")
    load_adapters(model, path)
    return wrapped
