"""Layers: Module and Parameter, the basic layers, multi-head attention and its KV cache, the transformer block."""

from npllm.nn.module import Module, ModuleList, Parameter
from npllm.nn.layers import Dropout, Embedding, LayerNorm, Linear
from npllm.nn.attention import KVCache, KVCacheError, MultiHeadAttention
from npllm.nn.transformer import MLP, Block

__all__ = [
    "Module", "ModuleList", "Parameter", "Linear", "Embedding", "LayerNorm", "Dropout",
    "KVCache", "KVCacheError", "MultiHeadAttention", "MLP", "Block",
]
