"""Training: one loop for every stage, the objectives it can learn, checkpoints, and the recipes.

- ``loop``: steps, accumulation, clipping, the schedule, evaluation, metrics.jsonl,
  checkpoints, Ctrl-C, the NaN stop and bit-exact resume, for any model and objective;
- ``objectives``: what a stage learns, as a mean loss over a batch and the count it weighs;
- ``checkpoint``: run folders swapped in whole;
- ``pretrain``: the recipe that pre-trains a GPT on a corpus (``npllm train``), and
  ``load_model``, which reads back the model and tokenizer it saved.

A new stage is a new recipe beside ``pretrain`` and, if it learns something
new, a new objective: never a branch in the loop.
"""
