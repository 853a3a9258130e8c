"""Models assembled from npllm.nn: the GPT-2 decoder, the BERT encoder, the BART encoder–decoder, and
sequence classifiers on a GPT or a BERT."""

from npllm.models.bart import BART, BARTConfig, BARTForConditionalGeneration
from npllm.models.bert import BERT, BERTConfig, BERTForMaskedLM, BERTForPreTraining
from npllm.models.classifier import BERTSequenceClassifier, SequenceClassifier
from npllm.models.gpt import GPT, GPTConfig

__all__ = ["GPT", "GPTConfig", "BERT", "BERTConfig", "BERTForMaskedLM", "BERTForPreTraining", "BART", "BARTConfig",
           "BARTForConditionalGeneration", "SequenceClassifier", "BERTSequenceClassifier"]
