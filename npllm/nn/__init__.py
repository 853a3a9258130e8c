"""Layers: Module and Parameter, the basic layers, attention and its KV cache, the pre-LN and post-LN blocks, LoRA."""

from npllm.nn.module import Module, ModuleList, Parameter
from npllm.nn.layers import Dropout, Embedding, LayerNorm, Linear
from npllm.nn.attention import (KVCache, KVCacheError, MultiHeadAttention, ProjectedAttention, QKVSelfAttention,
                                recording_attention)
from npllm.nn.lora import LoRALinear, apply_lora, load_adapters, save_adapters
from npllm.nn.transformer import MLP, AddNorm, Block, Intermediate, PostLNAttention, PostLNBlock

__all__ = [
    "Module", "ModuleList", "Parameter", "Linear", "Embedding", "LayerNorm", "Dropout",
    "KVCache", "KVCacheError", "MultiHeadAttention", "QKVSelfAttention", "ProjectedAttention", "recording_attention",
    "MLP", "Block",
    "AddNorm", "PostLNAttention", "Intermediate", "PostLNBlock",
    "LoRALinear", "apply_lora", "save_adapters", "load_adapters",
]
