"""A sequence classifier: a pre-trained GPT read at its last token, and a new linear head.

A GPT's hidden state at position t has read every token up to t (attention
is causal), so the state at the *last* real token has read the whole text:
it is the one to classify from.  Texts of a batch are padded on the right,
and the padding comes after that token, so it changes nothing the head
reads.  The head is one Linear, C -> number of labels, without a bias, as
Hugging Face's ``GPT2ForSequenceClassification`` names it (``score``); the
GPT sits under ``transformer``, so the names are that model's.

    h = transformer.hidden_states(input_ids)          (B, T, C)
    logits = score(h[b, lengths[b] - 1])               (B, C) -> (B, labels)

Fine-tuning then trains everything, or only the last blocks and the head,
or LoRA adapters and the head (``npllm.training.finetune``).
"""

import numpy as np

from npllm.models.gpt import GPT
from npllm.nn import Linear, Module
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
