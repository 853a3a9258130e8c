"""Models assembled from npllm.nn: the GPT-2 decoder, the BERT encoder, and a sequence classifier on a GPT."""

from npllm.models.bert import BERT, BERTConfig, BERTForMaskedLM, BERTForPreTraining
from npllm.models.classifier import SequenceClassifier
from npllm.models.gpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig", "BERT", "BERTConfig", "BERTForMaskedLM", "BERTForPreTraining", "SequenceClassifier"]
