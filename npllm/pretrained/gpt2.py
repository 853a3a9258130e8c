"""GPT-2 in Hugging Face's format: a folder <-> ``npllm.models.GPT`` and its ``BPETokenizer``.

What ``transformers``' ``GPT2LMHeadModel.save_pretrained`` writes, and the hub serves::

    config.json          "model_type": "gpt2", n_embd, n_layer, n_head, n_positions, vocab_size,
                         layer_norm_epsilon, activation_function ("gelu_new": GPT-2's tanh GELU)
    model.safetensors    transformer.wte.weight, transformer.h.0.attn.c_attn.weight, ...
    vocab.json, merges.txt, tokenizer.json, tokenizer_config.json    the tokenizer

npllm's GPT was written with GPT-2's names and layout, so the tensors map onto
it one to one: the names lose the ``transformer.`` prefix (OpenAI's own
files have none), and every matrix is already (in, out), the layout of
GPT-2's ``Conv1D``.  Three things in such files are not parameters of ours:
``lm_head.weight`` (the output projection, which is tied to ``wte``: checked
equal to it and dropped), and the ``attn.bias`` / ``attn.masked_bias``
buffers some checkpoints carry (the causal mask, which our attention builds
itself; skipped).  A config that disagrees with the tensors, a missing or an
unknown tensor, or a variant npllm does not build (another activation, an
untied head, cross-attention) is one line naming the file and the setting.

Loading copies nothing it need not.  The model is built ``uninitialised``
(no random draw), and its parameters become the memory-mapped float32 arrays
of the file itself (``folder.read_weights``); float16 and bfloat16 files are
widened to float32, the precision npllm computes in, and a float64 file
gives a float64 model.  Rebinding ``param.data`` this way is safe only
before an optimizer holds views of the parameters, which is why it happens
here, right after the model is built, and nowhere else.

The tokenizer comes from tokenizer.json when the folder has one (it carries
the split pattern), else from vocab.json + merges.txt (GPT-2's pattern);
a folder with neither gives ``None``.  ``save`` writes all of them, so that
``AutoTokenizer.from_pretrained`` gives our ids: GPT-2's pattern under
GPT-2's own tokenizer class, any other pattern (npllm trains with GPT-4's)
as a plain ``tokenizers`` pipeline that the tokenizer.json spells out.

Dropout probabilities are training settings, not part of the model's
function: a loaded model has none (``npllm train --init`` sets its own), and
``save`` writes the model's one ``dropout`` as GPT-2's three.
"""

import json
from pathlib import Path

import numpy as np

from npllm.errors import SettingError
from npllm.io.atomic import atomic_write_text
from npllm.io.safetensors import save_safetensors
from npllm.models import GPT, GPTConfig
from npllm.nn.layers import uninitialised
from npllm.pretrained.folder import (CONFIG_FILE, FLOAT_WIDTHS, WEIGHTS_FILE, WEIGHTS_INDEX_FILE, PretrainedError,
                                     read_weights, take_tensors)
from npllm.tokenizer import BPETokenizer, GPT2_PATTERN
from npllm.tokenizer.files import TokenizerFileError, read_gpt2_files, write_gpt2_files
from npllm.tokenizer.huggingface import read_tokenizer_json, write_tokenizer_json

PREFIX = "transformer."
TIED_HEAD = "lm_head.weight"
MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")  # the causal mask some checkpoints store per block
GPT2_GELUS = ("gelu_new", "gelu_pytorch_tanh")  # two names for the same tanh approximation
END_OF_TEXT = "<|endoftext|>"
VOCAB_FILE, MERGES_FILE, TOKENIZER_FILE = "vocab.json", "merges.txt", "tokenizer.json"
TOKENIZER_CONFIG_FILE, SPECIAL_TOKENS_FILE = "tokenizer_config.json", "special_tokens_map.json"


def handles(model) -> bool:
    return isinstance(model, GPT)


# ---- loading ------------------------------------------------------------------------------

def load(folder: Path, config: dict):
    """``(GPT, BPETokenizer or None)`` from a Hugging Face GPT-2 folder whose config.json is ``config``."""
    tensors = without_prefix(read_weights(folder))
    weights = folder / (WEIGHTS_INDEX_FILE if (folder / WEIGHTS_INDEX_FILE).is_file() else WEIGHTS_FILE)
    dtype = FLOAT_WIDTHS.get(tensors["wte.weight"].dtype, "float32") if "wte.weight" in tensors else "float32"
    with uninitialised():
        model = GPT(gpt_config(config, folder / CONFIG_FILE, dtype))
    parameters = dict(model.named_parameters())
    found = take_tensors(tensors, parameters, weights)
    check_tied_head(tensors, weights)
    unknown = sorted(set(tensors) - set(parameters) - {TIED_HEAD} - set(mask_buffers(tensors)))
    if unknown:
        raise PretrainedError(f"{weights}: tensors that are not part of GPT-2's language model: "
                              f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    for name, param in parameters.items():
        if found[name].shape != param.shape:
            raise PretrainedError(f"{weights}: tensor {name} has shape {found[name].shape}, but {CONFIG_FILE}"
                                  f" ({shape_settings(model.config)}) makes it {param.shape}")
        param.data = found[name].astype(dtype, copy=False)  # a float32 file's view is kept as it is
    return model, read_tokenizer(folder)


def without_prefix(tensors: dict) -> dict:
    """The tensors by our names: ``transformer.h.0...`` -> ``h.0...`` (OpenAI's own files have no prefix)."""
    return {name.removeprefix(PREFIX): array for name, array in tensors.items()}


def mask_buffers(tensors: dict) -> list[str]:
    return [name for name in tensors if name.startswith("h.") and name.endswith(MASK_BUFFERS)]


def check_tied_head(tensors: dict, weights: Path) -> None:
    if TIED_HEAD in tensors and "wte.weight" in tensors and not np.array_equal(tensors[TIED_HEAD], tensors["wte.weight"]):
        raise PretrainedError(f"{weights}: {TIED_HEAD} differs from wte.weight; npllm's GPT ties its output"
                              " projection to the token embedding, as GPT-2 does")


def gpt_config(config: dict, path: Path, dtype: str) -> GPTConfig:
    """The GPTConfig that config.json describes; a GPT-2 variant npllm does not build is refused, naming the setting."""
    def setting(name, default=None, *aliases):
        for key in (name, *aliases):
            if config.get(key) is not None:
                return config[key]
        if default is None:
            raise PretrainedError(f"{path}: no {name} (every GPT-2 config.json gives it)")
        return default

    n_embd = setting("n_embd")
    requirements = [  # (setting, its value here, the one value npllm builds)
        ("activation_function", setting("activation_function", "gelu_new"), GPT2_GELUS),
        ("n_inner", config.get("n_inner") or 4 * n_embd, (4 * n_embd,)),
        ("tie_word_embeddings", setting("tie_word_embeddings", True), (True,)),
        ("scale_attn_weights", setting("scale_attn_weights", True), (True,)),
        ("scale_attn_by_inverse_layer_idx", setting("scale_attn_by_inverse_layer_idx", False), (False,)),
        ("add_cross_attention", setting("add_cross_attention", False), (False,)),
    ]
    for name, value, supported in requirements:
        if value not in supported:
            raise PretrainedError(f"{path}: {name} is {value!r}; npllm's GPT builds GPT-2 with"
                                  f" {' or '.join(map(repr, supported))}")
    try:
        return GPTConfig(vocab_size=setting("vocab_size"), context_length=setting("n_positions", None, "n_ctx"),
                         n_layer=setting("n_layer"), n_head=setting("n_head"), n_embd=n_embd,
                         layer_norm_eps=setting("layer_norm_epsilon", 1e-5), dtype=dtype)
    except (SettingError, TypeError) as error:
        raise PretrainedError(f"{path}: {str(error).replace('`', '')}") from error


def shape_settings(config: GPTConfig) -> str:
    return (f"vocab_size {config.vocab_size}, n_positions {config.context_length}, n_embd {config.n_embd},"
            f" n_layer {config.n_layer}")


def read_tokenizer(folder: Path) -> BPETokenizer | None:
    """The folder's tokenizer: from tokenizer.json, else vocab.json + merges.txt, else None."""
    try:
        if (folder / TOKENIZER_FILE).is_file():
            pattern, ranks, special_tokens = read_tokenizer_json(folder / TOKENIZER_FILE)
            source = folder / TOKENIZER_FILE
        elif (folder / VOCAB_FILE).is_file() and (folder / MERGES_FILE).is_file():
            (ranks, special_tokens), pattern = read_gpt2_files(folder / VOCAB_FILE, folder / MERGES_FILE), GPT2_PATTERN
            source = folder / VOCAB_FILE
        else:
            return None
    except TokenizerFileError as error:
        raise PretrainedError(str(error)) from error
    try:
        return BPETokenizer(ranks, pattern, special_tokens)
    except ValueError as error:  # a missing byte, an id used twice, a regex Python cannot compile
        raise PretrainedError(f"{source}: {error}") from error


# ---- saving -------------------------------------------------------------------------------

def save(model: GPT, tokenizer: BPETokenizer | None, folder: Path) -> Path:
    """Write ``model`` (and ``tokenizer``) as a folder ``GPT2LMHeadModel.from_pretrained`` loads; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    end_of_text = tokenizer.special_tokens.get(END_OF_TEXT) if tokenizer is not None else None
    atomic_write_text(folder / CONFIG_FILE, json.dumps(hugging_face_config(model.config, end_of_text), indent=2) + "\n")
    save_safetensors(folder / WEIGHTS_FILE, {PREFIX + name: array for name, array in model.state_dict().items()},
                     metadata={"format": "pt"})  # transformers reads files whose format it knows
    if tokenizer is not None:
        save_tokenizer(tokenizer, folder, model.config.context_length)
    return folder


def hugging_face_config(config: GPTConfig, end_of_text: int | None) -> dict:
    """config.json for ``transformers``' GPT2Config."""
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": config.vocab_size,
        "n_positions": config.context_length,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": config.layer_norm_eps,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "use_cache": True,
        "bos_token_id": end_of_text,
        "eos_token_id": end_of_text,
        "dtype": config.dtype,
    }


def save_tokenizer(tokenizer: BPETokenizer, folder: Path, context_length: int) -> None:
    """vocab.json, merges.txt, tokenizer.json, and the small files that tell ``transformers`` how to use them."""
    ranks, special_tokens = tokenizer.mergeable_ranks, tokenizer.special_tokens
    try:
        write_gpt2_files(folder / VOCAB_FILE, folder / MERGES_FILE, ranks, special_tokens)
        write_tokenizer_json(folder / TOKENIZER_FILE, tokenizer.pattern, ranks, special_tokens)
    except ValueError as error:  # a token no merge makes, a pattern the hub's regex engine reads differently
        raise PretrainedError(f"{folder}: cannot write the tokenizer in Hugging Face's format: {error}") from error
    roles = {role: END_OF_TEXT for role in ("bos_token", "eos_token", "unk_token")} if END_OF_TEXT in special_tokens else {}
    # GPT2Tokenizer rebuilds GPT-2's own pipeline; any other pattern needs tokenizer.json's pipeline as written
    tokenizer_class = "GPT2Tokenizer" if tokenizer.pattern == GPT2_PATTERN else "PreTrainedTokenizerFast"
    tokenizer_config = {"tokenizer_class": tokenizer_class, "model_max_length": context_length,
                        "add_prefix_space": False, "clean_up_tokenization_spaces": False, **roles}
    atomic_write_text(folder / TOKENIZER_CONFIG_FILE, json.dumps(tokenizer_config, indent=2) + "\n")
    atomic_write_text(folder / SPECIAL_TOKENS_FILE, json.dumps(roles, indent=2) + "\n")
