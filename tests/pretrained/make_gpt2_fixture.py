"""Write the committed GPT-2 fixture: a tiny Hugging Face folder made by transformers, and what transformers computes with it.

Run once, from the repository's top folder, where transformers, torch and tokenizers are installed:

    HF_HUB_OFFLINE=1 python tests/pretrained/make_gpt2_fixture.py

It writes ``tests/pretrained/fixtures/gpt2_tiny/`` (config.json, model.safetensors in
float16, vocab.json, merges.txt, tokenizer.json, tokenizer_config.json) and, beside it,
``gpt2_tiny_reference.json`` (token ids that transformers' tokenizer gives for a few
texts, and the tokens its greedy ``generate`` writes) and ``gpt2_tiny_logits.safetensors``
(the logits its GPT2LMHeadModel computes for a few ids).  ``test_gpt2.py`` then checks npllm against these numbers on machines
without transformers.  Nothing here is used by npllm itself.

The tokenizer is trained by the ``tokenizers`` library (byte-level BPE, GPT-2's
pre-tokenizer), not by npllm, so the ids are an independent oracle.  The weights are
random, stored in float16 (so the file is a few KB and the loader's widening is tested);
the reference logits are computed from the same float16 values widened to float32.
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

HERE = Path(__file__).resolve().parent
FOLDER = HERE / "fixtures" / "gpt2_tiny"
REFERENCE = HERE / "fixtures" / "gpt2_tiny_reference.json"
LOGITS = HERE / "fixtures" / "gpt2_tiny_logits.safetensors"

TRAINING_TEXT = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs on.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 40))  # 42\n",
    "Hugging Face folders hold config.json, model.safetensors and the tokenizer's files.",
    "Numbers like 3.14159, 2718 and 1,000,000 split into digits; CAPITALS and café too.",
] * 20
TEXTS = [
    "The lazy fox sleeps.",
    "def twice(x):\n    return 2 * x\n",
    "  spaces,\ttabs\nand newlines\n\n",
    "unseen words: zebra, quasar, Ünïcödé 日本",
    "<|endoftext|> marks the end",
]
PROMPT = "The dog"
LOGIT_IDS = [[5, 17, 42, 99, 250, 7]]
NEW_TOKENS = 12


def main():
    FOLDER.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(14)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(TRAINING_TEXT, trainer)
    vocab_size = tokenizer.get_vocab_size()
    end_of_text = tokenizer.token_to_id("<|endoftext|>")

    config = GPT2Config(vocab_size=vocab_size, n_positions=32, n_embd=8, n_layer=2, n_head=2,
                        bos_token_id=end_of_text, eos_token_id=end_of_text, layer_norm_epsilon=1e-5,
                        initializer_range=1.0)  # large weights: greedy decoding that does not repeat one token
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # random LayerNorm gains and biases too, so that every tensor matters
        for name, param in model.named_parameters():
            if "ln_" in name or name.endswith("bias"):
                param.add_(torch.randn_like(param) * 0.3)
    model = model.half()
    model.save_pretrained(FOLDER)
    tokenizer.save(str(FOLDER / "tokenizer.json"))
    tokenizer.model.save(str(FOLDER))  # vocab.json + merges.txt
    hf_tokenizer = AutoTokenizer.from_pretrained(FOLDER)
    hf_tokenizer.save_pretrained(FOLDER)

    model = model.float()  # the float16 values, widened: what npllm computes with
    with torch.no_grad():
        logits = model(torch.tensor(LOGIT_IDS)).logits
        prompt = torch.tensor([tokenizer.encode(PROMPT).ids])
        model.generation_config.eos_token_id = None  # write every token, as npllm's generate without stop_token
        greedy = model.generate(prompt, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=end_of_text)
    reference = {
        "texts": {text: hf_tokenizer(text)["input_ids"] for text in TEXTS},
        "logit_ids": LOGIT_IDS,
        "prompt": PROMPT,
        "greedy_tokens": greedy[0, prompt.shape[1]:].tolist(),
    }
    REFERENCE.write_text(json.dumps(reference, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    save_file({"logits": logits.contiguous()}, str(LOGITS))
    for path in sorted(FOLDER.iterdir()):
        print(f"{path.relative_to(HERE)}: {path.stat().st_size:,} bytes")
    for path in (REFERENCE, LOGITS):
        print(f"{path.relative_to(HERE)}: {path.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
