"""Layers: Module and Parameter, the basic layers, multi-head attention, the transformer block; data parallelism."""

from npllm.nn.module import Module, ModuleList, Parameter
from npllm.nn.layers import Dropout, Embedding, LayerNorm, Linear
from npllm.nn.attention import KVCache, MultiHeadAttention
from npllm.nn.transformer import MLP, Block
from npllm.nn.data_parallel import DataParallel

__all__ = [
    "Module", "ModuleList", "Parameter", "Linear", "Embedding", "LayerNorm", "Dropout",
    "KVCache", "MultiHeadAttention", "MLP", "Block", "DataParallel",
]
