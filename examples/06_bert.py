"""Chapter 6. The BERT encoder and masked-LM pre-training: reading both ways, guessing what is hidden.

Run:  python examples/06_bert.py                  (docs corpus, a few minutes on 2 cores)
      python examples/06_bert.py --steps 1000 --data stdlib

Source: npllm/models/bert.py (Hugging Face's BertModel layout), npllm/nn/transformer.py
(the post-LN block), npllm/data/masking.py (BERT's masking rule), npllm/training/pretrain_bert.py
and objectives.py (MaskedLM), npllm/generation/encoder.py (filling [MASK]s).

1. Masked LM: 15% of the positions are chosen; of those, 80% become [MASK], 10% a random
   token, 10% stay as they are.  The loss is measured on the chosen positions only.
2. Pre-training through the same loop as the GPT (``npllm train --model bert``): the
   held-out masked-token loss and accuracy against the baselines.
3. Filling masks: the model's best guesses for a few hidden tokens.
4. A GPT reads left to right; an encoder's attention has no causal mask: every position
   reads every other (only padding is hidden).  Its attention weights show it.
5. The training curves (training.png) and the last layer's attention (attention.png), with matplotlib.

A few hundred steps teach it little (its guesses are mostly whitespace and common words):
a BERT learns only from the 15% of positions it hides, so it needs many more steps than a
GPT of its size (the README's 2000-step ``npllm train --model bert`` reaches 12% accuracy).
"""

import argparse

import numpy as np

from npllm.data.masking import IGNORE_INDEX, mask_tokens
from npllm.generation.encoder import bert_input_ids, fill_masks, filled_text
from npllm.plot import picture
from npllm.plot.attention import attention_weights, plot_attention, token_labels
from npllm.plot.runs import plot_runs, read_metrics
from npllm.training.pretrain_bert import BERTTrainConfig, load_model, train

PROMPTS = ["The [MASK] statement is used to define a function.", "A list is a [MASK] sequence of items.",
           "Return the [MASK] of the string."]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="docs", help="docs, stdlib, shakespeare, or a text file or folder")
    parser.add_argument("--steps", type=int, default=400, help="pre-training steps")
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-embd", type=int, default=64)
    parser.add_argument("--context-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32, help="windows per step (and 2x as many held out)")
    parser.add_argument("--out", default="runs/textbook/06-bert", help="folder for the run and the pictures")
    args = parser.parse_args(argv)

    config = BERTTrainConfig(data=args.data, vocab_size=args.vocab_size, n_layer=args.n_layer, n_head=4,
                             n_embd=args.n_embd, context_length=args.context_length, batch_size=args.batch_size,
                             max_steps=args.steps, warmup_steps=min(100, args.steps // 4 or 1), lr=2e-3, min_lr=2e-4,
                             eval_interval=max(args.steps // 4, 1), eval_windows=2 * args.batch_size, out_dir=f"{args.out}/run",
                             hidden_act="gelu_new")
    rule = config.masking_rule(config.vocab_size)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, rule.random_ids, size=(200, 100))
    masked, targets = mask_tokens(ids, np.ones(ids.shape, dtype=bool), rule, rng)
    chosen = targets != IGNORE_INDEX
    print(f"1. masking 200 windows of 100 tokens: {chosen.mean():.1%} chosen; of those"
          f" {(masked[chosen] == rule.mask_id).mean():.1%} [MASK],"
          f" {((masked[chosen] != rule.mask_id) & (masked[chosen] != ids[chosen])).mean():.1%} changed to another"
          f" token, {(masked[chosen] == ids[chosen]).mean():.1%} kept (a random token may draw its own id)")

    print(f"2. pre-training a {config.n_layer}-block, {config.n_embd}-wide BERT for {config.max_steps} steps"
          f" on {config.data} ...")
    run = train(config, progress=False, log=lambda line: print(f"   {line}"))
    final = [record for record in read_metrics(run.out_dir) if "val_loss" in record][-1]
    print(f"   held-out masked-token loss {final['val_loss']:.3f}, accuracy {final['val_accuracy']:.1%}")

    model, tokenizer = load_model(run.out_dir)
    for prompt in PROMPTS:
        prompt_ids = bert_input_ids(tokenizer, prompt)
        guesses = fill_masks(model, prompt_ids, rule.mask_id, top_k=3)
        print(f"3. {filled_text(tokenizer, prompt_ids, guesses, rule.mask_id)!r}: "
              + ", ".join(f"{tokenizer.decode([i])!r} {p:.2f}" for i, p in guesses[0]))

    sentence = bert_input_ids(tokenizer, "The return statement leaves the function.")
    weights = attention_weights(model, sentence)
    last = list(weights)[-1]
    ahead = np.triu(weights[last], k=1).sum(axis=-1).mean()
    print(f"4. bidirectional: in {last}, a token gives {ahead:.0%} of its attention to the tokens after it"
          " (a GPT: 0%)")
    picture(f"{args.out}/training.png", plot_runs, [run.out_dir], labels=["BERT, masked LM"])
    picture(f"{args.out}/attention.png", plot_attention, {last: weights[last]}, token_labels(tokenizer, sentence))
    return final


if __name__ == "__main__":
    main()
