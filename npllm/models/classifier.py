"""Sequence classifiers: a pre-trained GPT read at its last token, or a BERT at its pooled [CLS]; a new linear head.

A GPT's hidden state at position t has read every token up to t (attention
is causal), so the state at the *last* real token has read the whole text:
it is the one to classify from.  Texts of a batch are padded on the right,
and the padding comes after that token, so it changes nothing the head
reads.  The head is one Linear, C -> number of labels, without a bias, as
Hugging Face's ``GPT2ForSequenceClassification`` names it (``score``); the
GPT sits under ``transformer``, so the names are that model's.

    h = transformer.hidden_states(input_ids)          (B, T, C)
    logits = score(h[b, lengths[b] - 1])               (B, C) -> (B, labels)

An encoder reads the whole text at every position, so BERT classifies from
its first: the [CLS] token, through the pooler (a dense layer and tanh,
trained in BERT's pre-training, fresh on a masked-LM-only checkpoint), then
dropout and a Linear with a bias, as Hugging Face's
``BertForSequenceClassification`` names them (``bert``, ``classifier``).
Padding is hidden from every position by the attention mask built from the
lengths, so it changes nothing either:

    h = bert(input_ids, attention_mask = positions < lengths)      (B, T, C)
    logits = classifier(dropout(tanh(pooler.dense(h[:, 0]))))      (B, C) -> (B, labels)

Both take ``(input_ids, lengths)``, so the batches and the objective are
the same.  Fine-tuning then trains everything, or only the last blocks and
the head, or LoRA adapters and the head (``npllm.training.finetune``).
"""

import numpy as np

from npllm.models.bert import BERT
from npllm.models.gpt import GPT
from npllm.nn import Dropout, Linear, Module
from npllm.tensor import as_array


class SequenceClassifier(Module):
    """``model(input_ids, lengths)`` gives one row of label logits per text: (B, labels)."""

    def __init__(self, transformer: GPT, n_labels: int, seed=0):
        super().__init__()
        self.transformer = transformer
        C = transformer.config.n_embd
        self.score = Linear(C, n_labels, bias=False, dtype=np.dtype(transformer.config.dtype),
                            rng=np.random.default_rng(seed))
        self.n_labels = n_labels

    def forward(self, input_ids, lengths):
        lengths = as_array(lengths)
        hidden = self.transformer.hidden_states(input_ids)  # (B, T, C)
        if lengths.shape != (hidden.shape[0],) or lengths.min() < 1 or lengths.max() > hidden.shape[1]:
            raise ValueError(f"SequenceClassifier: lengths must be (B,) = ({hidden.shape[0]},) values in"
                             f" 1..{hidden.shape[1]}, got {lengths!r}")
        last = hidden[np.arange(len(lengths)), lengths - 1]  # (B, C): each text's last real token
        return self.score(last)  # (B, labels)

    def extra_repr(self):
        return f"labels={self.n_labels}"


class BERTSequenceClassifier(Module):
    """``model(input_ids, lengths)``: label logits (B, labels) from BERT's pooled [CLS] (``BertForSequenceClassification``)."""

    def __init__(self, bert: BERT, n_labels: int, seed=0):
        super().__init__()
        if bert.pooler is None:
            raise ValueError("BERTSequenceClassifier: the BERT needs its pooler (build it with pooler=True)")
        self.bert = bert
        rng = np.random.default_rng(seed)
        self.dropout = Dropout(bert.config.dropout, rng)
        self.classifier = Linear(bert.config.n_embd, n_labels, dtype=np.dtype(bert.config.dtype), rng=rng)
        self.n_labels = n_labels

    def forward(self, input_ids, lengths):
        input_ids, lengths = as_array(input_ids), as_array(lengths)
        B, T = input_ids.shape
        if lengths.shape != (B,) or lengths.min() < 1 or lengths.max() > T:
            raise ValueError(f"BERTSequenceClassifier: lengths must be (B,) = ({B},) values in 1..{T}, got {lengths!r}")
        attention_mask = np.arange(T)[None, :] < lengths[:, None]  # (B, T): the real tokens
        pooled = self.bert.pool(self.bert(input_ids, attention_mask))  # (B, C)
        return self.classifier(self.dropout(pooled))  # (B, labels)

    def extra_repr(self):
        return f"labels={self.n_labels}"
