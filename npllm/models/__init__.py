"""Models assembled from npllm.nn: the GPT-2 decoder and the BERT encoder."""

from npllm.models.bert import BERT, BERTConfig, BERTForMaskedLM
from npllm.models.gpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig", "BERT", "BERTConfig", "BERTForMaskedLM"]
