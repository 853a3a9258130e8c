"""Models assembled from npllm.nn: the GPT-2 decoder, the BERT encoder, and sequence classifiers on either."""

from npllm.models.bert import BERT, BERTConfig, BERTForMaskedLM
from npllm.models.classifier import BERTSequenceClassifier, SequenceClassifier
from npllm.models.gpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig", "BERT", "BERTConfig", "BERTForMaskedLM", "SequenceClassifier", "BERTSequenceClassifier"]
