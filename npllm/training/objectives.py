"""Objectives: what a stage of training learns, written as a loss over a batch.

The training loop (``loop.py``) knows nothing of GPTs, next tokens or masks.
It hands each batch to an *objective*, which knows two things:

    count(batch) -> int            how many targets the batch counts: the weight of its mean loss
    loss(model, batch) -> Tensor   the mean loss over those targets, a scalar in the graph

A batch is a dict of arrays whose first axis is the example (``input_ids``,
``targets``, an attention mask, a teacher's logits, ...), so the
data-parallel split (``npllm.runtime.data_parallel``) can cut any batch into
shards and weight each shard's mean by its count: the batch's loss is then

    sum_k (count_k / count) loss_k,

exactly the mean over all its targets, however it was cut.  ``unit`` names
what ``count`` counts, for the loop's rate (``tokens``/s).

Pre-training a GPT is ``NextToken``; pre-training BERT is ``MaskedLM``, which
counts its masked positions.  The later stages are new classes here, not
branches in the loop: classification counts its labelled examples, instruction tuning sets the prompt's
targets to ``IGNORE_INDEX`` so they count for nothing, distillation carries a
teacher's logits in the batch or the teacher in the objective.
"""

import numpy as np

import npllm.functional as F
from npllm.functional import IGNORE_INDEX


class Objective:
    """Base class: a subclass defines ``count`` and ``loss`` (and ``unit``, what it counts)."""

    unit = "targets"

    def count(self, batch: dict) -> int:
        raise NotImplementedError

    def loss(self, model, batch: dict):
        raise NotImplementedError


class NextToken(Objective):
    """Language modelling: predict every next token.  Batches hold ``input_ids`` and ``targets``, both (B, T).

        loss = mean over counted positions of -log p(targets[b, t] | input_ids[b, :t+1])

    A target equal to ``ignore_index`` (padding, a prompt) is not counted.
    """

    unit = "tokens"

    def __init__(self, ignore_index=IGNORE_INDEX):
        self.ignore_index = ignore_index

    def count(self, batch):
        return int(np.count_nonzero(batch["targets"] != self.ignore_index))

    def loss(self, model, batch):
        logits = model(batch["input_ids"])  # (B, T, V)
        return F.cross_entropy(logits, batch["targets"], ignore_index=self.ignore_index)


class MaskedLM(Objective):
    """Masked language modelling (BERT): predict the original token at each chosen position.

    Batches hold ``input_ids`` (with the chosen positions hidden: mostly
    [MASK], see ``npllm.data.masking``) and ``targets``, the original ids
    there and ``ignore_index`` everywhere else, both (B, T); optionally
    ``attention_mask`` and ``token_type_ids``.

        loss = mean over chosen positions of -log p(targets[b, t] | all of input_ids[b])

    Only the chosen positions (15%) go through the model's head
    (``BERTForMaskedLM.masked_logits``): the (C, V) product of the other 85%
    would be thrown away.  ``count`` is the number of chosen positions.

    Next-sentence prediction, BERT's second objective (was text B the text
    that followed A?), is left out: RoBERTa found that dropping it and
    filling every example with contiguous text trains as well or better.
    """

    unit = "masked"

    def __init__(self, ignore_index=IGNORE_INDEX):
        self.ignore_index = ignore_index

    def count(self, batch):
        return int(np.count_nonzero(batch["targets"] != self.ignore_index))

    def loss(self, model, batch):
        positions, targets = self.chosen(batch)
        logits = model.masked_logits(batch["input_ids"], positions, batch.get("attention_mask"),
                                     batch.get("token_type_ids"))  # (N, V)
        return F.cross_entropy(logits, targets)

    def chosen(self, batch):
        """The chosen positions (flat indices into B * T) and their targets."""
        flat = batch["targets"].reshape(-1)
        positions = np.flatnonzero(flat != self.ignore_index)
        return positions, flat[positions]
