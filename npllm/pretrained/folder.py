"""What every Hugging Face format shares: ``config.json`` and the weights, read with one-line errors.

Weights come as one ``model.safetensors`` or as shards: ``model.safetensors.index.json``
maps each tensor name to the shard file holding it (``{"weight_map": {name: file}}``).
``read_weights`` returns one name -> array dict either way, each array a view
of the memory-mapped file (``load_safetensors(memory_map=True)``): a format
module that keeps the float32 views as its parameters copies nothing.  A format module
then calls ``take_tensors`` to check that the names it needs are all there,
and ``copy_into`` to copy them into the model (``is_linear_weight``: the
tensors PyTorch stores transposed).
"""

import json
from pathlib import Path

import numpy as np

from npllm.errors import NpllmError
from npllm.io.safetensors import load_safetensors
from npllm.nn import Linear

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
FLOAT_WIDTHS = {np.dtype(np.float64): "float64"}  # a file in any other float type loads as float32


class PretrainedError(NpllmError):
    """A Hugging Face folder that npllm cannot read or write: one line naming the file and the problem."""


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PretrainedError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PretrainedError(f"{path}: not a readable JSON file ({error})") from error
    if not isinstance(value, dict):
        raise PretrainedError(f"{path}: expected a JSON object, got a {type(value).__name__}")
    return value


def read_config(folder: Path) -> dict:
    """The folder's config.json as a dict."""
    if not folder.is_dir():
        raise PretrainedError(f"{folder}: not a folder (a Hugging Face model is a folder with {CONFIG_FILE})")
    return read_json(folder / CONFIG_FILE)


def read_weights(folder: Path) -> dict[str, np.ndarray]:
    """Every tensor of the folder's weights, from ``model.safetensors`` or from the shards its index lists."""
    index_path = folder / WEIGHTS_INDEX_FILE
    if not index_path.is_file():
        return load_safetensors(folder / WEIGHTS_FILE, memory_map=True)
    weight_map = read_json(index_path).get("weight_map")
    if not isinstance(weight_map, dict):
        raise PretrainedError(f"{index_path}: has no \"weight_map\" object")
    tensors = {}
    for shard in sorted(set(weight_map.values())):
        tensors.update(load_safetensors(folder / shard, memory_map=True))
    missing = sorted(name for name in weight_map if name not in tensors)
    if missing:
        raise PretrainedError(f"{index_path}: lists tensors its shards do not hold: {', '.join(missing[:5])}")
    return tensors


def take_tensors(tensors: dict, names, where: Path) -> dict[str, np.ndarray]:
    """``{name: tensors[name]}`` for ``names``, or one line listing the names missing from ``where``."""
    missing = [name for name in names if name not in tensors]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise PretrainedError(f"{where}: missing tensor{'s' * (len(missing) > 1)} {', '.join(missing[:5])}{more}")
    return {name: tensors[name] for name in names}


def is_linear_weight(model, name: str) -> bool:
    """Whether parameter ``name`` is a Linear's weight: (in, out) in npllm, (out, in) in PyTorch's files."""
    module_name, _, leaf = name.rpartition(".")
    return leaf == "weight" and isinstance(model.get_submodule(module_name), Linear)


def copy_into(model, tensors: dict, where: Path, settings: str, file_name=lambda name: name) -> None:
    """Copy each parameter's tensor ``tensors[file_name(name)]`` into ``model``, PyTorch's Linear weights transposed.

    A tensor whose shape disagrees with the model config.json describes
    (``settings``: its sizes, as a phrase) is one line naming both.
    """
    for name, param in model.named_parameters():
        key = file_name(name)
        linear = is_linear_weight(model, name)
        array = tensors[key].T if linear else tensors[key]  # PyTorch's (out, in) -> npllm's (in, out)
        if array.shape != param.shape:
            raise PretrainedError(f"{where}: tensor {key} has shape {tensors[key].shape}, but {CONFIG_FILE}"
                                  f" ({settings}) makes it {param.shape[::-1] if linear else param.shape}")
        np.copyto(param.data, array)
