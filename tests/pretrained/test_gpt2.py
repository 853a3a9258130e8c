"""Hugging Face GPT-2 folders: loaded and written by npllm, checked against transformers and a committed fixture.

Two kinds of test.  Those marked ``parity`` build a tiny random
``GPT2LMHeadModel`` with transformers inside the test (offline), and compare
logits, greedy generation and token ids both ways; they skip where
transformers is absent.  The rest need only NumPy: the committed fixture
(``fixtures/gpt2_tiny``, written once by ``make_gpt2_fixture.py`` with
transformers and tokenizers) holds what transformers computed, so the loader
is checked against it anywhere; round trips through our own writer; and the
one-line errors.

Tolerances.  float32 logits: 1e-5 of the largest logit.  float32 keeps ~7
digits (2^-24 ~ 6e-8 relative per rounding), and the two sides sum each
matmul, softmax and LayerNorm in their own order; through two blocks the
measured worst is ~5e-7 of the largest logit, so 1e-5 leaves room for other
BLAS builds while a real mistake (a transposed matrix, a wrong epsilon, a
missing bias) shows up at 1e-2 and above.  float64: 1e-10, absolute, as the
issue asks; the measured worst is ~4e-15.  Greedy tokens and token ids are
compared exactly.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import npllm
from npllm import no_grad
from npllm.generation import generate_tokens
from npllm.io.safetensors import load_safetensors, save_safetensors
from npllm.models import GPT, GPTConfig
from npllm.pretrained import PretrainedError, load_pretrained, save_pretrained
from npllm.tokenizer import BPETokenizer
from npllm.tokenizer.encode import merges_from_ranks
from npllm.tokenizer.files import gpt2_merges
from npllm.training.pretrain import TrainConfig, load_model, start_run

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "fixtures", "gpt2_tiny")
REFERENCE = os.path.join(HERE, "fixtures", "gpt2_tiny_reference.json")
FIXTURE_LOGITS = os.path.join(HERE, "fixtures", "gpt2_tiny_logits.safetensors")
FLOAT32_TOLERANCE = 1e-5  # of the largest logit (see the module docstring)
FLOAT64_TOLERANCE = 1e-10
VARIED_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b  # 42\n\n",
    "  leading spaces, trailing spaces   ",
    "Numbers 3.14159 and 1,000,000; CAPITALS, café, Ünïcödé, 日本語, emoji 😀.",
    "it's we're they'll I'd SHE'S\r\nwindows line\tand tab",
]


def logits_of(model, ids):
    with no_grad():
        return model(np.asarray(ids)).data


def tiny_npllm_folder(folder, tokenizer=None, seed=3, **overrides):
    """A random npllm GPT written as a Hugging Face folder (with ``tokenizer`` unless None)."""
    shape = dict(vocab_size=tokenizer.vocab_size if tokenizer else 300, context_length=32, n_layer=2, n_head=2,
                 n_embd=16) | overrides
    model = GPT(GPTConfig(**shape), seed=seed)
    save_pretrained(model, tokenizer, folder)
    return model


def rewrite_weights(folder, change):
    """Apply ``change(tensors)`` to the folder's model.safetensors (tensors by their names in the file)."""
    path = folder / "model.safetensors"
    tensors = {name: np.array(array) for name, array in load_safetensors(path).items()}
    save_safetensors(path, change(tensors) or tensors, metadata={"format": "pt"})


def rewrite_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


# ---- the committed fixture: transformers' numbers, checked without transformers ----

def test_the_fixture_loads_with_transformers_logits_ids_and_greedy_tokens():
    reference = json.loads(open(REFERENCE, encoding="utf-8").read())
    model, tokenizer = load_pretrained(FIXTURE)
    assert model.config.dtype == "float32" and model.wte.weight.dtype == np.float32  # the file is float16
    expected = load_safetensors(FIXTURE_LOGITS)["logits"]
    got = logits_of(model, reference["logit_ids"])
    assert np.abs(got - expected).max() <= FLOAT32_TOLERANCE * np.abs(expected).max()
    for text, ids in reference["texts"].items():
        assert tokenizer.encode(text, allowed_special="all") == ids, text
    prompt = tokenizer.encode(reference["prompt"])
    tokens = list(generate_tokens(model, prompt, len(reference["greedy_tokens"]), temperature=0))
    assert tokens == reference["greedy_tokens"]
    assert len(set(tokens)) > 2  # the fixture's weights are large enough that greedy decoding does not stall


def test_vocab_and_merges_alone_give_the_same_tokenizer(tmp_path):
    folder = tmp_path / "gpt2"
    shutil.copytree(FIXTURE, folder)
    _, from_json = load_pretrained(folder)
    (folder / "tokenizer.json").unlink()
    _, from_pair = load_pretrained(folder)
    assert from_pair.pattern == from_json.pattern and from_pair.mergeable_ranks == from_json.mergeable_ranks
    assert from_pair.special_tokens == from_json.special_tokens == {"<|endoftext|>": 0}
    for name in ("vocab.json", "merges.txt"):
        (folder / name).unlink()
    model, tokenizer = load_pretrained(folder)
    assert tokenizer is None and isinstance(model, GPT)


def test_names_without_the_prefix_a_tied_head_mask_buffers_and_shards_load_the_same(tmp_path):
    expected, _ = load_pretrained(FIXTURE)
    folder = tmp_path / "openai-style"
    shutil.copytree(FIXTURE, folder)

    def openai_style(tensors):
        renamed = {name.removeprefix("transformer."): array for name, array in tensors.items()}
        renamed["lm_head.weight"] = renamed["wte.weight"].copy()
        for block in range(2):
            renamed[f"h.{block}.attn.bias"] = np.tril(np.ones((1, 1, 32, 32), np.float32))
            renamed[f"h.{block}.attn.masked_bias"] = np.array(-1e4, np.float32)
        return renamed

    rewrite_weights(folder, openai_style)
    model, _ = load_pretrained(folder)
    for name, array in expected.state_dict().items():
        assert np.array_equal(model.state_dict()[name], array), name

    tensors = load_safetensors(folder / "model.safetensors")
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, part in halves.items():
        save_safetensors(folder / file, {name: np.array(tensors[name]) for name in part})
    (folder / "model.safetensors").unlink()
    index = {"weight_map": {name: file for file, part in halves.items() for name in part}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    sharded, _ = load_pretrained(folder)
    for name, array in expected.state_dict().items():
        assert np.array_equal(sharded.state_dict()[name], array), name


def test_a_float32_file_is_memory_mapped_not_copied(tmp_path):
    written = tiny_npllm_folder(tmp_path / "gpt")
    model, _ = load_pretrained(tmp_path / "gpt")
    weight = model.h[0].attn.c_attn.weight.data
    assert np.array_equal(weight, written.h[0].attn.c_attn.weight.data)
    assert not weight.flags.owndata and weight.flags.writeable  # a view of the mapping, copy-on-write
    weight[...] = 0  # changes the process's private pages, never the file
    again, _ = load_pretrained(tmp_path / "gpt")
    assert np.array_equal(again.h[0].attn.c_attn.weight.data, written.h[0].attn.c_attn.weight.data)


def test_a_bfloat16_file_loads_widened_to_float32(tmp_path):
    """bfloat16 is the top half of a float32; NumPy has no such type, so the file is written by hand here."""
    written = tiny_npllm_folder(tmp_path / "gpt")
    tensors = {"transformer." + name: array for name, array in written.state_dict().items()}
    header, offset, chunks = {}, 0, []
    for name in sorted(tensors):
        top_halves = (tensors[name].view(np.uint32) >> 16).astype("<u2")
        header[name] = {"dtype": "BF16", "shape": list(tensors[name].shape),
                        "data_offsets": [offset, offset + top_halves.nbytes]}
        chunks.append(top_halves.tobytes())
        offset += top_halves.nbytes
    header_bytes = json.dumps(header).encode()
    (tmp_path / "gpt" / "model.safetensors").write_bytes(len(header_bytes).to_bytes(8, "little") + header_bytes
                                                         + b"".join(chunks))
    model, _ = load_pretrained(tmp_path / "gpt")
    for name, array in written.state_dict().items():
        truncated = ((array.view(np.uint32) >> 16) << 16).view(np.float32)
        assert model.state_dict()[name].dtype == np.float32 and np.array_equal(model.state_dict()[name], truncated)


# ---- our own writer, read back ----

@pytest.mark.parametrize("pattern", ["gpt4", "gpt2"])
def test_save_then_load_gives_the_same_model_and_tokenizer(tmp_path, tiny_text, pattern):
    tokenizer = BPETokenizer.train(tiny_text, vocab_size=300, pattern=pattern, special_tokens=["<|endoftext|>"])
    written = tiny_npllm_folder(tmp_path / "gpt", tokenizer, layer_norm_eps=1e-6)
    model, loaded = load_pretrained(tmp_path / "gpt")
    assert model.config == written.config
    for name, array in written.state_dict().items():
        assert np.array_equal(model.state_dict()[name], array), name
    assert (loaded.pattern, loaded.mergeable_ranks, loaded.special_tokens) == \
        (tokenizer.pattern, tokenizer.mergeable_ranks, tokenizer.special_tokens)
    config = json.loads((tmp_path / "gpt" / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["eos_token_id"] == tokenizer.special_tokens["<|endoftext|>"]


def test_the_merges_our_ranks_imply_are_the_learned_ones():
    """The fixture's merges.txt was learned by Hugging Face's trainer; the merges its ranks imply are exactly those lines."""
    _, tokenizer = load_pretrained(FIXTURE)
    lines = open(os.path.join(FIXTURE, "merges.txt"), encoding="utf-8").read().splitlines()[1:]
    assert [f"{left} {right}" for left, right in gpt2_merges(tokenizer.mergeable_ranks)] == lines
    assert len(merges_from_ranks(tokenizer.mergeable_ranks)) == len(lines) > 50


def test_train_init_starts_from_the_folders_weights_and_tokenizer(tmp_path, tiny_corpus):
    init = tmp_path / "init"
    shutil.copytree(FIXTURE, init)
    rewrite_config(init, layer_norm_epsilon=1e-6)
    model, tokenizer = load_pretrained(init)
    config = TrainConfig.from_init(init, data=str(tiny_corpus), out_dir=str(tmp_path / "run"), batch_size=2,
                                   max_steps=1, n_head=2)
    assert (config.n_layer, config.n_embd, config.context_length, config.vocab_size) == (2, 8, 32, 320)
    run = start_run(config, log=lambda line: None)
    assert run.model.config.layer_norm_eps == 1e-6
    for name, array in model.state_dict().items():
        assert np.array_equal(run.model.state_dict()[name], array), name
    assert run.tokenizer.mergeable_ranks == tokenizer.mergeable_ranks
    with pytest.raises(npllm.errors.SettingError, match=r"`n_embd` 16 contradicts the model in `init`"):
        TrainConfig.from_init(init, n_embd=16)
    with pytest.raises(npllm.errors.SettingError, match=r"`init` .*disagree with its model: `n_layer` 4 \(the init has 2\)"):
        start_run(TrainConfig(init=str(init), n_layer=4, n_embd=8, n_head=2, context_length=32, vocab_size=320,
                              data=str(tiny_corpus), out_dir=str(tmp_path / "run2")), log=lambda line: None)


def test_load_model_reads_a_folder_with_a_tokenizer_only(tmp_path):
    tiny_npllm_folder(tmp_path / "gpt")
    with pytest.raises(PretrainedError, match="holds no tokenizer files"):
        load_model(tmp_path / "gpt")
    model, tokenizer = load_model(FIXTURE)
    assert isinstance(model, GPT) and tokenizer.vocab_size == 320


# ---- one line for each thing wrong ----

def without(name):
    def change(tensors):
        del tensors[name]
    return change


BAD_FOLDERS = {
    "missing tensor": (lambda folder: rewrite_weights(folder, without("transformer.h.1.mlp.c_fc.bias")),
                       r"model.safetensors: missing tensor h.1.mlp.c_fc.bias$"),
    "config disagrees": (lambda folder: rewrite_config(folder, n_embd=32, n_head=4),
                         r"model.safetensors: tensor wte.weight has shape \(300, 16\), but config.json .* makes it \(300, 32\)"),
    "unknown tensor": (lambda folder: rewrite_weights(folder, lambda t: t.update(score=np.zeros(2, np.float32))),
                       r"tensors that are not part of GPT-2's language model: score"),
    "untied head": (lambda folder: rewrite_weights(folder, lambda t: t.update({"lm_head.weight": np.ones((300, 16), np.float32)})),
                    r"lm_head.weight differs from wte.weight"),
    "activation": (lambda folder: rewrite_config(folder, activation_function="relu"),
                   r"config.json: activation_function is 'relu'; npllm's GPT builds GPT-2 with 'gelu_new'"),
    "wider MLP": (lambda folder: rewrite_config(folder, n_inner=128), r"config.json: n_inner is 128"),
    "no n_layer": (lambda folder: rewrite_config(folder, n_layer=None), r"config.json: no n_layer"),
    "heads": (lambda folder: rewrite_config(folder, n_head=3), r"config.json: GPTConfig: n_embd 16 is not divisible by n_head 3"),
    "tokenizer": (lambda folder: (folder / "merges.txt").write_text("#version: 0.2\nx y\n"),
                  r"merges.txt, line 2: merge 'x y' makes 'xy', which encoder.json does not contain"),
    "bad tokenizer.json": (lambda folder: (folder / "tokenizer.json").write_text('{"model": {"type": "WordPiece"}}'),
                           r"tokenizer.json: expected a BPE \"model\", found 'WordPiece'"),
}


@pytest.mark.parametrize("name", BAD_FOLDERS)
def test_a_bad_folder_is_one_line_naming_the_problem(tmp_path, tiny_text, name):
    make_bad, message = BAD_FOLDERS[name]
    tokenizer = BPETokenizer.train(tiny_text, vocab_size=300, pattern="gpt2") if name == "tokenizer" else None
    folder = tmp_path / "gpt"
    tiny_npllm_folder(folder, tokenizer, vocab_size=300)
    if name == "tokenizer":
        (folder / "tokenizer.json").unlink()  # so that vocab.json and merges.txt are read
    make_bad(folder)
    with pytest.raises(PretrainedError, match=message) as raised:
        load_pretrained(folder)
    assert "\n" not in str(raised.value)


@pytest.mark.slow
def test_the_command_line_says_a_bad_folder_in_one_line_with_exit_2(tmp_path):
    folder = tmp_path / "gpt"
    shutil.copytree(FIXTURE, folder)
    rewrite_config(folder, activation_function="relu")
    result = subprocess.run([sys.executable, "-m", "npllm.cli", "generate", "--checkpoint", str(folder)],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(HERE))})
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "error:" in result.stderr and "activation_function is 'relu'" in result.stderr


def test_the_command_line_trains_from_a_folder_exports_and_generates_from_the_export(tmp_path, tiny_corpus, capsys):
    from npllm.cli import main

    run, export = str(tmp_path / "run"), str(tmp_path / "export")
    train = ["train", "--init", FIXTURE, "--data", str(tiny_corpus), "--out", run, "--batch-size", "2",
             "--eval-windows", "2", "--quiet"]
    assert main(train + ["--n-layer", "3"]) == 2
    assert "error: --n-layer 3 contradicts the model in --init" in capsys.readouterr().err
    assert main(train + ["--max-steps", "2", "--n-layer", "2"]) == 0
    assert f"init: the weights and the 320-token tokenizer of {FIXTURE}" in capsys.readouterr().out
    assert main(["export", "--checkpoint", run, "--out", export]) == 0
    assert f"wrote {export}" in capsys.readouterr().out
    trained, _ = load_model(run)
    exported, _ = load_model(export)
    for name, array in trained.state_dict().items():
        assert np.array_equal(exported.state_dict()[name], array), name
    outputs = []
    for checkpoint in (run, export):
        assert main(["generate", "--checkpoint", checkpoint, "--prompt", "The dog", "--max-new-tokens", "6",
                     "--seed", "5"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] and outputs[0].startswith("The dog")


# ---- against transformers, built inside the test ----

@pytest.fixture(scope="module")
def transformers_modules():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before the import, which reads it: everything here is local
    torch = pytest.importorskip("torch", reason="transformers' GPT-2 runs on torch")
    transformers = pytest.importorskip("transformers", reason="the round trips need transformers")
    transformers.logging.set_verbosity_error()
    return torch, transformers


@pytest.fixture(scope="module")
def random_hf_gpt2(transformers_modules, tmp_path_factory):
    """A tiny random GPT2LMHeadModel (transformers' own initialisation, biases and gains made random too), saved."""
    torch, transformers = transformers_modules
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                     bos_token_id=None, eos_token_id=None, initializer_range=0.2)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ln_" in name or name.endswith("bias"):
                param.add_(torch.randn_like(param) * 0.2)
    folder = tmp_path_factory.mktemp("hf") / "gpt2"
    model.save_pretrained(folder)
    return model, folder


@pytest.mark.parity
def test_logits_equal_transformers_in_float32_and_float64(random_hf_gpt2, transformers_modules, tmp_path):
    torch, _ = transformers_modules
    hf_model, folder = random_hf_gpt2
    ids = np.random.default_rng(1).integers(0, 300, size=(2, 40))
    model, _ = load_pretrained(folder)
    with torch.no_grad():
        expected = hf_model(torch.tensor(ids)).logits.numpy()
    got = logits_of(model, ids)
    assert got.dtype == np.float32
    assert np.abs(got - expected).max() <= FLOAT32_TOLERANCE * np.abs(expected).max()

    hf_double = type(hf_model)(hf_model.config).double().eval()
    hf_double.load_state_dict(hf_model.state_dict())
    hf_double.save_pretrained(tmp_path / "double")
    double, _ = load_pretrained(tmp_path / "double")
    assert double.config.dtype == "float64"
    with torch.no_grad():
        expected = hf_double(torch.tensor(ids)).logits.numpy()
    assert np.abs(logits_of(double, ids) - expected).max() <= FLOAT64_TOLERANCE


@pytest.mark.parity
def test_greedy_generation_equals_transformers_generate(random_hf_gpt2, transformers_modules):
    torch, _ = transformers_modules
    hf_model, folder = random_hf_gpt2
    model, _ = load_pretrained(folder)
    prompt = [17, 4, 250, 96]
    with torch.no_grad():
        expected = hf_model.generate(torch.tensor([prompt]), max_new_tokens=30, do_sample=False, use_cache=True,
                                     pad_token_id=0)[0, len(prompt):].tolist()
    for use_cache in (True, False):
        assert list(generate_tokens(model, prompt, 30, temperature=0, use_cache=use_cache)) == expected
    assert len(set(expected)) > 3


@pytest.mark.parity
@pytest.mark.parametrize("pattern", ["gpt4", "gpt2"])
def test_an_exported_folder_loads_in_transformers_with_our_logits_and_ids(transformers_modules, tmp_path, pattern):
    torch, transformers = transformers_modules
    from npllm.data.sources import load_corpus

    text = load_corpus("docs").text[:300_000]
    tokenizer = BPETokenizer.train(text, vocab_size=1024, pattern=pattern, special_tokens=["<|endoftext|>"])
    model = tiny_npllm_folder(tmp_path / "export", tokenizer, seed=11)
    hf_model, info = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "export", output_loading_info=True)
    assert all(not keys for keys in info.values()), info  # no missing, unexpected or mis-shaped weights
    ids = np.random.default_rng(2).integers(0, tokenizer.vocab_size, size=(2, 32))
    with torch.no_grad():
        expected = hf_model.eval()(torch.tensor(ids)).logits.numpy()
    got = logits_of(model, ids)
    assert np.abs(got - expected).max() <= FLOAT32_TOLERANCE * np.abs(expected).max()

    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "export")
    samples = VARIED_TEXTS + [text[start:start + 2000] for start in range(0, len(text), 30_000)]
    for sample in samples:
        assert hf_tokenizer(sample)["input_ids"] == tokenizer.encode_ordinary(sample), sample[:60]
    assert hf_tokenizer("a<|endoftext|>b")["input_ids"] == tokenizer.encode("a<|endoftext|>b", allowed_special="all")
    assert hf_tokenizer.eos_token == "<|endoftext|>"
