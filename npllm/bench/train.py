"""``npllm bench train``: training throughput of a GPT (or a masked-LM BERT, or a denoising BART), and how it compares.

What is measured: full training steps (forward, cross-entropy, backward,
AdamW) on random token ids (for BERT: masked as pre-training masks them, the
loss on the 15% chosen; for ``--model seq2seq``, an encoder–decoder with half
the preset's blocks on each side: windows damaged by text infilling as
``npllm train --model seq2seq`` damages them, the loss on every target
token), after a few warm-up steps; ours is the step
``npllm train`` takes (``DataParallel``: one thread per core, each on a
slice of the batch).  What is printed:

- tokens/s and ms/step (for seq2seq: target tokens, each with its source token);
- GFLOP/s, counting the model's FLOPs per token (6 x parameters + attention,
  see ``GPT.flops_per_token`` and ``BERTForMaskedLM.flops_per_token``) times tokens per second;
- MFU (model FLOP utilisation): that figure over the peak float32 matmul
  rate this machine reaches with NumPy, measured here before and after the
  runs (the better of the two: on a shared machine a busy moment can halve
  one measurement);
- peak memory of training: the rise of the process's peak resident memory
  from just before the model is built.

Each engine runs in a child process of its own, so one engine's memory and
threads never disturb the other's figures; ``--compare-torch`` runs the same
model in eager PyTorch (same weights, same batch, ``torch.optim.AdamW``) right
after ours and prints the ratios.  On a shared machine another program can
take a core away in the middle of a run; ``--repeats N`` alternates the
engines N times (npllm, torch, npllm, torch, ...) and reports each figure's
median over the runs, and the median of the N side-by-side ratios.
"""

import argparse
import json
import os
import resource
import subprocess
import sys

import numpy as np

from npllm.bench import at_least_one, description, require_torch
from npllm.bench.timing import seconds
from npllm.runtime.memory import keep_freed_memory
from npllm.runtime.pool import cores

PRESETS = {
    # tiny: the default run's GPT with half its vocabulary; small: the shape of nanoGPT's Shakespeare GPT
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, context_length=128, vocab_size=1024, batch_size=16),
    "small": dict(n_layer=6, n_head=6, n_embd=384, context_length=256, vocab_size=4096, batch_size=8),
}


def matmul_peak_gflops(sizes=(1024, 2048), repeats=5) -> float:
    """Best float32 GFLOP/s of an n x n x n NumPy matmul (2 n^3 FLOPs) over the sizes ``n``."""
    best = 0.0
    for n in sizes:
        a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
        a @ a  # warm up BLAS threads
        best = max(best, 2 * n**3 / min(seconds(np.matmul, a, a) for _ in range(repeats)) / 1e9)
    return best


def _resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_resident_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _batch(preset, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, preset["vocab_size"], size=(preset["batch_size"], preset["context_length"] + 1))
    return tokens[:, :-1], tokens[:, 1:]


def _model_config(preset):
    from npllm.models import GPTConfig

    return GPTConfig(**{k: v for k, v in preset.items() if k != "batch_size"})


def npllm_training_step(model, objective, batch: dict, workers=None):
    """One training step of ``model`` on ``batch`` as npllm train takes it: DataParallel on ``workers`` threads, AdamW."""
    from npllm.optim import AdamW
    from npllm.runtime.data_parallel import DataParallel

    optimizer = AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    parallel = DataParallel(model, workers)

    def step():
        optimizer.zero_grad()
        loss = parallel.forward_backward(batch, objective)
        optimizer.step()
        return loss

    return step


def npllm_step_function(preset, workers=None):
    """Our GPT + AdamW on ``workers`` threads (default: one per core); return (one training step, FLOPs per token)."""
    from npllm.models import GPT
    from npllm.training.objectives import NextToken

    model = GPT(_model_config(preset), seed=0)
    inputs, targets = _batch(preset)
    step = npllm_training_step(model, NextToken(), {"input_ids": inputs, "targets": targets}, workers)
    return step, model.flops_per_token()


def torch_training(preset):
    """The same model, weights and batch in eager PyTorch (on every core): (model, optimizer, loss(), FLOPs per token)."""
    import torch

    from npllm.bench.torch_gpt import TorchGPT
    from npllm.models import GPT

    torch.set_num_threads(cores())
    reference = GPT(_model_config(preset), seed=0)
    flops_per_token = reference.flops_per_token()
    model = TorchGPT(reference.config)
    model.load_numpy_state(reference.state_dict())
    del reference
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    inputs, targets = (torch.from_numpy(a.astype(np.int64)) for a in _batch(preset))

    def loss():
        logits = model(inputs)
        return torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))

    return model, optimizer, loss, flops_per_token


def torch_step_function(preset, workers=None):
    """One training step of ``torch_training``'s model (``workers`` is npllm's setting); return (step, FLOPs per token)."""
    return _torch_step(*torch_training(preset)[1:])


def _torch_step(optimizer, loss_of, flops_per_token):
    """(one PyTorch training step: zero_grad, loss, backward, AdamW; FLOPs per token)."""
    def step():
        optimizer.zero_grad()
        loss = loss_of()
        loss.backward()
        optimizer.step()
        return loss.item()

    return step, flops_per_token


def _bert_config(preset):
    from npllm.models import BERTConfig

    return BERTConfig(**{k: v for k, v in preset.items() if k != "batch_size"}, n_inner=4 * preset["n_embd"],
                      dropout=0.0, attention_dropout=0.0)


def _masked_batch(preset, seed=0) -> dict:
    """Random ids below the last four (the special tokens), masked as ``npllm train --model bert`` masks them."""
    from npllm.data.masking import MaskingRule, mask_tokens

    V = preset["vocab_size"]
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, V - 4, size=(preset["batch_size"], preset["context_length"]))
    masked, targets = mask_tokens(ids, np.ones(ids.shape, dtype=bool), MaskingRule(mask_id=V - 1, random_ids=V - 4), rng)
    return {"input_ids": masked, "targets": targets}


def npllm_bert_step_function(preset, workers=None):
    """Our BERTForMaskedLM + AdamW on ``workers`` threads; return (one training step, FLOPs per token)."""
    from npllm.models import BERTForMaskedLM
    from npllm.training.objectives import MaskedLM

    model = BERTForMaskedLM(_bert_config(preset), seed=0)
    return npllm_training_step(model, MaskedLM(), _masked_batch(preset), workers), model.flops_per_token()


def torch_bert_training(preset):
    """The same BERT, weights and masked batch in eager PyTorch with SDPA (on every core):
    (model, optimizer, loss(), FLOPs per token), as ``torch_training``."""
    import torch

    from npllm.bench.torch_bert import TorchBERTForMaskedLM
    from npllm.models import BERTForMaskedLM
    from npllm.training.objectives import MaskedLM

    torch.set_num_threads(cores())
    config = _bert_config(preset)
    reference = BERTForMaskedLM(config, seed=0)
    flops_per_token = reference.flops_per_token()
    model = TorchBERTForMaskedLM(reference.state_dict())
    del reference
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    batch = _masked_batch(preset)
    positions, targets = (torch.from_numpy(a.astype(np.int64)) for a in MaskedLM().chosen(batch))
    inputs = torch.from_numpy(batch["input_ids"].astype(np.int64))

    def loss():
        return torch.nn.functional.cross_entropy(model(inputs, positions, config.n_head, config.layer_norm_eps), targets)

    return model, optimizer, loss, flops_per_token


def torch_bert_step_function(preset, workers=None):
    """One training step of ``torch_bert_training``'s model; return (step, FLOPs per token)."""
    return _torch_step(*torch_bert_training(preset)[1:])


def _bart_config(preset):
    from npllm.models import BARTConfig

    layers, heads, C = preset["n_layer"] // 2, preset["n_head"], preset["n_embd"]
    return BARTConfig(vocab_size=preset["vocab_size"], d_model=C, encoder_layers=layers, decoder_layers=layers,
                      encoder_attention_heads=heads, decoder_attention_heads=heads, encoder_ffn_dim=4 * C,
                      decoder_ffn_dim=4 * C, max_position_embeddings=preset["context_length"], dropout=0.0,
                      attention_dropout=0.0, activation_dropout=0.0, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                      decoder_start_token_id=1)


def _denoising_batch(preset, seed=0) -> dict:
    """Windows of random ids (T - 2 of them, as <s> and </s> frame the source) damaged by text infilling."""
    from npllm.data.denoising import InfillingRule, denoising_batch
    from npllm.data.pairs import Framing

    V, length = preset["vocab_size"], preset["context_length"] - 2
    rng = np.random.default_rng(seed)
    windows = rng.integers(4, V, size=(preset["batch_size"], length))
    return denoising_batch(windows, InfillingRule(mask_id=3), Framing(pad_id=0, bos_id=1, eos_id=2), rng)


def _seq2seq_flops(model, batch) -> int:
    return model.flops_per_token(batch["input_ids"].shape[1], batch["decoder_input_ids"].shape[1])


def npllm_seq2seq_step_function(preset, workers=None):
    """Our BARTForConditionalGeneration + AdamW on ``workers`` threads; return (one training step, FLOPs per token)."""
    from npllm.models import BARTForConditionalGeneration
    from npllm.training.objectives import Seq2SeqLM

    model = BARTForConditionalGeneration(_bart_config(preset), seed=0)
    batch = _denoising_batch(preset)
    return npllm_training_step(model, Seq2SeqLM(), batch, workers), _seq2seq_flops(model, batch)


def torch_seq2seq_step_function(preset, workers=None):
    """The same BART, weights and damaged batch in eager PyTorch with SDPA (on every core)."""
    import torch

    from npllm.bench.torch_bart import TorchBART
    from npllm.models import BARTForConditionalGeneration

    torch.set_num_threads(cores())
    config = _bart_config(preset)
    reference = BARTForConditionalGeneration(config, seed=0)
    batch = _denoising_batch(preset)
    flops_per_token = _seq2seq_flops(reference, batch)
    model = TorchBART(reference.state_dict(), config)
    del reference
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4, betas=(0.9, 0.95),
                                  weight_decay=0.1)
    inputs = {name: torch.from_numpy(batch[name].astype(np.int64))
              for name in ("input_ids", "decoder_input_ids", "attention_mask", "targets")}

    def loss():
        logits = model(inputs["input_ids"], inputs["decoder_input_ids"], inputs["attention_mask"])
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), inputs["targets"].reshape(-1),
                                                 ignore_index=-100)

    return _torch_step(optimizer, loss, flops_per_token)


ENGINES = {  # (engine, model) -> its step function
    ("npllm", "gpt"): npllm_step_function, ("torch", "gpt"): torch_step_function,
    ("npllm", "bert"): npllm_bert_step_function, ("torch", "bert"): torch_bert_step_function,
    ("npllm", "seq2seq"): npllm_seq2seq_step_function, ("torch", "seq2seq"): torch_seq2seq_step_function,
}
MODELS = ("gpt", "bert", "seq2seq")


def measure(engine, preset_name, steps, warmup, workers=None, model="gpt") -> dict:
    """Run in this process: warm-up steps, then timed steps; return the figures."""
    preset = PRESETS[preset_name]
    keep_freed_memory()  # as training does (see npllm.runtime.memory)
    baseline_mb = _resident_mb()
    step, flops_per_token = ENGINES[engine, model](preset, workers)
    for _ in range(warmup):
        step()
    step_seconds = float(np.median([seconds(step) for _ in range(steps)]))
    tokens = preset["batch_size"] * (preset["context_length"] - 1 if model == "seq2seq" else preset["context_length"])
    return {
        "engine": engine,
        "preset": preset_name,
        "ms_per_step": step_seconds * 1e3,
        "tokens_per_s": tokens / step_seconds,
        "gflops": flops_per_token * tokens / step_seconds / 1e9,
        "peak_memory_mb": _peak_resident_mb() - baseline_mb,
    }


def measure_in_child(engine, preset, steps, warmup, workers=None, model="gpt") -> dict:
    """Run ``measure`` in a fresh Python so engines never share memory or threads."""
    command = [sys.executable, "-m", "npllm.bench.train", "--child", engine, "--model", model,
               "--preset", preset, "--steps", str(steps), "--warmup", str(warmup)]
    if workers is not None:
        command += ["--workers", str(workers)]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"bench train: the {engine} run failed:\n{completed.stderr.strip()}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _median_run(runs) -> dict:
    """One engine's figures: the median of each over its runs."""
    figures = ("ms_per_step", "tokens_per_s", "gflops", "peak_memory_mb")
    return {**runs[0], **{key: float(np.median([run[key] for run in runs])) for key in figures}}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="npllm bench train", description=description(__doc__))
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="model shape (default tiny)")
    parser.add_argument("--model", choices=MODELS, default="gpt",
                        help="gpt (next token), bert (masked LM) or seq2seq (a BART, denoising)")
    parser.add_argument("--steps", type=at_least_one, default=None, help="timed steps (default: 10 tiny, 5 small)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before the timed ones (default 2)")
    parser.add_argument("--workers", type=int, default=None,
                        help="npllm's data-parallel threads (default: one per core; 1 = the whole batch on one thread)")
    parser.add_argument("--compare-torch", action="store_true", help="also run eager PyTorch and print ratios")
    parser.add_argument("--repeats", type=at_least_one, default=1,
                        help="alternate the engines this many times and report medians (default 1)")
    parser.add_argument("--json", action="store_true", help="end with one JSON line of all figures")
    parser.add_argument("--child", choices=("npllm", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    steps = args.steps or (10 if args.preset == "tiny" else 5)
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    if args.warmup < 0:
        parser.error(f"--warmup must be at least 0, got {args.warmup}")
    if args.compare_torch:
        require_torch(parser)

    if args.child:
        print(json.dumps(measure(args.child, args.preset, steps, args.warmup, args.workers, args.model)))
        return 0

    peak_before = matmul_peak_gflops()
    engines = ["npllm", "torch"] if args.compare_torch else ["npllm"]
    runs = {engine: [] for engine in engines}
    for _ in range(args.repeats):
        for engine in engines:
            runs[engine].append(measure_in_child(engine, args.preset, steps, args.warmup, args.workers, args.model))
    peak = max(peak_before, matmul_peak_gflops())  # a busy moment lowers one measurement: take the better
    results = [_median_run(runs[engine]) for engine in engines]
    if os.environ.get("OPENBLAS_CORETYPE"):
        print(f"note: OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} is set: NumPy's BLAS kernel is forced")
    repeats = f", median of {args.repeats} alternating runs" if args.repeats > 1 else ""
    workers = args.workers or cores()
    print(f"{args.model} preset {args.preset}: {PRESETS[args.preset]}, npllm on {workers} worker thread{'s' * (workers > 1)}"
          f"   NumPy float32 matmul peak {peak:.0f} GFLOP/s{repeats}")
    for r in results:
        r["mfu"] = r["gflops"] / peak
        print(f"  {r['engine']:>6}: {r['tokens_per_s']:9,.0f} tokens/s  {r['ms_per_step']:8.1f} ms/step"
              f"  {r['gflops']:6.1f} GFLOP/s  MFU {r['mfu']:5.1%}  peak memory {r['peak_memory_mb']:7.1f} MB")
    summary = {"model": args.model, "preset": args.preset, "workers": workers, "matmul_peak_gflops": peak, "repeats": args.repeats,
               **results[0]}
    if args.compare_torch:
        summary["torch"] = results[1]
        pairs = list(zip(runs["npllm"], runs["torch"]))
        summary["speedup_vs_torch"] = float(np.median([a["tokens_per_s"] / b["tokens_per_s"] for a, b in pairs]))
        summary["memory_ratio_vs_torch"] = float(np.median(
            [a["peak_memory_mb"] / max(b["peak_memory_mb"], 1e-9) for a, b in pairs]))
        print(f"  npllm / torch: {summary['speedup_vs_torch']:.2f}x tokens/s,"
              f" {summary['memory_ratio_vs_torch']:.2f}x peak memory")
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
