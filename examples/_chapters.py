"""What several chapters share: a small pre-trained GPT to sample from, fine-tune and distil.

Chapters 5, 8, 10 and 11 start from a trained GPT.  Given ``--checkpoint``
they use that run (``npllm train``'s, say); otherwise they pre-train a small
one with the project's own recipe (``npllm.training.pretrain``, the code
behind ``npllm train``) into their output folder, once: a second run of a
chapter finds it there and goes straight to its subject.
"""

from pathlib import Path

from npllm.training.checkpoint import CHECKPOINT_FOLDER
from npllm.training.pretrain import TrainConfig, train

# Big enough to write plausible prose in ~2 minutes on 2 cores, small enough to fine-tune in one more.
SMALL_GPT = dict(data="docs", vocab_size=512, n_layer=2, n_head=4, n_embd=64, context_length=64, batch_size=16,
                 lr=3e-3, min_lr=3e-4, warmup_steps=30, eval_interval=100, eval_windows=32)


def add_checkpoint_flags(parser, steps=300):
    """``--checkpoint`` (a GPT run to start from), ``--pretrain-steps`` and ``--data`` (for the one trained otherwise)."""
    parser.add_argument("--checkpoint", default=None,
                        help="a GPT run folder (npllm train) to start from; default: pre-train a small one in --out")
    parser.add_argument("--pretrain-steps", type=int, default=steps,
                        help="steps of the small GPT pre-trained when no --checkpoint is given")
    parser.add_argument("--data", default=SMALL_GPT["data"], help="the text it pre-trains on: docs, stdlib, a file")


def small_gpt(args, out_dir, **changes) -> str:
    """The run folder of the GPT to start from: ``args.checkpoint``, or one pre-trained into ``out_dir`` (reused)."""
    if args.checkpoint:
        return args.checkpoint
    folder = Path(out_dir) / "pretrained"
    if (folder / CHECKPOINT_FOLDER).is_dir():
        print(f"   (reusing the small GPT pre-trained earlier in {folder})")
        return str(folder)
    settings = {**SMALL_GPT, "data": args.data, "max_steps": args.pretrain_steps, "out_dir": str(folder), **changes}
    print(f"   pre-training a small GPT ({settings['n_layer']} blocks, {settings['n_embd']} wide) for"
          f" {settings['max_steps']} steps on {settings['data']} into {folder} ...")
    train(TrainConfig(**settings), progress=False, log=lambda line: print(f"   {line}"))
    return str(folder)
