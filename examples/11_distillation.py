"""Chapter 11. Distillation: a small student learns from a big teacher's whole distribution, not only the text.

Run:  python examples/11_distillation.py                 (a teacher, then two students: a few minutes)
      python examples/11_distillation.py --checkpoint runs/gpt --steps 400

Source: npllm/functional/distillation.py (T^2 KL, derived and fused), npllm/training/distill.py
(the recipe behind ``npllm distill``), objectives.py (Distillation).

1. A teacher (given, or a 4-block GPT pre-trained here).
2. Soft targets: the text says which token came next; the teacher says how likely every
   token was.  A temperature T > 1 flattens its distribution, so the small probabilities
   (which wrong tokens are nearly right) carry signal too.
3. The loss: alpha T^2 KL(teacher || student, both at T) + (1 - alpha) cross-entropy;
   T^2 keeps the soft gradients' scale as T grows.
4. The same student (2 blocks, 64 wide) trained twice, from the same initialisation on
   the same batches: distilled, and from the text alone; their held-out losses, and the
   curves overlaid (distilled_vs_scratch.png, with matplotlib).

Measured with the defaults here: teacher 3.31, student from scratch 3.88, distilled 4.20
held-out loss after 300 steps: this short, imitating the teacher at T 2 slowed the student's
learning of the text itself.  ``npllm bench distill`` (600 steps each, a larger vocabulary)
found the other way round, the distilled student 30% closer to its teacher: try
``--steps 600``, or a smaller ``--alpha``, and compare the curves.
"""

import argparse

import numpy as np

import npllm.functional as F
from _chapters import SMALL_GPT, add_checkpoint_flags, small_gpt
from npllm import Tensor, no_grad
from npllm.generation.sampling import softmax_1d
from npllm.plot import picture
from npllm.plot.runs import plot_runs, read_metrics
from npllm.training.distill import DistillConfig, distill
from npllm.training.pretrain import TrainConfig, load_model, train

TEACHER = dict(n_layer=4, n_head=4, n_embd=128)
STUDENT = dict(n_layer=2, n_head=2, n_embd=64, seed=7)


def entropy(probs) -> float:
    return float(-(probs * np.log(np.maximum(probs, 1e-30))).sum())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_checkpoint_flags(parser, steps=400)
    parser.add_argument("--steps", type=int, default=300, help="training steps of each student")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--out", default="runs/textbook/11-distillation", help="folder for the runs and the picture")
    args = parser.parse_args(argv)

    teacher_dir = small_gpt(args, args.out, **TEACHER)
    teacher, tokenizer = load_model(teacher_dir)
    evaluated = [record["val_loss"] for record in read_metrics(teacher_dir) if "val_loss" in record]
    print(f"1. the teacher {teacher_dir}: {teacher.num_parameters():,} parameters, held-out loss {evaluated[-1]:.3f}")

    prompt = tokenizer.encode("The ")
    teacher.eval()
    with no_grad():
        logits = teacher(np.array([prompt])).data[0, -1].astype(np.float64)
    for temperature in (1.0, args.temperature):
        probs = np.sort(softmax_1d(logits / temperature))[::-1]
        print(f"2. after 'The ', at T {temperature}: entropy {entropy(probs):.2f} nats; the top 3 tokens hold"
              f" {probs[:3].sum():.1%}, the tokens beyond the top 10 {probs[10:].sum():.1%}")

    student_logits = Tensor(logits[None] * 0.5)  # a student that is sure of the same things, less strongly
    soft = F.kl_div(student_logits, Tensor(logits[None]), temperature=args.temperature).item()
    print(f"3. T^2 KL from the teacher to a half-confident copy of it: {soft:.3f} (0 only for the teacher itself:"
          f" {F.kl_div(Tensor(logits[None]), Tensor(logits[None]), temperature=args.temperature).item():.1e})")

    config = teacher.config
    shared = dict(SMALL_GPT, **STUDENT, data=args.data, vocab_size=tokenizer.vocab_size, context_length=config.context_length,
                  max_steps=args.steps, eval_interval=max(args.steps // 4, 1), warmup_steps=min(30, args.steps))
    if args.checkpoint:  # the teacher's corpus is not known: the students read the default one
        print(f"   (the students read {shared['data']}; the losses compare only if the teacher's tokenizer"
              " was trained on it with the same settings)")
    quiet = dict(progress=False, log=lambda line: None)
    print(f"4. the same student trained twice for {args.steps} steps ...")
    scratch = train(TrainConfig(**shared, out_dir=f"{args.out}/scratch"), **quiet)
    distilled = distill(DistillConfig(**shared, teacher=teacher_dir, temperature=args.temperature, alpha=args.alpha,
                                      out_dir=f"{args.out}/distilled"), **quiet)
    losses = {name: read_metrics(run.out_dir)[-1]["val_loss"] for name, run in (("scratch", scratch),
                                                                                 ("distilled", distilled))}
    print(f"   held-out loss of the text: from scratch {losses['scratch']:.3f}, distilled {losses['distilled']:.3f}"
          f" ({scratch.model.num_parameters():,} parameters each)")
    picture(f"{args.out}/distilled_vs_scratch.png", plot_runs, [distilled.out_dir, scratch.out_dir],
            labels=["distilled from the teacher", "from scratch"])
    return losses


if __name__ == "__main__":
    main()
