"""Models assembled from npllm.nn: the GPT-2 decoder, and a sequence classifier on top of it."""

from npllm.models.classifier import SequenceClassifier
from npllm.models.gpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig", "SequenceClassifier"]
