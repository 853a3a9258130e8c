"""Models assembled from npllm.nn: the GPT-2 decoder, the BERT encoder, the BART encoder–decoder, and a sequence classifier on a GPT."""

from npllm.models.bart import BART, BARTConfig, BARTForConditionalGeneration
from npllm.models.bert import BERT, BERTConfig, BERTForMaskedLM
from npllm.models.classifier import SequenceClassifier
from npllm.models.gpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig", "BERT", "BERTConfig", "BERTForMaskedLM", "BART", "BARTConfig",
           "BARTForConditionalGeneration", "SequenceClassifier"]
