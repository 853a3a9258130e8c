"""Hugging Face BART folders: loading by name with transposed Linears, saving, BART's tokenizer; parity with transformers.

The parity tests build a tiny random ``BartForConditionalGeneration`` with ``transformers`` inside the test
(no hub: ``HF_HUB_OFFLINE=1``), save it, load it with npllm and compare logits and every parameter gradient
of the LM loss.  The tokenizer tests write a small BART-style vocab.json + merges.txt (GPT-2's merges learned
here, the ids shuffled as fairseq's dictionary shuffles them) and compare ids with ``BartTokenizer``.
"""

import json

import numpy as np
import pytest

import npllm
import npllm.functional as F
from npllm import no_grad
from npllm.io.safetensors import load_safetensors, save_safetensors
from npllm.models import BART, BARTConfig, BARTForConditionalGeneration
from npllm.pretrained import PretrainedError
from npllm.tokenizer import BARTTokenizer, BPETokenizer, TokenizerFileError
from npllm.tokenizer.files import gpt2_merges, gpt2_spelling

SIZES = dict(vocab_size=40, d_model=8, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
             decoder_attention_heads=4, encoder_ffn_dim=12, decoder_ffn_dim=10, max_position_embeddings=16)
SAMPLES = ["def forward(self, x):\n    return self.proj(x)  # (B, T, C)", "Hello <mask> world </s>  <mask>x",
           "é ü 😀 tabs\tand\nnewlines", "  leading spaces", ""]


def tiny_model(cls=BARTForConditionalGeneration, dtype="float32", seed=0):
    model = cls(BARTConfig(**SIZES, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, dtype=dtype))
    rng = np.random.default_rng(seed)
    for p in model.parameters():  # away from zero biases and unit gains
        p.data += rng.standard_normal(p.shape) * 0.1
    if cls is BARTForConditionalGeneration:
        model.final_logits_bias.data[...] = rng.standard_normal(model.final_logits_bias.shape)
    return model


def inputs(B=3, S=7, T=5, seed=0):
    """Source ids with padding (id 1) behind a mask, and decoder inputs behind the start token 2."""
    rng = np.random.default_rng(seed)
    source, target = rng.integers(3, 40, size=(B, S)), rng.integers(3, 40, size=(B, T))
    mask = np.ones_like(source)
    mask[1, 4:], mask[2, 2:] = 0, 0
    source[mask == 0] = 1
    target[:, 0] = 2
    return source, mask, target


# --- BART's tokenizer -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    """vocab.json + merges.txt as BART's look: <s> <pad> </s> <unk>, then tokens in shuffled order, <mask> last."""
    text = open(npllm.models.bart.__file__, encoding="utf-8").read()
    bpe = BPETokenizer.train(text, vocab_size=400, pattern="gpt2")
    by_rank = sorted(bpe.mergeable_ranks.items(), key=lambda item: item[1])
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for new_id, rank in enumerate(np.random.default_rng(0).permutation(len(by_rank))):
        vocab[gpt2_spelling(by_rank[rank][0])] = 4 + new_id
    vocab["<mask>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)  # in BART's vocab.json too: no merge makes it
    folder = tmp_path_factory.mktemp("bart-tokenizer")
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    merges = [f"{left} {right}" for left, right in gpt2_merges(bpe.mergeable_ranks)]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return folder


def test_bart_tokenizer_frames_maps_ids_and_decodes(tokenizer_folder):
    tokenizer = BARTTokenizer.from_folder(tokenizer_folder)
    assert (tokenizer.bos_id, tokenizer.pad_id, tokenizer.eos_id, tokenizer.mask_id) == (0, 1, 2, 400 + 4)
    assert tokenizer.vocab_size == 406
    assert tokenizer.decode([405, 4]) == "<|endoftext|>" + tokenizer.decode([4])  # decoded, never encoded
    assert 405 not in tokenizer.encode("<|endoftext|>")
    for text in SAMPLES:
        ids = tokenizer.encode(text)
        assert ids[0] == 0 and ids[-1] == 2
        assert tokenizer.decode(ids) == text.replace("<mask>", "").replace("</s>", "")
    assert tokenizer.decode(tokenizer.encode("a <mask> b"), skip_special_tokens=False) == "<s>a <mask> b</s>"
    ordinary = tokenizer.encode_ordinary("return self")
    assert ordinary == tokenizer.encode("return self")[1:-1] and max(ordinary) < 404


def test_bart_tokenizer_round_trips_its_files(tokenizer_folder, tmp_path):
    tokenizer = BARTTokenizer.from_folder(tokenizer_folder)
    tokenizer.save(tmp_path)
    again = BARTTokenizer.from_folder(tmp_path)
    assert json.loads((tmp_path / "vocab.json").read_text()) == json.loads((tokenizer_folder / "vocab.json").read_text())
    assert all(again.encode(text) == tokenizer.encode(text) for text in SAMPLES)


def test_a_bpe_tokenizer_with_barts_special_tokens_becomes_a_bart_tokenizer():
    specials = {"<s>": 300, "<pad>": 301, "</s>": 302, "<unk>": 303, "<mask>": 304}
    bpe = BPETokenizer.train("the cat sat on the mat " * 20, vocab_size=300, pattern="gpt2", special_tokens=specials)
    bart = BARTTokenizer.from_bpe(bpe)
    assert bart.encode("the cat <mask>") == [300, *bpe.encode_ordinary("the cat "), 304, 302]
    with pytest.raises(ValueError, match="no id for the special token '<pad>'"):
        BARTTokenizer.from_bpe(BPETokenizer.train("abc", vocab_size=257, pattern="gpt2",
                                                  special_tokens={"<s>": 300}))


def test_bad_tokenizer_files_are_named(tokenizer_folder, tmp_path):
    (tmp_path / "vocab.json").write_text(json.dumps({"<s>": 0}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(TokenizerFileError, match=r"vocab.json: no entry for byte"):
        BARTTokenizer.from_folder(tmp_path)
    vocab = json.loads((tokenizer_folder / "vocab.json").read_text())
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\nĠ t h\n")
    with pytest.raises(TokenizerFileError, match=r"merges.txt, line 2: expected two tokens"):
        BARTTokenizer.from_folder(tmp_path)
    del vocab["<mask>"]
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(TokenizerFileError, match="no id for the special token '<mask>'"):
        BARTTokenizer.from_folder(tmp_path)


@pytest.mark.parity
def test_bart_tokenizer_ids_equal_transformers(tokenizer_folder, tmp_path):
    transformers = pytest.importorskip("transformers")
    reference = transformers.BartTokenizer(str(tokenizer_folder / "vocab.json"), str(tokenizer_folder / "merges.txt"))
    ours = BARTTokenizer.from_folder(tokenizer_folder)
    for text in SAMPLES:
        assert ours.encode(text) == reference(text)["input_ids"], text
        assert ours.decode(ours.encode(text)) == reference.decode(reference(text)["input_ids"],
                                                                  skip_special_tokens=True)
    ours.save(tmp_path)
    saved = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert all(saved(text)["input_ids"] == ours.encode(text) for text in SAMPLES)


# --- folders --------------------------------------------------------------------------------
def test_save_then_load_gives_the_same_model_and_tokenizer(tmp_path, tokenizer_folder):
    model = tiny_model(dtype="float64")
    tokenizer = BARTTokenizer.from_folder(tokenizer_folder)
    npllm.save_pretrained(model, tokenizer, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "bart" and config["architectures"] == ["BartForConditionalGeneration"]
    assert config["d_model"] == 8 and config["decoder_start_token_id"] == 2
    tensors = load_safetensors(tmp_path / "model.safetensors")
    assert tensors["model.encoder.layers.0.fc1.weight"].shape == (12, 8)  # PyTorch's (out, in)
    assert "lm_head.weight" not in tensors and tensors["final_logits_bias"].shape == (1, 40)
    loaded, loaded_tokenizer = npllm.load_pretrained(tmp_path)
    assert isinstance(loaded, BARTForConditionalGeneration) and not loaded.training
    assert loaded.config == model.config
    for (name, ours), theirs in zip(model.state_dict().items(), loaded.state_dict().values()):
        np.testing.assert_array_equal(ours, theirs, err_msg=name)
    assert isinstance(loaded_tokenizer, BARTTokenizer)
    assert loaded_tokenizer.encode(SAMPLES[0]) == tokenizer.encode(SAMPLES[0])


def test_tied_copies_are_checked_and_a_bart_model_file_loads(tmp_path):
    model = tiny_model()
    npllm.save_pretrained(model, None, tmp_path)
    tensors = dict(load_safetensors(tmp_path / "model.safetensors"))
    shared = tensors["model.shared.weight"]
    save_safetensors(tmp_path / "model.safetensors", {**tensors, "lm_head.weight": shared,
                                                      "model.encoder.embed_tokens.weight": shared})
    loaded, _ = npllm.load_pretrained(tmp_path)
    np.testing.assert_array_equal(loaded.model.shared.weight.data, shared)
    save_safetensors(tmp_path / "model.safetensors", {**tensors, "lm_head.weight": shared + 1})
    with pytest.raises(PretrainedError, match="lm_head.weight differs from model.shared.weight"):
        npllm.load_pretrained(tmp_path)
    # a BartModel's file: no "model." prefix, no final_logits_bias
    save_safetensors(tmp_path / "model.safetensors", {name.removeprefix("model."): array for name, array in
                                                      tensors.items() if name != "final_logits_bias"})
    loaded, _ = npllm.load_pretrained(tmp_path)
    assert not loaded.final_logits_bias.data.any()
    np.testing.assert_array_equal(loaded.model.decoder.layers[1].fc2.weight.data, model.model.decoder.layers[1].fc2.weight.data)


def test_a_bart_without_head_saves_as_a_bart_model(tmp_path):
    model = tiny_model(BART)
    npllm.save_pretrained(model, None, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["BartModel"]
    assert "shared.weight" in load_safetensors(tmp_path / "model.safetensors")


@pytest.mark.parametrize("change, message", [
    (lambda c, t: c.update(normalize_before=True), "normalize_before is True; npllm's BART builds"),
    (lambda c, t: c.update(activation_function="relu"), "activation_function must be one of"),
    (lambda c, t: c.update(d_model=12), "tensor model.shared.weight has shape (40, 8), but config.json"),
    (lambda c, t: t.pop("model.decoder.layers.1.fc2.bias"), "missing tensor model.decoder.layers.1.fc2.bias"),
    (lambda c, t: t.update({"classification_head.dense.weight": np.zeros(2)}), "not part of BART's"),
    (lambda c, t: c.update(tie_word_embeddings=False), "tie_word_embeddings is False"),
])
def test_a_folder_npllm_cannot_build_is_one_line(tmp_path, change, message):
    npllm.save_pretrained(tiny_model(), None, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    tensors = dict(load_safetensors(tmp_path / "model.safetensors"))
    change(config, tensors)
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_safetensors(tmp_path / "model.safetensors", tensors)
    with pytest.raises(PretrainedError) as error:
        npllm.load_pretrained(tmp_path)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_tokenizer_bart_files_cannot_hold_is_refused_before_writing(tmp_path):
    gpt4 = BPETokenizer.train("the cat sat", vocab_size=265, pattern="gpt4",
                              special_tokens={t: 300 + i for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])})
    with pytest.raises(PretrainedError, match="GPT-2's split pattern only"):
        npllm.save_pretrained(tiny_model(), gpt4, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- parity with transformers ---------------------------------------------------------------
def hugging_face_bart(tmp_path, torch_dtype, **overrides):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.BartConfig(**{**SIZES, "dropout": 0.0, "attention_dropout": 0.0,
                                        "activation_dropout": 0.0, **overrides})
    reference = transformers.BartForConditionalGeneration(config).to(torch_dtype)
    with torch.no_grad():
        for param in reference.parameters():  # away from zero biases and unit gains
            param.add_(torch.randn_like(param) * 0.1)
        reference.final_logits_bias.normal_()
    reference.save_pretrained(tmp_path)
    return torch, reference


def their_gradient(reference, name, model):
    grad = dict(reference.named_parameters())[name].grad.numpy()
    module = model.get_submodule(name.rpartition(".")[0])
    return grad.T if isinstance(module, npllm.nn.Linear) and name.endswith(".weight") else grad  # (out, in)


@pytest.mark.parity
@pytest.mark.parametrize("dtype, tolerance", [
    ("float64", 1e-10),
    # float32: both sides round every product and sum to 24 bits in their own order (BLAS blocking, softmax,
    # LayerNorm's variance), ~1e-7 relative per op, grown through 2 + 2 post-LN layers (each normalising twice
    # or three times) and the embeddings' LayerNorms: 2e-5 of the largest value, as BERT's parity allows
    ("float32", 2e-5),
])
@pytest.mark.parametrize("scale_embedding", [False, True])
def test_logits_and_every_gradient_equal_transformers(tmp_path, dtype, tolerance, scale_embedding):
    torch, reference = hugging_face_bart(tmp_path, getattr(__import__("torch"), dtype),
                                         scale_embedding=scale_embedding)
    model, _ = npllm.load_pretrained(tmp_path)
    assert isinstance(model, BARTForConditionalGeneration) and model.config.dtype == dtype
    source, mask, decoder_input = inputs()
    labels = np.concatenate([decoder_input[:, 1:], np.full((3, 1), 2)], axis=1)
    labels[0, -2:] = -100  # ignored positions
    out = reference(input_ids=torch.tensor(source), attention_mask=torch.tensor(mask),
                    decoder_input_ids=torch.tensor(decoder_input), labels=torch.tensor(labels))
    out.loss.backward()
    model.train()  # (no dropout: every probability is 0)
    logits = model(source, decoder_input, mask)
    theirs = out.logits.detach().numpy()
    np.testing.assert_allclose(logits.data, theirs, rtol=0, atol=tolerance * np.abs(theirs).max())
    loss = F.cross_entropy(logits.reshape(-1, 40), labels.reshape(-1))
    loss.backward()
    assert abs(loss.item() - out.loss.item()) <= tolerance * abs(out.loss.item())
    worst = 0.0
    for name, param in model.named_parameters():
        if not param.requires_grad:  # final_logits_bias: a buffer there, frozen here
            assert dict(reference.named_buffers())[name].grad is None
            continue
        expected = their_gradient(reference, name, model)
        scale = max(np.abs(expected).max(), 1e-3)
        np.testing.assert_allclose(param.grad, expected, rtol=0, atol=tolerance * scale, err_msg=name)
        worst = max(worst, np.abs(param.grad - expected).max() / scale)
    print(f"{dtype}: worst gradient error {worst:.2e} of each gradient's largest entry")


@pytest.mark.parity
def test_cached_decoder_steps_equal_transformers_with_past_key_values(tmp_path):
    torch, reference = hugging_face_bart(tmp_path, __import__("torch").float64)
    reference.eval()
    model, _ = npllm.load_pretrained(tmp_path)
    source, mask, decoder_input = inputs()
    with torch.no_grad():
        encoder_out = reference.get_encoder()(input_ids=torch.tensor(source), attention_mask=torch.tensor(mask))
        past, theirs = None, []
        for t in range(decoder_input.shape[1]):
            out = reference(encoder_outputs=encoder_out, attention_mask=torch.tensor(mask), past_key_values=past,
                            decoder_input_ids=torch.tensor(decoder_input[:, t:t + 1]), use_cache=True)
            past = out.past_key_values
            theirs.append(out.logits.numpy())
    with no_grad():
        memory = model.encode(source, mask)
        np.testing.assert_allclose(memory.data, encoder_out.last_hidden_state.numpy(), rtol=0, atol=1e-12)
        cache = model.new_decoder_cache(memory, mask)
        ours = [model.decode(decoder_input[:, t:t + 1], cache=cache).data for t in range(decoder_input.shape[1])]
    np.testing.assert_allclose(np.concatenate(ours, 1), np.concatenate(theirs, 1), rtol=0, atol=1e-10)


@pytest.mark.parity
@pytest.mark.parametrize("cls, architecture", [(BARTForConditionalGeneration, "BartForConditionalGeneration"),
                                               (BART, "BartModel")])
def test_transformers_loads_what_npllm_saves(tmp_path, cls, architecture):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = tiny_model(cls, dtype="float64")
    npllm.save_pretrained(model, None, tmp_path)
    reference = getattr(transformers, architecture).from_pretrained(tmp_path, dtype=torch.float64).eval()
    source, mask, decoder_input = inputs()
    with torch.no_grad():
        out = reference(input_ids=torch.tensor(source), attention_mask=torch.tensor(mask),
                        decoder_input_ids=torch.tensor(decoder_input))
    with no_grad():
        ours = model(source, decoder_input, mask).data
    theirs = out.logits if cls is BARTForConditionalGeneration else out.last_hidden_state
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=0, atol=1e-10)
