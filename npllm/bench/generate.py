"""``npllm bench generate``: tokens per second with and without the KV cache.

Without a cache, every new token re-runs the model over the whole context
(cost grows with the square of the text's length); with it, each new token
is one position through the model.  Both paths write the same tokens, so the
ratio of their speeds is the cache's whole effect.  The model has random
weights: speed does not depend on what the weights say.  On a shared
machine, ``--repeats N`` alternates the two paths N times and reports the
median of each.
"""

import argparse
import json

import numpy as np

from npllm.bench import at_least_one, description
from npllm.bench.train import PRESETS
from npllm.bench.timing import timed
from npllm.generation import generate_tokens
from npllm.models import GPT, GPTConfig
from npllm.runtime.memory import keep_freed_memory


def tokens_per_second(model, prompt, new_tokens, use_cache) -> float:
    produced, elapsed = timed(lambda: sum(1 for _ in generate_tokens(model, prompt, new_tokens, temperature=0,
                                                                    use_cache=use_cache)))
    return produced / elapsed


def main(argv=None):
    parser = argparse.ArgumentParser(prog="npllm bench generate", description=description(__doc__))
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small", help="model shape (default small)")
    parser.add_argument("--new-tokens", type=at_least_one, default=256, help="tokens to generate (default 256)")
    parser.add_argument("--repeats", type=at_least_one, default=1, help="alternate the two paths this many times (default 1)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as training does (see npllm.runtime.memory)
    preset = {k: v for k, v in PRESETS[args.preset].items() if k != "batch_size"}
    model = GPT(GPTConfig(**preset), seed=0)
    prompt = np.random.default_rng(0).integers(0, preset["vocab_size"], size=1)
    runs = [(tokens_per_second(model, prompt, args.new_tokens, use_cache=True),
             tokens_per_second(model, prompt, args.new_tokens, use_cache=False)) for _ in range(args.repeats)]
    cached, uncached = (float(np.median(speeds)) for speeds in zip(*runs))
    repeats = f" (median of {args.repeats} alternating runs)" if args.repeats > 1 else ""
    print(f"preset {args.preset}, {args.new_tokens} new tokens from a 1-token prompt{repeats}:")
    print(f"  with KV cache    {cached:8.1f} tokens/s")
    print(f"  without cache    {uncached:8.1f} tokens/s")
    print(f"  speed-up         {cached / uncached:8.1f}x")
    if args.json:
        print(json.dumps({"preset": args.preset, "new_tokens": args.new_tokens, "tokens_per_s": cached,
                          "tokens_per_s_without_cache": uncached, "speedup": cached / uncached}))
    return 0
