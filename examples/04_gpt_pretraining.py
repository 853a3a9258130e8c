"""Chapter 4. The GPT and pre-training, top to bottom: the path of ``npllm train``, laid open.

Run:  python examples/04_gpt_pretraining.py              (docs corpus, a few minutes on 2 cores)
      python examples/04_gpt_pretraining.py --data my_notes.txt --steps 200

Source: npllm/models/gpt.py, npllm/nn/transformer.py, npllm/optim/, npllm/training/pretrain.py
and loop.py (the same steps, with checkpoints, resume and metrics.jsonl around them).

1. Load a corpus: Python's own reference prose, or your text file or folder.
2. Train a byte-level BPE tokenizer on it, ending with an <|endoftext|> token.
3. Encode the corpus once into token ids (cached) and hold out the tail for validation.
4. Build a GPT: token + position embeddings, transformer blocks, a tied output layer.
5. AdamW with warm-up and cosine decay; clip the gradient; watch the validation loss
   fall below the unigram baseline (a model that ignores context).
6. Write a sample, one token at a time, with the KV cache.
7. Pictures (training.png, with matplotlib): the loss against steps and tokens seen, the
   learning-rate schedule (warm-up, then cosine), and the gradient norm before clipping
   (large and jumpy at first, then settling: why the gradient is clipped).

npllm.training adds what a real run needs on top: checkpoints, resume, metrics.jsonl,
Ctrl-C handling, gradient accumulation, a progress bar, and data-parallel steps
(npllm.runtime.data_parallel: one thread per core). Everything else is here.
"""

import argparse
import time

import numpy as np

import npllm.functional as F
from npllm import no_grad
from npllm.data.batches import RandomWindows, evaluation_batches
from npllm.data.sources import load_corpus
from npllm.data.tokens import load_or_encode, split_tokens
from npllm.generation import generate_tokens
from npllm.models import GPT, GPTConfig
from npllm.optim import AdamW, WarmupCosineLR, clip_grad_norm, configure_param_groups, set_lr
from npllm.plot import picture
from npllm.plot.runs import plot_metrics
from npllm.tokenizer import BPETokenizer
from npllm.training.pretrain import unigram_loss

END_OF_TEXT = "<|endoftext|>"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="docs", help="docs, stdlib, shakespeare, or a text file or folder")
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=64)
    parser.add_argument("--context-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--eval-interval", type=int, default=100)
    parser.add_argument("--sample-tokens", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/textbook/04-gpt", help="folder for the chapter's pictures")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    return args


def validation_loss(model, tokens, context_length, batch_size, max_windows=32):
    """Mean cross-entropy over a fixed sweep of validation windows (dropout off, no graph)."""
    model.eval()
    losses, windows = [], []
    with no_grad():
        for batch in evaluation_batches(tokens, context_length, batch_size, max_windows):
            losses.append(F.cross_entropy(model(batch["input_ids"]), batch["targets"]).item())
            windows.append(len(batch["input_ids"]))  # the last batch may be smaller: weight each by its windows
    model.train()
    return float(np.average(losses, weights=windows))


def main(argv=None):
    args = parse_args(argv)

    # 1. The corpus: one long string.
    corpus = load_corpus(args.data)
    print(f"1. corpus: {corpus.description}, {len(corpus.text):,} characters")

    # 2. The tokenizer: 256 byte tokens, then merges of the most frequent pairs, then <|endoftext|>.
    started = time.perf_counter()
    tokenizer = BPETokenizer.train(corpus.text, vocab_size=args.vocab_size,
                                   special_tokens={END_OF_TEXT: args.vocab_size - 1})
    print(f"2. tokenizer: {tokenizer.vocab_size} tokens in {time.perf_counter() - started:.1f} s;"
          f" 'the model' -> {tokenizer.encode('the model')}")

    # 3. Token ids, split: the first 90% to learn from, the last 10% to measure on.
    tokens = load_or_encode(corpus.text, tokenizer)
    train_tokens, validation_tokens = split_tokens(tokens, 0.1)
    baseline = unigram_loss(train_tokens, validation_tokens, tokenizer.vocab_size)
    print(f"3. tokens: {len(train_tokens):,} train, {len(validation_tokens):,} validation;"
          f" {len(corpus.text) / len(tokens):.2f} characters per token; unigram baseline loss {baseline:.3f}")

    # 4. The model. Untrained, it guesses uniformly: loss ln(vocab_size).
    config = GPTConfig(vocab_size=tokenizer.vocab_size, context_length=args.context_length,
                       n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd)
    model = GPT(config, seed=args.seed)
    print(f"4. model: {model.num_parameters():,} parameters; a uniform guess scores ln(V) = "
          f"{np.log(config.vocab_size):.3f}")

    # 5. Training: random windows in, next-token cross-entropy out.
    optimizer = AdamW(configure_param_groups(model, weight_decay=0.1), lr=args.lr, betas=(0.9, 0.95))
    schedule = WarmupCosineLR(args.lr, min(50, args.steps), args.steps, args.lr / 10)
    batches = RandomWindows(train_tokens, args.context_length, args.batch_size, seed=args.seed)
    records = []  # one per step, as the training loop writes metrics.jsonl
    for step in range(args.steps):
        set_lr(optimizer, schedule(step))
        batch = batches.next_batch()                        # input_ids, targets: (B, T) each, shifted by one
        loss = F.cross_entropy(model(batch["input_ids"]), batch["targets"])  # model(...): (B, T, V) logits
        optimizer.zero_grad()
        loss.backward()
        grad_norm = clip_grad_norm(model.parameters(), 1.0)  # the norm before clipping
        optimizer.step()
        records.append({"step": step + 1, "train_loss": loss.item(), "lr": schedule(step), "grad_norm": grad_norm,
                        "tokens": batch["targets"].size})
        if (step + 1) % args.eval_interval == 0 or step + 1 == args.steps:
            val = records[-1]["val_loss"] = validation_loss(model, validation_tokens, args.context_length,
                                                             args.batch_size)
            print(f"5. step {step + 1:5d}  train loss {loss.item():.3f}  validation loss {val:.3f}"
                  f"  (unigram {baseline:.3f})  gradient norm {grad_norm:.2f}")

    # 6. A sample: the model continues a prompt, one token at a time.
    prompt = tokenizer.encode("The ")
    new_tokens = generate_tokens(model, prompt, args.sample_tokens, temperature=0.8, top_k=50, seed=args.seed,
                                 stop_token=tokenizer.special_tokens[END_OF_TEXT])
    print("6. sample:\n" + tokenizer.decode(prompt + list(new_tokens)))

    norms = [record["grad_norm"] for record in records]
    tenth = max(len(norms) // 10, 1)
    print(f"7. gradient norm: median {np.median(norms[:tenth]):.2f} over the first tenth of the steps,"
          f" {np.median(norms[-tenth:]):.2f} over the last; clipped to 1.0 on {np.mean(np.array(norms) > 1):.0%} of"
          f" the steps; learning rate {records[0]['lr']:.1e} -> {max(r['lr'] for r in records):.1e}"
          f" -> {records[-1]['lr']:.1e}")
    picture(f"{args.out}/training.png", plot_metrics, {"04_gpt_pretraining": records})
    return val, baseline


if __name__ == "__main__":
    main()
