"""BART in Hugging Face's format: a folder <-> ``npllm.models.BARTForConditionalGeneration`` and a ``BARTTokenizer``.

What ``transformers``' ``BartForConditionalGeneration.save_pretrained`` writes::

    config.json          "model_type": "bart", d_model, encoder_layers, decoder_layers, *_attention_heads,
                         *_ffn_dim, max_position_embeddings, activation_function, scale_embedding, the token ids
    model.safetensors    final_logits_bias, model.shared.weight, model.encoder.embed_positions.weight,
                         model.encoder.layers.0.self_attn.k_proj.weight, ..., model.decoder.layers.0.encoder_attn...
    vocab.json, merges.txt    GPT-2's byte-level BPE with fairseq's ids (``npllm.tokenizer.bart``)

npllm's BART carries the same names, so the tensors map one to one; PyTorch's
Linear stores its weight (out, in) and npllm's (in, out), so every Linear
weight is transposed on the way in and out.  The tied copies of the shared
table that some files carry (``model.encoder.embed_tokens.weight``,
``model.decoder.embed_tokens.weight``, ``lm_head.weight``; newer files leave
them out) must equal ``model.shared.weight`` and are dropped; a file without
``final_logits_bias`` gets zeros.  A ``BartModel`` file (the same names
without ``model.``) loads as well, into the model with its tied head.

The model takes the checkpoint's precision (float64 stays float64, any other
float type becomes float32) and comes back in eval mode, as
``from_pretrained``'s does; config.json's dropout settings are kept for
fine-tuning.  A missing or unknown tensor, a shape that disagrees with
config.json, or a variant npllm does not build (pre-LN mBART,
``normalize_before``; an untied head; another activation) is one line
naming the file and the setting.
"""

import json
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np

from npllm.errors import SettingError
from npllm.io.atomic import atomic_write_text
from npllm.io.safetensors import save_safetensors
from npllm.models.bart import BART, BARTConfig, BARTForConditionalGeneration
from npllm.nn.layers import uninitialised
from npllm.pretrained.folder import (CONFIG_FILE, FLOAT_WIDTHS, WEIGHTS_FILE, WEIGHTS_INDEX_FILE, PretrainedError,
                                     copy_into, is_linear_weight, read_weights, take_tensors)
from npllm.tokenizer import GPT2_PATTERN, BPETokenizer, TokenizerFileError
from npllm.tokenizer.bart import MERGES_FILE, VOCAB_FILE, BARTTokenizer

PREFIX = "model."
SHARED = "model.shared.weight"
TIED_COPIES = ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight")
BIAS = "final_logits_bias"
CONFIG_FIELDS = [field.name for field in fields(BARTConfig) if field.name != "dtype"]
# settings of Hugging Face's BartConfig (and of fairseq-converted configs) that change the function: what npllm builds
REQUIREMENTS = {"normalize_before": False, "add_final_layer_norm": False, "normalize_embedding": True,
                "static_position_embeddings": False, "tie_word_embeddings": True, "add_bias_logits": False}


def handles(model) -> bool:
    return isinstance(model, (BART, BARTForConditionalGeneration))


# ---- loading ------------------------------------------------------------------------------

def load(folder: Path, config: dict):
    """``(BARTForConditionalGeneration, BARTTokenizer or None)`` from a Hugging Face BART folder."""
    weights = folder / (WEIGHTS_INDEX_FILE if (folder / WEIGHTS_INDEX_FILE).is_file() else WEIGHTS_FILE)
    tensors = _by_our_names(read_weights(folder))
    dtype = FLOAT_WIDTHS.get(tensors[SHARED].dtype, "float32") if SHARED in tensors else "float32"
    with uninitialised():
        model = BARTForConditionalGeneration(bart_config(config, folder / CONFIG_FILE, dtype))
    tensors.setdefault(BIAS, np.zeros((1, model.config.vocab_size), dtype=dtype))
    parameters = dict(model.named_parameters())
    found = take_tensors(tensors, parameters, weights)
    for copy in TIED_COPIES:
        if copy in tensors and not np.array_equal(tensors[copy], tensors[SHARED]):
            raise PretrainedError(f"{weights}: {copy} differs from {SHARED}; npllm's BART ties the embeddings of"
                                  " both stacks and the LM head to the one shared table, as BART does")
    unknown = sorted(set(tensors) - set(parameters) - set(TIED_COPIES))
    if unknown:
        raise PretrainedError(f"{weights}: tensors that are not part of BART's conditional-generation model: "
                              f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
    copy_into(model, found, weights, _shape_settings(model.config))
    return model.eval(), read_tokenizer(folder)


def _by_our_names(tensors: dict) -> dict:
    """The tensors under BartForConditionalGeneration's names (a BartModel's file has no ``model.`` prefix)."""
    if SHARED in tensors or "shared.weight" not in tensors:
        return dict(tensors)
    return {(name if name == BIAS else PREFIX + name): array for name, array in tensors.items()}


def bart_config(config: dict, path: Path, dtype: str) -> BARTConfig:
    """The BARTConfig config.json describes (Hugging Face's BartConfig defaults for keys it leaves out)."""
    for name, built in REQUIREMENTS.items():
        if name in config and config[name] != built:
            raise PretrainedError(f"{path}: {name} is {config[name]!r}; npllm's BART builds {name} = {built!r}")
    given = {name: config[name] for name in CONFIG_FIELDS if config.get(name) is not None}
    for name in ("forced_bos_token_id", "forced_eos_token_id"):  # None is a value of these: no forced token
        if name in config:
            given[name] = config[name]
    try:
        return BARTConfig(**{**HUGGING_FACE_DEFAULTS, **given}, dtype=dtype)
    except (SettingError, TypeError) as error:
        raise PretrainedError(f"{path}: {str(error).replace('`', '')}") from error


# what Hugging Face's BartConfig assumes for a key config.json leaves out (bart-large's sizes), where npllm's
# own defaults (bart-base's) differ
HUGGING_FACE_DEFAULTS = dict(d_model=1024, encoder_layers=12, decoder_layers=12, encoder_attention_heads=16,
                             decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096,
                             attention_dropout=0.0, activation_dropout=0.0)


def _shape_settings(config: BARTConfig) -> str:
    return (f"vocab_size {config.vocab_size}, d_model {config.d_model}, encoder_ffn_dim {config.encoder_ffn_dim},"
            f" decoder_ffn_dim {config.decoder_ffn_dim}, max_position_embeddings {config.max_position_embeddings}")


def read_tokenizer(folder: Path) -> BARTTokenizer | None:
    """The folder's tokenizer from vocab.json + merges.txt, or None if it has neither."""
    if not (folder / VOCAB_FILE).is_file() or not (folder / MERGES_FILE).is_file():
        return None
    try:
        return BARTTokenizer.from_folder(folder)
    except TokenizerFileError as error:
        raise PretrainedError(str(error)) from error


# ---- saving -------------------------------------------------------------------------------

def save(model, tokenizer, folder: Path) -> Path:
    """Write ``model`` (and ``tokenizer``) as a folder ``transformers`` loads; returns the folder.

    A ``BARTForConditionalGeneration`` is written as Hugging Face's, a ``BART``
    as a ``BartModel``; ``tokenizer`` is a ``BARTTokenizer``, or a
    ``BPETokenizer`` with GPT-2's pattern and BART's five special tokens.
    """
    with_head = isinstance(model, BARTForConditionalGeneration)
    tokenizer = _as_bart_tokenizer(tokenizer, folder)
    folder.mkdir(parents=True, exist_ok=True)
    config_json = config_to_json(model.config, "BartForConditionalGeneration" if with_head else "BartModel")
    atomic_write_text(folder / CONFIG_FILE, json.dumps(config_json, indent=2) + "\n")
    tensors = {name: (array.T if is_linear_weight(model, name) else array) for name, array in model.state_dict().items()}
    save_safetensors(folder / WEIGHTS_FILE, tensors, metadata={"format": "pt"})  # transformers reads "pt" files
    if tokenizer is not None:
        tokenizer.save(folder, model_max_length=model.config.max_position_embeddings)
    return folder


def _as_bart_tokenizer(tokenizer, folder: Path) -> BARTTokenizer | None:
    """``tokenizer`` as a BARTTokenizer that BART's files can hold, checked before anything is written."""
    if tokenizer is None:
        return None
    if not isinstance(tokenizer, (BARTTokenizer, BPETokenizer)):
        raise PretrainedError(f"{folder}: a BART folder holds a byte-level BPE tokenizer,"
                              f" not a {type(tokenizer).__name__}")
    if isinstance(tokenizer, BPETokenizer):
        try:
            tokenizer = BARTTokenizer.from_bpe(tokenizer)
        except ValueError as error:
            raise PretrainedError(f"{folder}: cannot write the tokenizer as BART's: {error}") from error
    if tokenizer.bpe.pattern != GPT2_PATTERN:
        raise PretrainedError(f"{folder}: BART's vocab.json + merges.txt hold GPT-2's split pattern only;"
                              " this tokenizer splits with another")
    return tokenizer


def config_to_json(config: BARTConfig, architecture: str) -> dict:
    """config.json for ``transformers``' BartConfig."""
    values = {name: value for name, value in asdict(config).items() if name != "dtype"}
    return {"model_type": "bart", "architectures": [architecture], **values, "tie_word_embeddings": True,
            "is_encoder_decoder": True, "encoder_layerdrop": 0.0, "decoder_layerdrop": 0.0, "use_cache": True,
            "dtype": config.dtype}
