"""Chapter 10. LoRA: fine-tune by training two thin matrices beside each frozen weight.

Run:  python examples/10_lora.py                   (pre-trains a small GPT first; a few minutes)
      python examples/10_lora.py --checkpoint runs/gpt --rank 4

Source: npllm/nn/lora.py (LoRALinear, apply_lora, adapters saved apart),
npllm/training/finetune.py (``npllm finetune classify --train lora``).

1. A LoRA layer: y = x W + b + (alpha / r) x A B, with W frozen, A random and B zero, so
   at the start it computes exactly what the base layer computes.
2. Its backward: gradients reach A and B only, checked by central differences.
3. On a GPT: how many numbers are trained with adapters of rank r, against all of them.
4. Merging: W += (alpha / r) A B once, and the layer runs as fast as the base again.
5. Fine-tuning the same classifier twice on stdlib-topics, LoRA and every weight, from
   the same pre-trained GPT; their curves overlaid (lora_vs_full.png, with matplotlib).

On this small GPT, rank-8 adapters are 12% of the weights and reach a little less than
full fine-tuning (24% against 28% here); LoRA pays where the weights dominate memory: on
GPT-2's 124 M weights the same adapters are 1.2 M numbers, and AdamW keeps moments for them only.
"""

import argparse
import importlib.util
from pathlib import Path

import numpy as np

from _chapters import add_checkpoint_flags, small_gpt
from npllm import Tensor, gradcheck, no_grad
from npllm.nn import Linear, LoRALinear, apply_lora
from npllm.plot import picture
from npllm.plot.runs import plot_runs
from npllm.training.pretrain import load_model

# chapter 8's fine-tuning, the same recipe with another choice of what is trained
_spec = importlib.util.spec_from_file_location("classification", Path(__file__).with_name("08_classification.py"))
classification = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(classification)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_checkpoint_flags(parser)
    parser.add_argument("--rank", type=int, default=8, help="the adapters' rank r")
    parser.add_argument("--steps", type=int, default=200, help="fine-tuning steps of each run")
    parser.add_argument("--labelled", default="stdlib-topics", help="stdlib-topics, or a CSV or JSONL of text and label")
    parser.add_argument("--out", default="runs/textbook/10-lora", help="folder for the runs and the picture")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)

    base = Linear(6, 4, dtype=np.float64, rng=rng)
    layer = LoRALinear(base, rank=2, alpha=4.0, rng=1)
    x = Tensor(rng.standard_normal((3, 6)))
    with no_grad():
        same = np.array_equal(layer(x).data, (x.data @ base.weight.data + base.bias.data))
    print(f"1. a rank-2 adapter on a (6, 4) Linear: {layer.lora_A.size + layer.lora_B.size} trained numbers"
          f" beside {base.weight.size + base.bias.size} frozen; output at the start equals the base layer's: {same}")
    layer.lora_B.data[...] = rng.standard_normal(layer.lora_B.shape)  # (a trained B: the update is no longer 0)
    proven = gradcheck(lambda x, a, b: layer(x), [Tensor(x.data, requires_grad=True), layer.lora_A, layer.lora_B])
    layer(x).sum().backward()
    print(f"2. gradcheck through A and B: {proven}; the frozen W gets a gradient: {layer.weight.grad is not None}")

    checkpoint = small_gpt(args, args.out)
    model, _ = load_model(checkpoint)
    total = model.num_parameters()
    wrapped = apply_lora(model, rank=args.rank)
    trained = sum(p.size for p in model.parameters() if p.requires_grad)
    print(f"3. rank-{args.rank} adapters on the {len(wrapped)} projections of {checkpoint}'s GPT: {trained:,} trained"
          f" numbers, {trained / total:.1%} of its {total:,}")

    with no_grad():
        before = layer(x).data
        layer.merge()
        merged = layer(x).data
    print(f"4. merged into W: the same output to {np.abs(merged - before).max():.1e}, with one product instead of three")

    runs = {}
    for train in ("lora", "all"):
        print(f"5. fine-tuning with --train {train} for {args.steps} steps ...")
        lr = 5e-3 if train == "lora" else 1e-3  # adapters start from zero and take a larger rate
        run, report = classification.fine_tune(checkpoint, f"{args.out}/{train}", args.steps, args.labelled,
                                               train=train, lr=lr, min_lr=lr / 10)
        runs[train] = (run.out_dir, report["results"][0]["accuracy"])
    print("   held-out accuracy: " + ", ".join(f"{name} {accuracy:.1%}" for name, (_, accuracy) in runs.items()))
    picture(f"{args.out}/lora_vs_full.png", plot_runs, [folder for folder, _ in runs.values()],
            labels=[f"LoRA rank {args.rank}", "every weight"])
    return {name: accuracy for name, (_, accuracy) in runs.items()}


if __name__ == "__main__":
    main()
