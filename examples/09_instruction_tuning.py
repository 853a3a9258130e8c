"""Chapter 9. Instruction tuning: teach a GPT that continues text to answer what it is asked.

Run:  python examples/09_instruction_tuning.py          (pre-trains a small GPT first; a few minutes)
      python examples/09_instruction_tuning.py --checkpoint runs/gpt --steps 1000

Source: npllm/data/instructions.py (the prompt template, the arithmetic set, the batches),
npllm/training/instruct.py (``npllm finetune instruct``), npllm/generation/chat.py (``npllm chat``).

1. The prompt template: every record (instruction, optional input, output) is read as one
   text, written in one place (``format_prompt``); end-of-text closes each response, so a
   tuned model learns to stop.
2. The masked prompt: the model reads prompt and response, but every target inside the
   prompt is the ignore index (-100): the loss teaches the response only.
3. A small pre-trained GPT tuned on decimal arithmetic through the shared loop, its
   held-out response loss and exact match measured before and after.
4. One answer through ``npllm chat``'s path: the template applied, tokens written greedily
   until end-of-text; and the loss curve (training.png, with matplotlib).

A GPT pre-trained on prose has never seen "### Response:" followed by a number: before
tuning it answers nothing exactly.  With the defaults, 300 steps teach this 141 k-parameter
GPT the format and the stopping (held-out response loss 5.70 -> 2.06: it answers with a short
number and end-of-text) but not the arithmetic (exact match 0% -> 0%); exact sums take many
more steps and a bigger model (the README's ``npllm finetune instruct`` runs).
"""

import argparse
import json

import numpy as np

from _chapters import add_checkpoint_flags, small_gpt
from npllm.data.instructions import format_prompt, instruction_batch, load_instructions, tokenize
from npllm.data.masking import IGNORE_INDEX
from npllm.generation.chat import respond
from npllm.plot import picture
from npllm.plot.runs import plot_runs
from npllm.training.instruct import REPORT_FILE, InstructConfig, instruct
from npllm.training.pretrain import END_OF_TEXT, load_model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_checkpoint_flags(parser)
    parser.add_argument("--instructions", default="arithmetic",
                        help="arithmetic, stdlib-functions, or a JSON / JSONL file of Alpaca records")
    parser.add_argument("--steps", type=int, default=300, help="instruction-tuning steps (batches of 16 records)")
    parser.add_argument("--exact-match-records", type=int, default=100,
                        help="held-out records answered before and after tuning")
    parser.add_argument("--out", default="runs/textbook/09-instruction-tuning", help="folder for the runs and the picture")
    args = parser.parse_args(argv)

    data = load_instructions(args.instructions)
    record = data.test[0]
    prompt = format_prompt(record.instruction, record.input)
    print(f"1. {data.description}; a held-out record as the model reads it:\n{prompt}{record.output}<|endoftext|>")

    checkpoint = small_gpt(args, args.out, context_length=128)  # the template alone is ~110 of its tokens
    model, tokenizer = load_model(checkpoint, log=lambda line: None)
    end_of_text = tokenizer.special_tokens[END_OF_TEXT]
    example = tokenize([record], tokenizer, end_of_text, model.config.context_length)[0]
    batch = instruction_batch([example], end_of_text, mask_prompt=True)([0])
    targets = batch["targets"][0]
    learned = targets != IGNORE_INDEX
    print(f"2. {len(example.prompt)} prompt tokens and {len(example.response)} response tokens (end-of-text"
          f" included): inputs {batch['input_ids'].shape}, targets {batch['targets'].shape}")
    print(f"   targets: {' '.join(str(t) for t in targets[:6])} ... {' '.join(str(t) for t in targets[-6:])}")
    print(f"   {int((~learned).sum())} of {len(targets)} targets are the ignore index {IGNORE_INDEX} (the prompt);"
          f" the {int(learned.sum())} learned read {tokenizer.decode(targets[learned].tolist())!r}")
    first = int(np.argmax(learned))
    print(f"   the first learned target sits at position {first} = {len(example.prompt)} - 1: the input there is the"
          f" prompt's last token {tokenizer.decode([int(batch['input_ids'][0, first])])!r}")

    print(f"3. tuning the GPT of {checkpoint} on {args.instructions} for {args.steps} steps ...")
    config = InstructConfig(checkpoint=checkpoint, data=args.instructions, max_steps=args.steps,
                            exact_match_records=args.exact_match_records, eval_interval=max(args.steps // 5, 1),
                            warmup_steps=min(20, args.steps), lr=1e-3, min_lr=1e-4, out_dir=f"{args.out}/instruct")
    run = instruct(config, progress=False, log=lambda line: print(f"   {line}"))
    report = json.loads((run.out_dir / REPORT_FILE).read_text(encoding="utf-8"))
    before, after = report["before"], report["after"]
    print(f"   held-out response loss {before['response_loss']:.3f} -> {after['response_loss']:.3f}; exact match "
          + ", ".join(f"{name} {before['exact_match'][name]:.1%} -> {after['exact_match'][name]:.1%}"
                      for name in after["exact_match"]))

    question = data.test[1]
    answer = respond(run.model, run.tokenizer, question.instruction, question.input, stop_token=end_of_text,
                     max_new_tokens=16)
    print(f"4. {question.instruction} {question.input}\n   the tuned model answers {answer!r}"
          f" (exactly: {question.output!r})")
    picture(f"{args.out}/training.png", plot_runs, [run.out_dir], labels=[f"instruction tuning on {args.instructions}"])
    return {"before": before, "after": after, "answer": answer, "ignored": int((~learned).sum()),
            "prompt_tokens": len(example.prompt)}


if __name__ == "__main__":
    main()
