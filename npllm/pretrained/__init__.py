"""Hugging Face folders <-> npllm models and tokenizers: ``load_pretrained`` and ``save_pretrained``.

A Hugging Face model folder is what ``save_pretrained`` writes in the
``transformers`` library, and what the hub serves::

    config.json                     the architecture: "model_type" ("gpt2", "bert", "bart") and its sizes
    model.safetensors               the weights by name (or shards, listed in model.safetensors.index.json)
    vocab.json + merges.txt         a byte-level BPE tokenizer (GPT-2; BART's with fairseq's ids), or
    vocab.txt                       a WordPiece one (BERT); tokenizer.json may hold either

``load_pretrained(path)`` reads ``config.json``, picks the format module of
its ``model_type`` (``FORMATS``: one module per architecture, beside this
file), which builds the npllm model from the config, maps the checkpoint's
tensor names and layouts onto it, and reads the tokenizer.  It returns
``(model, tokenizer)``; a folder without tokenizer files gives ``None`` for
the tokenizer.  ``save_pretrained(model, tokenizer, path)`` writes such a
folder back, so ``transformers`` loads it.  ``folder.py`` holds what every
format shares: reading ``config.json`` and the (possibly sharded) weights
with one-line errors.

Every problem (no config, an unknown ``model_type``, a missing tensor, a
config that disagrees with the tensors) is a ``PretrainedError``: one line
naming the file and the thing.
"""

import importlib
from pathlib import Path

from npllm.pretrained.folder import PretrainedError, read_config

# model_type in config.json -> the module (beside this file) that reads and writes that architecture
FORMATS = {}
FORMATS["gpt2"] = "npllm.pretrained.gpt2"
FORMATS["bert"] = "npllm.pretrained.bert"
FORMATS["bart"] = "npllm.pretrained.bart"


def load_pretrained(path):
    """The npllm model and tokenizer of the Hugging Face folder ``path``: ``(model, tokenizer or None)``."""
    folder = Path(path)
    config = read_config(folder)
    return _format(config.get("model_type"), folder / "config.json").load(folder, config)


def save_pretrained(model, tokenizer, path):
    """Write ``model`` (and ``tokenizer``, unless None) as a Hugging Face folder at ``path``."""
    for model_type in FORMATS:
        module = _format(model_type, None)
        if module.handles(model):
            return module.save(model, tokenizer, Path(path))
    raise PretrainedError(f"save_pretrained: no Hugging Face format for a {type(model).__name__}"
                          f" (known: {', '.join(FORMATS) or 'none'})")


def _format(model_type, config_path):
    if model_type not in FORMATS:
        raise PretrainedError(f"{config_path}: model_type {model_type!r} is not one npllm reads"
                              f" (known: {', '.join(sorted(FORMATS)) or 'none'})")
    return importlib.import_module(FORMATS[model_type])


__all__ = ["load_pretrained", "save_pretrained", "PretrainedError", "FORMATS"]
