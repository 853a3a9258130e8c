"""Reading a Hugging Face folder: config.json, one or many weight files, and one-line errors for what is wrong."""

import json

import numpy as np
import pytest

import npllm
from npllm.io.safetensors import save_safetensors
from npllm.nn import Linear
from npllm.pretrained import PretrainedError
from npllm.pretrained.folder import read_weights, take_tensors


def test_an_unknown_model_type_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mamba"}))
    with pytest.raises(PretrainedError, match=r"config.json: model_type 'mamba' is not one npllm reads"):
        npllm.load_pretrained(tmp_path)


@pytest.mark.parametrize("make, message", [
    (lambda folder: None, "config.json: no such file"),
    (lambda folder: (folder / "config.json").write_text("{not json"), "config.json: not a readable JSON file"),
    (lambda folder: (folder / "config.json").write_text("[1, 2]"), "expected a JSON object, got a list"),
], ids=["missing", "not JSON", "not an object"])
def test_a_bad_config_is_one_line(tmp_path, make, message):
    make(tmp_path)
    with pytest.raises(PretrainedError, match=message):
        npllm.load_pretrained(tmp_path)
    with pytest.raises(PretrainedError, match="not a folder"):
        npllm.load_pretrained(tmp_path / "nowhere")


def test_sharded_weights_read_as_one_dict(tmp_path):
    first, second = {"a": np.arange(3.0)}, {"b": np.ones((2, 2), np.float32)}
    save_safetensors(tmp_path / "model-00001-of-00002.safetensors", first)
    save_safetensors(tmp_path / "model-00002-of-00002.safetensors", second)
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    tensors = read_weights(tmp_path)
    assert sorted(tensors) == ["a", "b"] and np.array_equal(tensors["b"], second["b"])
    index["weight_map"]["c"] = "model-00002-of-00002.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(PretrainedError, match="lists tensors its shards do not hold: c"):
        read_weights(tmp_path)


def test_missing_tensors_are_listed(tmp_path):
    with pytest.raises(PretrainedError, match=r"missing tensors x, y$"):
        take_tensors({"a": 1}, ["a", "x", "y"], tmp_path)


def test_save_pretrained_refuses_a_model_without_a_format(tmp_path):
    with pytest.raises(PretrainedError, match="no Hugging Face format for a Linear"):
        npllm.save_pretrained(Linear(2, 2), None, tmp_path)
