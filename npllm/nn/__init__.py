"""Layers: Module and Parameter, the basic layers, multi-head attention and its KV cache, the transformer blocks (pre-LN and post-LN)."""

from npllm.nn.module import Module, ModuleList, Parameter
from npllm.nn.layers import Dropout, Embedding, LayerNorm, Linear
from npllm.nn.attention import KVCache, KVCacheError, MultiHeadAttention, QKVSelfAttention
from npllm.nn.transformer import MLP, AddNorm, Block, Intermediate, PostLNAttention, PostLNBlock

__all__ = [
    "Module", "ModuleList", "Parameter", "Linear", "Embedding", "LayerNorm", "Dropout",
    "KVCache", "KVCacheError", "MultiHeadAttention", "QKVSelfAttention", "MLP", "Block",
    "AddNorm", "PostLNAttention", "Intermediate", "PostLNBlock",
]
