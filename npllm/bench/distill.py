"""Does distillation help? A teacher, then one student trained twice: from the teacher's soft targets, and from scratch.

The teacher (4 blocks, 128 wide) is pre-trained on the corpus first.  Then the
same student (2 blocks, 64 wide: a sixth of the teacher's weights) trains for
the same steps from the same initialisation on the same batches, once with
``npllm distill`` and once with ``npllm train``; the two held-out losses are
printed beside the teacher's and the unigram baseline, with the time each
run took, the teacher's share of a distillation step, and (for the GPT) how
fast each model writes (tokens/s with the KV cache).  ``--model bert`` does
the same for a BERT (masked-LM pre-training, ``npllm distill`` at the masked
positions), and prints masked-token accuracy beside each held-out loss.
Everything runs in a temporary folder (or ``--out``); nothing is downloaded.

The teacher's share of a step is measured apart, on one training batch
after the runs: the student's forward and backward pass with the
distillation objective (the teacher's forward included) against the same
with the plain objective, alternately ``--share-repeats`` times, medians.
"""

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from npllm.bench import at_least_one, description
from npllm.bench.timing import seconds, timed
from npllm.generation import generate_tokens
from npllm.training import pretrain, pretrain_bert
from npllm.training.distill import BERTDistillConfig, DistillConfig, distill
from npllm.training.pretrain import load_model

CORPUS = {"vocab_size": 1024, "context_length": 64, "batch_size": 16, "eval_windows": 128, "warmup_steps": 50,
          "eval_interval": 10**9}
TEACHER = {"n_layer": 4, "n_head": 4, "n_embd": 128}
STUDENT = {"n_layer": 2, "n_head": 2, "n_embd": 64}
# model -> (its pre-training config and recipe, its distillation config)
RECIPES = {"gpt": (pretrain.TrainConfig, pretrain.train, DistillConfig),
           "bert": (pretrain_bert.BERTTrainConfig, pretrain_bert.train, BERTDistillConfig)}


def held_out(run_dir) -> dict:
    """The last evaluation's figures: ``val_loss`` (and ``val_accuracy`` for a BERT)."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return {key: value for key, value in json.loads(lines[-1]).items() if key.startswith("val_")}


def writing_speed(run_dir, tokens) -> float:
    model, tokenizer = load_model(run_dir, log=lambda line: None)
    prompt = tokenizer.encode("The ")
    produced, elapsed = timed(lambda: sum(1 for _ in generate_tokens(model, prompt, tokens, temperature=0)))
    return produced / elapsed


def teacher_share(scratch, distilled, repeats) -> float:
    """1 - (a plain step's forward and backward) / (a distillation step's), on one batch, medians of alternations."""
    batch = distilled.batches.next_batch()
    plain, taught = [], []
    for _ in range(repeats + 1):  # the first pair warms up (allocations), and is dropped
        plain.append(seconds(scratch.parallel.forward_backward, batch, scratch.objective))
        taught.append(seconds(distilled.parallel.forward_backward, batch, distilled.objective))
    return 1 - float(np.median(plain[1:])) / float(np.median(taught[1:]))


def measure(data, teacher_steps, student_steps, alpha, temperature, out, log, writing_tokens=200, model="gpt",
            share_repeats=5, lr=3e-3) -> dict:
    quiet = {"progress": False, "log": lambda line: None}
    config_class, train, distill_class = RECIPES[model]
    shared = dict(CORPUS, data=data, lr=lr, min_lr=lr / 10)
    teacher, teacher_s = timed(train, config_class(**shared, **TEACHER, max_steps=teacher_steps,
                                                   out_dir=str(out / "teacher")), **quiet)
    log(f"teacher: {teacher.model.num_parameters():,} parameters, {teacher_steps} steps in {teacher_s:.0f} s")
    student = dict(shared, **STUDENT, max_steps=student_steps, seed=7)
    scratch, scratch_s = timed(train, config_class(**student, out_dir=str(out / "scratch")), **quiet)
    distilled, distilled_s = timed(distill, distill_class(**student, teacher=str(out / "teacher"), alpha=alpha,
                                                          temperature=temperature, out_dir=str(out / "distilled")),
                                   **quiet)
    figures = {"model": model, "data": data, "lr": lr, "teacher_parameters": teacher.model.num_parameters(),
               "student_parameters": scratch.model.num_parameters(), "steps": student_steps, "alpha": alpha,
               "temperature": temperature, "teacher_s": teacher_s, "scratch_s": scratch_s, "distilled_s": distilled_s,
               "teacher_share_of_a_step": teacher_share(scratch, distilled, share_repeats)}
    for name in ("teacher", "scratch", "distilled"):
        figures.update({f"{name}_{key}": value for key, value in held_out(out / name).items()})
    if model == "gpt":
        figures["teacher_tokens_per_s"] = writing_speed(out / "teacher", writing_tokens)
        figures["student_tokens_per_s"] = writing_speed(out / "scratch", writing_tokens)
    return figures


def main(argv=None):
    parser = argparse.ArgumentParser(prog="npllm bench distill", description=description(__doc__),
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", choices=sorted(RECIPES), default="gpt", help="the kind of teacher and student")
    parser.add_argument("--data", default="docs", help="the corpus: stdlib, docs, or a text file or folder")
    parser.add_argument("--teacher-steps", type=at_least_one, default=600, help="the teacher's pre-training steps")
    parser.add_argument("--student-steps", type=at_least_one, default=600, help="each student's training steps")
    parser.add_argument("--lr", type=float, default=3e-3,
                        help="every run's peak learning rate (the cosine decays to a tenth of it)")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the soft loss in distillation")
    parser.add_argument("--temperature", type=float, default=2.0, help="softens both distributions")
    parser.add_argument("--writing-tokens", type=at_least_one, default=200,
                        help="tokens each GPT writes to time its generation")
    parser.add_argument("--share-repeats", type=at_least_one, default=5,
                        help="alternations of a plain and a distillation step to time the teacher's share")
    parser.add_argument("--out", default=None, help="folder for the three runs (None: a temporary one)")
    parser.add_argument("--json", action="store_true", help="end with the figures as one JSON line")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="npllm-bench-distill-") as scratch_folder:
        out = Path(args.out or scratch_folder)
        figures = measure(args.data, args.teacher_steps, args.student_steps, args.alpha, args.temperature, out, print,
                          args.writing_tokens, args.model, args.share_repeats, args.lr)
    print(f"student: {figures['student_parameters']:,} parameters, {figures['steps']} steps, the same initialisation"
          f" and batches; distilled with alpha {figures['alpha']}, T {figures['temperature']}")

    def scores(name):
        accuracy = figures.get(f"{name}_val_accuracy")
        return f"{figures[f'{name}_val_loss']:.3f}" + ("" if accuracy is None else f" ({accuracy:.1%} masked right)")

    print(f"  held-out loss   teacher {scores('teacher')}   student from scratch {scores('scratch')}"
          f" ({figures['scratch_s']:.0f} s)   distilled {scores('distilled')} ({figures['distilled_s']:.0f} s)")
    writing = (f"; writing (KV cache): student {figures['student_tokens_per_s']:,.0f} tokens/s, teacher"
               f" {figures['teacher_tokens_per_s']:,.0f}") if args.model == "gpt" else ""
    print(f"  the teacher's forward pass is {figures['teacher_share_of_a_step']:.0%} of a distillation step{writing}")
    if args.json:
        print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
