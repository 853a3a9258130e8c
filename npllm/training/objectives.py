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

Pre-training a GPT is ``NextToken``.  The later stages are new classes here,
not branches in the loop: masked-LM counts its masked positions,
classification its labelled examples, instruction tuning sets the prompt's
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
