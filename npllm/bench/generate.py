"""``npllm bench generate``: tokens/s with and without the KV cache (a GPT; a BART's beam search), or GPT-2 vs HF.

Without a cache, every new token re-runs the model over the whole context
(cost grows with the square of the text's length); with it, each new token
is one position through the model.  Both paths write the same tokens, so the
ratio of their speeds is the cache's whole effect.  The model has random
weights: speed does not depend on what the weights say.  On a shared
machine, ``--repeats N`` alternates the two paths N times and reports the
median of each.

``--model seq2seq`` measures a BART of the preset's shape (``d_model`` the
preset's ``n_embd``, as many encoder as decoder layers, a 4x MLP, the
preset's context as its position table) decoding a batch of ``--sources``
random sources of half the context by beam search (``--beams``, default 4):
with the cache, each step feeds one token per beam, reading the
self-attention's cached keys and values and the cross-attention's, computed
once per source; without it, each step runs the decoder over every beam's
whole prefix and projects the encoder's output again.  ``</s>`` is held back
(``min_new_tokens``) so that both write ``--new-tokens`` tokens per source;
tokens/s counts those (one best hypothesis per source), and both paths must
find the same hypotheses.

``--shape gpt2`` measures GPT-2 small (124 M parameters, random weights)
as a Hugging Face folder instead: it writes the folder, loads it in a fresh
interpreter to time the load and take the peak resident memory (after one
forward pass, so that every memory-mapped weight has been read), then
writes ``--new-tokens`` greedy tokens with the KV cache, alternately with
npllm and, when installed, with ``transformers``' ``generate`` on the same
folder, and reports the ratio of their speeds (and whether they wrote the
same tokens).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from npllm.bench import at_least_one, description
from npllm.bench.train import PRESETS
from npllm.bench.timing import timed
from npllm.generation import generate_tokens
from npllm.generation.seq2seq import beam_search
from npllm.models import GPT, BARTConfig, BARTForConditionalGeneration, GPTConfig
from npllm.pretrained import load_pretrained, save_pretrained
from npllm.runtime.memory import keep_freed_memory

# Run in a fresh interpreter: the load's time and the process's peak resident memory, as one JSON line.
# The peak is Linux's VmHWM (the high-water mark of this process's resident memory, file pages of a
# mapping included); getrusage's ru_maxrss would not do, as it keeps the parent's peak across exec.
LOAD_SCRIPT = """
import json, sys, time
import numpy as np
import npllm

def peak_bytes():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

before = peak_bytes()
start = time.perf_counter()
model, _ = npllm.load_pretrained(sys.argv[1])
seconds = time.perf_counter() - start
after_load = peak_bytes()
with npllm.no_grad():
    model(np.zeros((1, 1), np.int64))  # reads every weight once
weights = sum(param.data.nbytes for param in model.parameters())
print(json.dumps({"load_seconds": seconds, "weights_bytes": weights, "baseline_bytes": before,
                  "after_load_bytes": after_load, "peak_bytes": peak_bytes()}))
"""


def tokens_per_second(model, prompt, new_tokens, use_cache) -> float:
    produced, elapsed = timed(lambda: sum(1 for _ in generate_tokens(model, prompt, new_tokens, temperature=0,
                                                                    use_cache=use_cache)))
    return produced / elapsed


def transformers_generation(folder, prompt, new_tokens, threads=None):
    """A function that runs ``transformers``' greedy ``generate`` (KV cache on) on the folder and returns the new tokens.

    None when transformers (or torch) is not installed.  ``threads`` sets torch's thread count (default: its own).
    """
    try:
        import torch
        import transformers
    except ImportError:
        return None
    if threads:
        torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    model = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    model.generation_config.eos_token_id = None  # as ours: no stop token

    def run():
        with torch.no_grad():
            return model.generate(torch.tensor([prompt]), max_new_tokens=new_tokens, do_sample=False, use_cache=True,
                                  pad_token_id=0)[0, len(prompt):].tolist()
    return run


def first_difference(ours, theirs):
    """The index of the first token where two equally long sequences differ, or None when they are equal."""
    return next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), None)


def measure_load(folder) -> dict:
    """The load's seconds and the peak resident bytes of a fresh interpreter that loads ``folder`` (see LOAD_SCRIPT)."""
    package_parent = Path(__file__).resolve().parents[2]  # the folder that holds npllm/, wherever it is installed
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(package_parent),
                                                                           os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(folder)], capture_output=True, text=True,
                            check=True, env=environment)
    return json.loads(result.stdout)


def gpt2_against_transformers(args):
    """The ``--shape gpt2`` benchmark: load time and memory, then npllm's and transformers' generation speed."""
    with tempfile.TemporaryDirectory(prefix="npllm-gpt2-") as scratch:
        folder = Path(scratch) / "gpt2"
        (_, write_seconds) = timed(lambda: save_pretrained(GPT(GPTConfig(), seed=0), None, folder))
        size = (folder / "model.safetensors").stat().st_size
        print(f"GPT-2 small shape, random weights: wrote {size / 2**20:,.0f} MB in {write_seconds:.1f} s")
        load = measure_load(folder)
        weights_mb, peak_mb = load["weights_bytes"] / 2**20, load["peak_bytes"] / 2**20
        print(f"  load (fresh interpreter, memory-mapped)   {load['load_seconds']:8.3f} s")
        print(f"  peak resident after a forward pass        {peak_mb:8.0f} MB = {peak_mb / weights_mb:.2f}x the"
              f" {weights_mb:,.0f} MB of weights (the interpreter before loading: {load['baseline_bytes'] / 2**20:.0f}"
              f" MB, just after: {load['after_load_bytes'] / 2**20:.0f} MB)")
        model, _ = load_pretrained(folder)
        prompt = [int(np.random.default_rng(0).integers(0, model.config.vocab_size))]

        def ours():
            return list(generate_tokens(model, prompt, args.new_tokens, temperature=0))

        theirs = transformers_generation(folder, prompt, args.new_tokens, args.torch_threads)
        runs = []
        for warm_up in (ours, theirs):  # the first call of each pays one-off costs (allocations, dispatch caches)
            if warm_up:
                warm_up()
        for _ in range(args.repeats):
            our_tokens, our_seconds = timed(ours)
            their_tokens, their_seconds = timed(theirs) if theirs else (our_tokens, None)
            runs.append((args.new_tokens / our_seconds, their_seconds and args.new_tokens / their_seconds,
                         first_difference(our_tokens, their_tokens)))
    figures = {"shape": "gpt2", "new_tokens": args.new_tokens, "load_seconds": load["load_seconds"],
               "peak_resident_bytes": load["peak_bytes"], "weights_bytes": load["weights_bytes"],
               "tokens_per_s": float(np.median([run[0] for run in runs]))}
    repeats = f" (median of {args.repeats} alternating runs)" if args.repeats > 1 else ""
    print(f"{args.new_tokens} greedy tokens from a 1-token prompt, KV cache on{repeats}:")
    print(f"  npllm            {figures['tokens_per_s']:8.1f} tokens/s")
    if theirs:
        figures["transformers_tokens_per_s"] = float(np.median([run[1] for run in runs]))
        figures["ratio"] = float(np.median([run[0] / run[1] for run in runs]))
        differences = [run[2] for run in runs if run[2] is not None]
        figures["first_different_token"] = min(differences) if differences else None
        same = "yes" if not differences else f"no, from token {min(differences)} on (near-tied logits round apart)"
        torch = sys.modules["torch"]
        print(f"  transformers     {figures['transformers_tokens_per_s']:8.1f} tokens/s (torch {torch.__version__},"
              f" {torch.get_num_threads()} threads)")
        print(f"  npllm / transformers {figures['ratio']:.2f}x; same tokens: {same}")
    else:
        print("  transformers is not installed: no comparison")
    if args.json:
        print(json.dumps(figures))
    return 0


def seq2seq_beam_search(args):
    """The ``--model seq2seq`` benchmark: a BART's beam search with and without the decoder's caches."""
    preset = PRESETS[args.preset]
    C, layers, context = preset["n_embd"], preset["n_layer"], preset["context_length"]
    config = BARTConfig(vocab_size=preset["vocab_size"], d_model=C, encoder_layers=layers, decoder_layers=layers,
                        encoder_attention_heads=preset["n_head"], decoder_attention_heads=preset["n_head"],
                        encoder_ffn_dim=4 * C, decoder_ffn_dim=4 * C, max_position_embeddings=context)
    model = BARTForConditionalGeneration(config, seed=0)
    new_tokens = min(args.new_tokens, context - 1)
    sources = np.random.default_rng(0).integers(4, config.vocab_size, size=(args.sources, context // 2))

    def decode(use_cache):
        return beam_search(model, sources, None, new_tokens, args.beams, min_new_tokens=new_tokens,
                           use_cache=use_cache)

    runs = []
    for _ in range(args.repeats):  # alternating, so both paths see the same load
        cached, cached_seconds = timed(decode, True)
        uncached, uncached_seconds = timed(decode, False)
        same = [[h.tokens for h in row] for row in cached] == [[h.tokens for h in row] for row in uncached]
        runs.append((args.sources * new_tokens / cached_seconds, args.sources * new_tokens / uncached_seconds, same))
    with_cache, without = (float(np.median(speeds)) for speeds in list(zip(*runs))[:2])
    ratios = float(np.median([run[0] / run[1] for run in runs]))
    repeats = f" (median of {args.repeats} alternating runs)" if args.repeats > 1 else ""
    print(f"BART of preset {args.preset} ({model.num_parameters():,} parameters), beam search {args.beams},"
          f" {args.sources} sources of {context // 2} tokens, {new_tokens} new tokens each{repeats}:")
    print(f"  with the caches  {with_cache:8.1f} tokens/s")
    print(f"  without          {without:8.1f} tokens/s")
    print(f"  speed-up         {ratios:8.1f}x; same hypotheses: {'yes' if all(run[2] for run in runs) else 'no'}")
    if args.json:
        print(json.dumps({"model": "seq2seq", "preset": args.preset, "beams": args.beams, "sources": args.sources,
                          "new_tokens": new_tokens, "tokens_per_s": with_cache, "tokens_per_s_without_cache": without,
                          "speedup": ratios, "same_hypotheses": all(run[2] for run in runs)}))
def checkpoints_side_by_side(args):
    """The ``--checkpoint`` benchmark: each trained model's writing speed, taking turns, beside the first one's."""
    from npllm.training.pretrain import load_model

    models = [load_model(path, log=lambda line: None)[0] for path in args.checkpoint]
    prompt = [0]  # one token, the same for all: speed does not depend on what is written
    speeds = [[] for _ in models]
    for model in models:  # warm-up: the first call of each pays one-off costs
        tokens_per_second(model, prompt, 8, use_cache=True)
    for _ in range(args.repeats):
        for model, runs in zip(models, speeds):
            runs.append(tokens_per_second(model, prompt, args.new_tokens, use_cache=True))
    medians = [float(np.median(runs)) for runs in speeds]
    repeats = f", median of {args.repeats} turns each" if args.repeats > 1 else ""
    print(f"{args.new_tokens} greedy tokens from a 1-token prompt, KV cache on{repeats}:")
    width = max(len(str(path)) for path in args.checkpoint)
    for path, model, speed in zip(args.checkpoint, models, medians):
        print(f"  {path:<{width}}  {model.num_parameters():>12,} parameters  {speed:8.1f} tokens/s"
              f"  {speed / medians[0]:5.2f}x the first")
    if args.json:
        print(json.dumps({"new_tokens": args.new_tokens, "checkpoints": [
            {"path": str(path), "parameters": model.num_parameters(), "tokens_per_s": speed}
            for path, model, speed in zip(args.checkpoint, models, medians)]}))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="npllm bench generate", description=description(__doc__))
    parser.add_argument("--checkpoint", action="append", default=None,
                        help="a trained GPT (run folder or Hugging Face folder); repeat it to compare several")
    parser.add_argument("--shape", choices=["gpt2"], default=None,
                        help="gpt2: GPT-2 small as a Hugging Face folder, against transformers (instead of --preset)")
    parser.add_argument("--torch-threads", type=at_least_one, default=None,
                        help="with --shape gpt2: torch's thread count for transformers (default: torch's own)")
    parser.add_argument("--model", choices=["gpt", "seq2seq"], default="gpt",
                        help="gpt: a GPT's sampling loop; seq2seq: a BART's beam search (default gpt)")
    parser.add_argument("--beams", type=at_least_one, default=4, help="with --model seq2seq: beam width (default 4)")
    parser.add_argument("--sources", type=at_least_one, default=2,
                        help="with --model seq2seq: sources decoded as one batch (default 2)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small", help="model shape (default small)")
    parser.add_argument("--new-tokens", type=at_least_one, default=256, help="tokens to generate (default 256)")
    parser.add_argument("--repeats", type=at_least_one, default=1, help="alternate the two paths this many times (default 1)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as training does (see npllm.runtime.memory)
    if args.checkpoint:
        return checkpoints_side_by_side(args)
    if args.shape == "gpt2":
        return gpt2_against_transformers(args)
    if args.model == "seq2seq":
        return seq2seq_beam_search(args)
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
