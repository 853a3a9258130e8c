"""Layers: Module and Parameter, the basic layers, multi-head attention and its KV cache, the transformer block, LoRA."""

from npllm.nn.module import Module, ModuleList, Parameter
from npllm.nn.layers import Dropout, Embedding, LayerNorm, Linear
from npllm.nn.attention import KVCache, KVCacheError, MultiHeadAttention
from npllm.nn.lora import LoRALinear, apply_lora, load_adapters, save_adapters
from npllm.nn.transformer import MLP, Block

__all__ = [
    "Module", "ModuleList", "Parameter", "Linear", "Embedding", "LayerNorm", "Dropout",
    "KVCache", "KVCacheError", "MultiHeadAttention", "MLP", "Block",
    "LoRALinear", "apply_lora", "save_adapters", "load_adapters",
]
