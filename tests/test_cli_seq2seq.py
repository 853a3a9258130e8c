"""``npllm generate`` with a seq2seq model (a Hugging Face BART folder): beams, sampling, batches, and the flags
that belong to the other kind of model, each refused in one line with exit status 2."""

import json

import numpy as np
import pytest

import npllm
from npllm.cli import main
from npllm.generation.seq2seq import write_targets
from npllm.models import GPT, BARTConfig, BARTForConditionalGeneration, GPTConfig
from npllm.tokenizer import BARTTokenizer, BPETokenizer

SPECIALS = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 284}


def bpe_with_barts_specials() -> BPETokenizer:
    """A small byte-level BPE laid out as BART's: four special tokens first, the learned tokens, <mask> last."""
    bpe = BPETokenizer.train("def forward(self, x):\n    return self.proj(x)\n" * 20, vocab_size=280, pattern="gpt2")
    return BPETokenizer({token: rank + 4 for token, rank in bpe.mergeable_ranks.items()}, "gpt2", SPECIALS)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("generate")
    config = BARTConfig(vocab_size=285, d_model=16, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24, max_position_embeddings=40,
                        init_std=0.3)
    npllm.save_pretrained(BARTForConditionalGeneration(config, seed=1), bpe_with_barts_specials(),
                          root / "bart")
    gpt_tokenizer = BPETokenizer.train("the cat sat on the mat " * 30, vocab_size=270, pattern="gpt2",
                                       special_tokens=["<|endoftext|>"])
    gpt = GPT(GPTConfig(vocab_size=270, context_length=16, n_layer=1, n_head=2, n_embd=16))
    npllm.save_pretrained(gpt, gpt_tokenizer, root / "gpt")
    return root


def test_generate_decodes_each_input_with_beams_as_the_library_does(folders, capsys):
    sources = ["def forward(self, x):", "return self.proj(x)"]
    assert main(["generate", "--checkpoint", str(folders / "bart"), "--input", sources[0], "--input", sources[1],
                 "--beams", "3", "--max-new-tokens", "8", "--no-repeat-ngram-size", "2"]) == 0
    model, tokenizer = npllm.load_pretrained(folders / "bart")
    expected = write_targets(model, tokenizer, sources, num_beams=3, max_new_tokens=8, no_repeat_ngram_size=2)
    assert capsys.readouterr().out == "".join(outputs[0][0] + "\n" for outputs in expected)


def test_generate_prints_several_beams_with_their_scores_and_samples_when_asked(folders, capsys):
    bart = str(folders / "bart")
    assert main(["generate", "--checkpoint", bart, "--input", "def", "--max-new-tokens", "6",
                 "--num-return-sequences", "3", "--length-penalty", "0.5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    scores = [float(line.split()[0]) for line in lines]
    assert len(lines) == 3 and scores == sorted(scores, reverse=True)
    sampled = ["generate", "--checkpoint", bart, "--input", "def", "--max-new-tokens", "6", "--temperature", "1",
               "--seed", "4"]
    assert main(sampled) == 0 and main(sampled) == 0
    first, second = capsys.readouterr().out.splitlines()
    assert first == second  # seeded
    assert main(["generate", "--checkpoint", bart, "--input", "def", "--max-new-tokens", "6", "--no-cache"]) == 0
    assert main(["generate", "--checkpoint", bart, "--input", "def", "--max-new-tokens", "6"]) == 0
    uncached, cached = capsys.readouterr().out.splitlines()
    assert uncached == cached


def test_a_long_source_is_cut_to_the_position_table_with_a_warning(folders, capsys):
    assert main(["generate", "--checkpoint", str(folders / "bart"), "--input", "x " * 100, "--beams", "1",
                 "--max-new-tokens", "3"]) == 0
    assert "more than the position table's 40: using its first 39 and </s>" in capsys.readouterr().err


BAD = {
    "beams of zero": (["bart", "--input", "x", "--beams", "0"], "--beams must be at least 1, got 0"),
    "negative beams": (["bart", "--input", "x", "--beams", "-3"], "--beams must be at least 1, got -3"),
    "beams and sampling": (["bart", "--input", "x", "--beams", "2", "--top-k", "3"],
                           "beam search keeps the most probable beams and samples nothing: give --beams 1"),
    "a GPT's prompt": (["bart", "--input", "x", "--prompt", "def"], "--prompt: for a GPT; {bart} holds a seq2seq"),
    "no input": (["bart"], "{bart} holds a seq2seq model: give it a source text with --input"),
    "an empty input": (["bart", "--input", "  "], "the source text (--input) is empty"),
    "beam flags without beams": (["bart", "--input", "x", "--beams", "1", "--num-return-sequences", "2"],
                                 "--num-return-sequences: for beam search"),
    "too many tokens": (["bart", "--input", "x", "--max-new-tokens", "40"], "--max-new-tokens must be between 1 and 39"),
    "more sequences than beams": (["bart", "--input", "x", "--num-return-sequences", "5"],
                                  "--num-return-sequences must be between 1 and --beams (4), got 5"),
    "a GPT given an input": (["gpt", "--input", "x"], "--input: for a seq2seq model (BART); {gpt} holds a GPT"),
    "a GPT given beams": (["gpt", "--beams", "4", "--length-penalty", "2"], "--beams, --length-penalty: for a seq2seq"),
}


@pytest.mark.parametrize("argv, message", BAD.values(), ids=BAD.keys())
def test_flags_for_the_other_kind_of_model_and_bad_settings_are_one_line(folders, argv, message, capsys):
    paths = {"bart": str(folders / "bart"), "gpt": str(folders / "gpt")}
    assert main(["generate", "--checkpoint", paths[argv[0]], *argv[1:]]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("npllm generate: error: ")
    assert message.format(**paths) in err


def test_write_targets_takes_a_bpe_tokenizer_with_barts_special_tokens(folders):
    model, tokenizer = npllm.load_pretrained(folders / "bart")
    assert isinstance(tokenizer, BARTTokenizer)
    bpe = bpe_with_barts_specials()
    assert write_targets(model, bpe, ["def"], max_new_tokens=4) == write_targets(model, tokenizer, ["def"],
                                                                                 max_new_tokens=4)
    with pytest.raises(npllm.errors.SettingError, match="needs BART's special tokens"):
        write_targets(model, BPETokenizer(bpe.mergeable_ranks, "gpt2"), ["def"])
    assert np.isfinite(write_targets(model, tokenizer, ["def"], num_beams=2, max_new_tokens=4)[0][0][1])


@pytest.mark.bench
def test_bench_generate_seq2seq_runs_with_tiny_settings(capsys):
    assert main(["bench", "generate", "--model", "seq2seq", "--preset", "tiny", "--new-tokens", "2", "--sources", "1",
                 "--beams", "2", "--json"]) == 0
    out = capsys.readouterr().out
    assert "beam search 2" in out and "same hypotheses: yes" in out
    assert json.loads(out.splitlines()[-1])["tokens_per_s"] > 0
