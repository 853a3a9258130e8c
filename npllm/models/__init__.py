"""Models assembled from npllm.nn: the GPT-2 decoder."""

from npllm.models.gpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig"]
