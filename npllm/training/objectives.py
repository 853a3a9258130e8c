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
counts its masked positions; an encoder–decoder learns both its stages
(denoising, then a task's pairs) with ``Seq2SeqLM``, which counts the real
target tokens.  The later stages are new classes here, not
branches in the loop: classification counts its labelled examples,
instruction tuning sets the prompt's targets to ``IGNORE_INDEX`` so they
count for nothing.  ``Distillation`` carries its teacher: each shard's thread
runs it on that shard; ``MaskedDistillation`` is its masked-LM twin for a BERT
student (the soft targets at the masked positions only, and DistilBERT's
optional cosine loss on the hidden states).
"""

import numpy as np

import npllm.functional as F
from npllm.functional import IGNORE_INDEX
from npllm.tensor import no_grad


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


class Distillation(Objective):
    """A student learns from a teacher's soft targets as well as from the text (Hinton et al. 2015; DistilBERT).

        loss = alpha * T^2 KL(softmax(teacher / T) || softmax(student / T))
               + (1 - alpha) * cross_entropy(student, targets)

    both means over the counted positions.  The teacher reads the same batch,
    in eval mode and without a graph (it is never trained); ``alpha = 0`` is
    plain next-token training, exactly (the KL term is then not computed).
    Batches are ``NextToken``'s.
    """

    unit = "tokens"

    def __init__(self, teacher, temperature=2.0, alpha=0.5, ignore_index=IGNORE_INDEX):
        self.teacher, self.temperature, self.alpha = teacher, temperature, alpha
        self.hard = NextToken(ignore_index)
        teacher.eval()

    def count(self, batch):
        return self.hard.count(batch)

    def loss(self, model, batch):
        if self.alpha == 0:
            return self.hard.loss(model, batch)
        logits = model(batch["input_ids"])  # (B, T, V)
        with no_grad():
            teacher_logits = self.teacher(batch["input_ids"])  # (B, T, V), a constant
        soft = F.kl_div(logits, teacher_logits, self.temperature, batch["targets"], self.hard.ignore_index)
        if self.alpha == 1:
            return soft
        hard = F.cross_entropy(logits, batch["targets"], ignore_index=self.hard.ignore_index)
        return self.alpha * soft + (1.0 - self.alpha) * hard


class Classification(Objective):
    """One label per text: cross-entropy of the label logits.  Batches hold ``input_ids``, ``lengths``, ``labels``.

    Every example counts once, whatever its length (``unit`` is examples).
    """

    unit = "examples"

    def count(self, batch):
        return len(batch["labels"])

    def loss(self, model, batch):
        return F.cross_entropy(model(batch["input_ids"], batch["lengths"]), batch["labels"])


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
    that followed A?), is ``MaskedLMWithNextSentence``, off by default:
    RoBERTa found that dropping it and filling every example with contiguous
    text trains as well or better.
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


class Seq2SeqLM(NextToken):
    """An encoder–decoder writes the target given the source, one token at a time (teacher forcing).

    Batches hold ``input_ids`` and ``attention_mask`` (B, S), the source;
    ``decoder_input_ids`` (B, T), the target shifted right behind the start
    token, its ``decoder_attention_mask``; and ``targets`` (B, T), the target
    with ``ignore_index`` on padding (``npllm.data.pairs.pair_batch``)::

        loss = mean over real target positions of -log p(targets[b, t] | source[b], targets[b, :t])

    Denoising pre-training (the source a corrupted text, the target the text)
    and fine-tuning on pairs are both this loss; ``count`` is the real target
    tokens (``NextToken``'s count), so shards and batches of different lengths are weighted by them.
    """

    def loss(self, model, batch):
        return F.cross_entropy(self.logits(model, batch), batch["targets"], ignore_index=self.ignore_index)

    @staticmethod
    def logits(model, batch):
        """(B, T, V): the decoder's scores for every target position."""
        return model(batch["input_ids"], batch["decoder_input_ids"], batch.get("attention_mask"),
                     batch.get("decoder_attention_mask"))
class MaskedLMWithNextSentence(Objective):
    """BERT's two pre-training objectives together, for a ``BERTForPreTraining`` (Devlin et al. 2018).

        loss = mean over chosen positions of -log p(targets[b, t] | input_ids[b])
               + mean over pairs of -log p(next_sentence_labels[b] | input_ids[b])

    the sum Hugging Face's ``BertForPreTraining`` computes.  Batches are
    ``npllm.data.sentence_pairs``' ([CLS] A [SEP] B [SEP] with token types,
    and a label per pair: 0 when B follows A, 1 when it is random).  Every
    row is full and chooses the same number of positions, so weighting the
    shards' means by ``count`` (the chosen positions) weighs the pairs' mean
    rightly too.  Off by default, since RoBERTa (Liu et al. 2019) found that
    dropping the second term and packing rows with contiguous text trains as
    well or better; it is here for BERT's own recipe, and for checkpoints
    that carry its head.
    """

    unit = "masked"

    def __init__(self, ignore_index=IGNORE_INDEX):
        self.masked = MaskedLM(ignore_index)

    def count(self, batch):
        return self.masked.count(batch)

    def loss(self, model, batch):
        positions, targets = self.masked.chosen(batch)
        hidden = model.bert(batch["input_ids"], batch.get("attention_mask"), batch["token_type_ids"])  # (B, T, C)
        token_loss = F.cross_entropy(model.predict(hidden, positions), targets)  # (N, V) logits
        return token_loss + F.cross_entropy(model.next_sentence_logits(hidden), batch["next_sentence_labels"])


class MaskedDistillation(Objective):
    """A BERT student learns from a BERT teacher at the masked positions (DistilBERT, Sanh et al. 2019).

        loss = alpha * T^2 KL(softmax(teacher / T) || softmax(student / T))      at the chosen positions
               + (1 - alpha) * cross_entropy(student, targets)                    at the chosen positions
               + cosine_weight * mean over real tokens of 1 - cos(h_student, h_teacher)

    Batches are ``MaskedLM``'s: both models read the same masked ids, and the
    soft targets are the teacher's guesses where a token is hidden (elsewhere
    the answer is in the input).  The cosine term pulls the student's last
    hidden states towards the teacher's in direction (DistilBERT weighs it
    1 against 5 for the soft loss and 2 for the hard one); it needs the two
    widths equal.  ``alpha = 0`` with no cosine term is ``MaskedLM``, exactly
    (the teacher is then not run).  Each row of a batch holds the same number
    of chosen positions and of real tokens, so the shards' means weighted by
    ``count`` are the batch's means, for the cosine term too.
    """

    unit = "masked"

    def __init__(self, teacher, temperature=2.0, alpha=0.5, cosine_weight=0.0, ignore_index=IGNORE_INDEX):
        self.teacher, self.temperature, self.alpha, self.cosine_weight = teacher, temperature, alpha, cosine_weight
        self.hard = MaskedLM(ignore_index)
        teacher.eval()

    def count(self, batch):
        return self.hard.count(batch)

    def loss(self, model, batch):
        if self.alpha == 0 and self.cosine_weight == 0:
            return self.hard.loss(model, batch)
        positions, targets = self.hard.chosen(batch)
        inputs = (batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))
        hidden = model.bert(*inputs)  # (B, T, C)
        logits = model.predict(hidden, positions)  # (N, V)
        with no_grad():
            teacher_hidden = self.teacher.bert(*inputs)
            teacher_logits = self.teacher.predict(teacher_hidden, positions)  # (N, V), a constant
        terms = []
        if self.alpha < 1:
            terms.append(F.cross_entropy(logits, targets) * (1.0 - self.alpha))
        if self.alpha > 0:
            terms.append(F.kl_div(logits, teacher_logits, self.temperature) * self.alpha)
        if self.cosine_weight > 0:
            real = batch.get("attention_mask")  # (B, T), or None: every token is real
            terms.append(F.cosine_loss(hidden, teacher_hidden, real) * self.cosine_weight)
        return sum(terms[1:], terms[0])
