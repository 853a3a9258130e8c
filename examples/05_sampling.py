"""Chapter 5. Sampling and the KV cache: from the model's next-token distribution to text, fast.

Run:  python examples/05_sampling.py                               (pre-trains a small GPT first: ~2 minutes)
      python examples/05_sampling.py --checkpoint runs/gpt --prompt "def "

Source: npllm/generation/sampling.py (greedy, temperature, top-k, top-p),
npllm/generation/decoding.py (the token loop and its KV cache), npllm/nn/attention.py (KVCache).

1. A trained GPT (given, or a small one pre-trained here with npllm's own recipe).
2. After a prompt, the model gives a probability for every next token.
3. Temperature divides the logits: below 1 the distribution sharpens, above 1 it
   flattens (entropy in nats, and the top token's probability).
4. Top-k keeps the k likeliest tokens; top-p the fewest whose probabilities reach p.
5. Samples: greedy (always the top token: repetitive), then temperature, top-k, top-p.
6. The KV cache: each new token attends to keys and values kept from earlier steps,
   instead of recomputing the whole context: the same tokens, much faster.
"""

import argparse
import time

import numpy as np

from _chapters import add_checkpoint_flags, small_gpt
from npllm import no_grad
from npllm.generation import filter_logits, generate_tokens
from npllm.generation.sampling import softmax_1d
from npllm.training.pretrain import END_OF_TEXT, load_model


def entropy(probs) -> float:
    kept = probs[probs > 0]
    return float(-(kept * np.log(kept)).sum())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_checkpoint_flags(parser)
    parser.add_argument("--prompt", default="The ", help="the text to continue")
    parser.add_argument("--new-tokens", type=int, default=40, help="tokens per sample")
    parser.add_argument("--cache-tokens", type=int, default=None,
                        help="tokens generated to time the KV cache (default: as many as the context has room for)")
    parser.add_argument("--out", default="runs/textbook/05-sampling", help="folder for the small GPT")
    args = parser.parse_args(argv)

    run = small_gpt(args, args.out)
    model, tokenizer = load_model(run)
    print(f"1. the GPT of {run}: {model.num_parameters():,} parameters, context {model.config.context_length}")

    prompt = tokenizer.encode(args.prompt, allowed_special="all")
    model.eval()
    with no_grad():
        logits = model(np.array([prompt])).data[0, -1].astype(np.float64)  # (V,): the next token's scores
    probs = softmax_1d(logits)
    best = np.argsort(-probs)[:5]
    print(f"2. after {args.prompt!r}, the likeliest next tokens: "
          + ", ".join(f"{tokenizer.decode([i])!r} {probs[i]:.3f}" for i in best))

    for temperature in (0.5, 1.0, 2.0):
        tempered = softmax_1d(logits / temperature)
        print(f"3. temperature {temperature}: entropy {entropy(tempered):.2f} nats,"
              f" top token {tempered.max():.3f} (uniform over {len(probs)}: entropy {np.log(len(probs)):.2f})")
    for top_k, top_p in ((10, None), (None, 0.5), (None, 0.9)):
        kept = np.isfinite(filter_logits(logits, top_k=top_k, top_p=top_p)).sum()
        print(f"4. {'top-k ' + str(top_k) if top_k else 'top-p ' + str(top_p)}: {kept} tokens left to choose from")

    stop = tokenizer.special_tokens.get(END_OF_TEXT)
    for name, options in (("greedy", dict(temperature=0)), ("temperature 0.8", dict(temperature=0.8)),
                          ("top-k 20", dict(temperature=1.0, top_k=20)), ("top-p 0.9", dict(temperature=1.0, top_p=0.9))):
        tokens = list(generate_tokens(model, prompt, args.new_tokens, seed=0, stop_token=stop, **options))
        print(f"5. {name:<16}{tokenizer.decode(prompt + tokens)!r}")

    # Past the context the window slides, every position shifts and the cache is rebuilt each step: time within it.
    new = args.cache_tokens or model.config.context_length - len(prompt)
    timings = {}
    for use_cache in (True, False):
        started = time.perf_counter()
        tokens = list(generate_tokens(model, prompt, new, temperature=0, use_cache=use_cache))
        timings[use_cache] = (time.perf_counter() - started, tokens)
    (cached, with_cache), (uncached, without) = timings[True], timings[False]
    print(f"6. {new} greedy tokens: {new / cached:,.0f} tokens/s with the KV cache, {new / uncached:,.0f} without"
          f" ({uncached / cached:.1f}x); the same tokens: {with_cache == without}")
    return {"probs": probs, "same_tokens": with_cache == without}


if __name__ == "__main__":
    main()
