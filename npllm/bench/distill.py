"""Does distillation help? A teacher, then one student trained twice: from the teacher's soft targets, and from scratch.

The teacher (4 blocks, 128 wide) is pre-trained on the corpus first.  Then the
same student (2 blocks, 64 wide: a sixth of the teacher's weights) trains for
the same steps from the same initialisation on the same batches, once with
``npllm distill`` and once with ``npllm train``; the two held-out next-token
losses are printed beside the teacher's and the unigram baseline, with the
time each run took, the teacher's share of a distillation step, and how fast
each model writes (tokens/s with the KV cache).  Everything runs in a
temporary folder (or ``--out``); nothing is downloaded.
"""

import argparse
import json
import tempfile
from pathlib import Path

from npllm.bench import at_least_one, description
from npllm.bench.timing import timed
from npllm.generation import generate_tokens
from npllm.training.distill import DistillConfig, distill
from npllm.training.pretrain import TrainConfig, load_model, train

CORPUS = dict(vocab_size=1024, context_length=64, batch_size=16, eval_windows=128, warmup_steps=50, eval_interval=10**9)
TEACHER = dict(n_layer=4, n_head=4, n_embd=128)
STUDENT = dict(n_layer=2, n_head=2, n_embd=64)


def held_out_loss(run_dir) -> float:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1])["val_loss"]


def writing_speed(run_dir, tokens) -> float:
    model, tokenizer = load_model(run_dir, log=lambda line: None)
    prompt = tokenizer.encode("The ")
    produced, elapsed = timed(lambda: sum(1 for _ in generate_tokens(model, prompt, tokens, temperature=0)))
    return produced / elapsed


def measure(data, teacher_steps, student_steps, alpha, temperature, out, log, writing_tokens=200) -> dict:
    quiet = dict(progress=False, log=lambda line: None)
    shared = dict(CORPUS, data=data, lr=3e-3, min_lr=3e-4)
    teacher, teacher_s = timed(train, TrainConfig(**shared, **TEACHER, max_steps=teacher_steps,
                                                  out_dir=str(out / "teacher")), **quiet)
    log(f"teacher: {teacher.model.num_parameters():,} parameters, {teacher_steps} steps in {teacher_s:.0f} s")
    student = dict(shared, **STUDENT, max_steps=student_steps, seed=7)
    scratch, scratch_s = timed(train, TrainConfig(**student, out_dir=str(out / "scratch")), **quiet)
    distilled, distilled_s = timed(distill, DistillConfig(**student, teacher=str(out / "teacher"), alpha=alpha,
                                                          temperature=temperature, out_dir=str(out / "distilled")),
                                   **quiet)
    return {
        "data": data, "teacher_parameters": teacher.model.num_parameters(),
        "student_parameters": scratch.model.num_parameters(), "steps": student_steps, "alpha": alpha,
        "temperature": temperature, "teacher_val_loss": held_out_loss(out / "teacher"),
        "scratch_val_loss": held_out_loss(out / "scratch"), "distilled_val_loss": held_out_loss(out / "distilled"),
        "teacher_s": teacher_s, "scratch_s": scratch_s, "distilled_s": distilled_s,
        "teacher_share_of_a_step": 1 - scratch_s / distilled_s,
        "teacher_tokens_per_s": writing_speed(out / "teacher", writing_tokens),
        "student_tokens_per_s": writing_speed(out / "scratch", writing_tokens),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(prog="npllm bench distill", description=description(__doc__),
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", default="docs", help="the corpus: stdlib, docs, or a text file or folder")
    parser.add_argument("--teacher-steps", type=at_least_one, default=600, help="the teacher's pre-training steps")
    parser.add_argument("--student-steps", type=at_least_one, default=600, help="each student's training steps")
    parser.add_argument("--alpha", type=float, default=0.5, help="weight of the soft loss in distillation")
    parser.add_argument("--temperature", type=float, default=2.0, help="softens both distributions")
    parser.add_argument("--writing-tokens", type=at_least_one, default=200,
                        help="tokens each model writes to time its generation")
    parser.add_argument("--out", default=None, help="folder for the three runs (None: a temporary one)")
    parser.add_argument("--json", action="store_true", help="end with the figures as one JSON line")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="npllm-bench-distill-") as scratch_folder:
        out = Path(args.out or scratch_folder)
        figures = measure(args.data, args.teacher_steps, args.student_steps, args.alpha, args.temperature, out, print,
                          args.writing_tokens)
    print(f"student: {figures['student_parameters']:,} parameters, {figures['steps']} steps, the same initialisation"
          f" and batches; distilled with alpha {figures['alpha']}, T {figures['temperature']}")
    print(f"  held-out loss   teacher {figures['teacher_val_loss']:.3f}   student from scratch"
          f" {figures['scratch_val_loss']:.3f} ({figures['scratch_s']:.0f} s)   distilled"
          f" {figures['distilled_val_loss']:.3f} ({figures['distilled_s']:.0f} s)")
    print(f"  the teacher's forward pass is {figures['teacher_share_of_a_step']:.0%} of a distillation step;"
          f" writing (KV cache): student {figures['student_tokens_per_s']:,.0f} tokens/s,"
          f" teacher {figures['teacher_tokens_per_s']:,.0f}")
    if args.json:
        print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
