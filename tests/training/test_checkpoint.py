"""Checkpoints: the safetensors layout byte for byte, damaged files, atomic writes, whole-folder swaps."""

import json
import os
import stat
import struct

import numpy as np
import pytest

from npllm.io.atomic import FileWriteError, atomic_write, atomic_write_text
from npllm.io.safetensors import CheckpointError, load_safetensors, safetensors_metadata, save_safetensors
from npllm.training.checkpoint import load_checkpoint, save_checkpoint


def safetensors_bytes(header: dict, data: bytes) -> bytes:
    """A safetensors file built by hand from the specification, no padding."""
    header_bytes = json.dumps(header).encode()
    return struct.pack("<Q", len(header_bytes)) + header_bytes + data


def test_round_trip_keeps_every_dtype_shape_and_value(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "f64": rng.standard_normal((3, 4)),
        "f32": rng.standard_normal((2, 3, 5)).astype(np.float32),
        "f16": rng.standard_normal(7).astype(np.float16),
        "i64": rng.integers(-10**12, 10**12, size=(4,)),
        "i32": rng.integers(-1000, 1000, size=(2, 2)).astype(np.int32),
        "u16": rng.integers(0, 65535, size=(9,)).astype(np.uint16),
        "u8": np.arange(5, dtype=np.uint8),
        "bool": np.array([True, False, True]),
        "scalar": np.array(42),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "transposed": rng.standard_normal((3, 2)).astype(np.float32).T,  # not C-contiguous
        "big_endian": np.arange(4, dtype=">f4"),
    }
    path = tmp_path / "t.safetensors"
    save_safetensors(path, tensors, metadata={"format": "np"})
    loaded = load_safetensors(path)
    assert loaded.keys() == tensors.keys()
    for name, array in tensors.items():
        assert loaded[name].dtype == array.dtype.newbyteorder("=") and loaded[name].shape == array.shape, name
        np.testing.assert_array_equal(loaded[name], array, err_msg=name)
    assert safetensors_metadata(path) == {"format": "np"}
    loaded["f32"][0, 0, 0] = 1.0  # arrays come back writable


def test_writer_matches_the_specification_byte_for_byte(tmp_path):
    path = tmp_path / "t.safetensors"
    save_safetensors(path, {"b": np.array([1, 2], dtype=np.int16), "a": np.array([1.5], dtype=np.float32)})
    header = b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"I16","shape":[2],"data_offsets":[4,8]}}'
    header += b" " * (-len(header) % 8)
    expected = struct.pack("<Q", len(header)) + header + struct.pack("<f", 1.5) + struct.pack("<hh", 1, 2)
    assert path.read_bytes() == expected


def test_reader_accepts_a_hand_built_file_with_bfloat16(tmp_path):
    header = {"__metadata__": {"format": "pt"},
              "w": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]},
              "n": {"dtype": "U32", "shape": [], "data_offsets": [4, 8]}}
    bfloat16_of_one_and_minus_two = struct.pack("<HH", 0x3F80, 0xC000)
    path = tmp_path / "hand.safetensors"
    path.write_bytes(safetensors_bytes(header, bfloat16_of_one_and_minus_two + struct.pack("<I", 7)))
    loaded = load_safetensors(path)
    np.testing.assert_array_equal(loaded["w"], np.array([1.0, -2.0], dtype=np.float32))
    assert loaded["n"].shape == () and loaded["n"] == 7


GOOD_ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


@pytest.mark.parametrize("content, message", [
    (b"\x01\x00", "too short for the 8-byte header length"),
    (struct.pack("<Q", 10**6) + b"{}", "header length 1000000 exceeds"),
    (struct.pack("<Q", 5) + b"{nope", "header is not valid JSON"),
    (struct.pack("<Q", 2) + b"[]", "not an object"),
    (safetensors_bytes({"x": {**GOOD_ENTRY, "dtype": "F128"}}, bytes(8)), "unknown dtype 'F128'"),
    (safetensors_bytes({"x": {**GOOD_ENTRY, "shape": [-2]}}, bytes(8)), "invalid shape"),
    (safetensors_bytes({"x": {"dtype": "F32"}}, bytes(8)), "needs dtype, shape and data_offsets"),
    (safetensors_bytes({"x": {**GOOD_ENTRY, "data_offsets": [0, 12]}}, bytes(12)), "needs 8 bytes"),
    (safetensors_bytes({"x": GOOD_ENTRY}, bytes(5)), "truncated"),
    (safetensors_bytes({"x": GOOD_ENTRY}, bytes(9)), "tensors need 8 data bytes but the file holds 9"),
    (safetensors_bytes({"x": GOOD_ENTRY, "y": {**GOOD_ENTRY, "data_offsets": [4, 12]}}, bytes(12)),
     "starts at byte 4, expected 8"),
])
def test_damaged_files_give_one_line_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as error:
        load_safetensors(path)
    text = str(error.value)
    assert message in text and str(path) in text and "\n" not in text


def test_a_truncated_real_file_is_refused(tmp_path):
    path = tmp_path / "t.safetensors"
    save_safetensors(path, {"w": np.ones((4, 4), dtype=np.float32)})
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="truncated"):
        load_safetensors(path)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="nothing.safetensors: cannot open"):
        load_safetensors(tmp_path / "nothing.safetensors")


def test_unsupported_dtype_is_refused_before_writing(tmp_path):
    with pytest.raises(TypeError, match="complex128"):
        save_safetensors(tmp_path / "c.safetensors", {"z": np.zeros(2, dtype=complex)})
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_keeps_the_old_file_when_the_write_fails_midway(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"old and whole")
    with pytest.raises(RuntimeError, match="power cut"):
        with atomic_write(path) as file:
            file.write(b"new but ha")
            raise RuntimeError("power cut")
    assert path.read_bytes() == b"old and whole"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]  # no temporary file left behind
    atomic_write_text(path, "new and whole")
    assert path.read_text() == "new and whole"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_atomic_write_gives_new_files_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "tokenizer.txt", "shared")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "tokenizer.txt").stat().st_mode) == 0o644  # not mkstemp's owner-only 0o600


class SavingTokenizer:
    def save(self, path):
        with open(path, "w") as file:
            file.write("tokenizer v1\n")


def model_and_optimizer(value: float):
    model = {"wte.weight": np.full((5, 3), value, dtype=np.float32), "ln_f.bias": np.zeros(3, dtype=np.float32)}
    optimizer = {"m.0": np.full((5, 3), value / 10), "v.0": np.full((5, 3), value / 100), "step": np.array(7)}
    return model, optimizer


CONFIG = {"n_layer": 2, "n_embd": 3, "vocab_size": 5, "context_length": 8}


def test_checkpoint_round_trip(tmp_path):
    model, optimizer = model_and_optimizer(1.0)
    rng_state = np.random.default_rng(3).bit_generator.state
    state = {"config": CONFIG, "step": 7, "data_rng": rng_state, "tokens_seen": 1234}
    folder = save_checkpoint(tmp_path / "run", model, optimizer, state, tokenizer=SavingTokenizer())
    assert sorted(p.name for p in folder.iterdir()) == ["checksums.json", "model.safetensors", "optimizer.safetensors",
                                                        "state.json", "tokenizer.txt"]
    for where in (tmp_path / "run", folder):  # the run folder or the checkpoint folder itself
        loaded = load_checkpoint(where, require_config={"n_layer": 2, "vocab_size": 5})
        assert loaded.train_state == state
        assert loaded.tokenizer_path.read_text() == "tokenizer v1\n"
        for name in model:
            np.testing.assert_array_equal(loaded.model_state[name], model[name])
        assert int(loaded.optimizer_state["step"]) == 7
    restored = np.random.default_rng()
    restored.bit_generator.state = loaded.train_state["data_rng"]
    assert restored.integers(1 << 30) == np.random.default_rng(3).integers(1 << 30)


def test_a_new_checkpoint_replaces_the_old_one_whole(tmp_path):
    save_checkpoint(tmp_path, *model_and_optimizer(1.0), {"step": 1})
    save_checkpoint(tmp_path, *model_and_optimizer(2.0), {"step": 2})
    loaded = load_checkpoint(tmp_path)
    assert loaded.train_state["step"] == 2 and loaded.model_state["wte.weight"][0, 0] == 2.0
    assert loaded.tokenizer_path is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "checkpoint.old"]  # one step back
    assert load_checkpoint(tmp_path / "checkpoint.old").train_state["step"] == 1


class FailingTokenizer:
    def save(self, path):
        raise OSError("disk full")


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path):
    save_checkpoint(tmp_path, *model_and_optimizer(1.0), {"step": 1})
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, *model_and_optimizer(2.0), {"step": 2}, tokenizer=FailingTokenizer())
    loaded = load_checkpoint(tmp_path)
    assert loaded.train_state["step"] == 1 and loaded.model_state["wte.weight"][0, 0] == 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]  # no staging folder left behind


def test_a_crash_between_the_two_renames_falls_back_to_the_old_folder(tmp_path):
    folder = save_checkpoint(tmp_path, *model_and_optimizer(1.0), {"step": 1})
    folder.rename(tmp_path / "checkpoint.old")  # as if the process died right after the first rename
    assert load_checkpoint(tmp_path).train_state["step"] == 1
    save_checkpoint(tmp_path, *model_and_optimizer(2.0), {"step": 2})
    assert load_checkpoint(tmp_path).train_state["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint", "checkpoint.old"]


def test_a_checkpoint_from_another_config_is_refused(tmp_path):
    save_checkpoint(tmp_path, *model_and_optimizer(1.0), {"config": CONFIG})
    with pytest.raises(CheckpointError, match=r"state.json: checkpoint is from another configuration: "
                                              r"n_layer=2 \(this run: 4\)"):
        load_checkpoint(tmp_path, require_config={"n_layer": 4, "n_embd": 3})


def test_missing_or_corrupt_checkpoints_give_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint here"):
        load_checkpoint(tmp_path)
    folder = save_checkpoint(tmp_path, *model_and_optimizer(1.0), {"step": 1})
    (folder / "model.safetensors").write_bytes(b"garbage!garbage!")
    with pytest.raises(CheckpointError, match="model.safetensors: damaged: its SHA-256 is not the one written"):
        load_checkpoint(tmp_path)
    (folder / "checksums.json").unlink()  # as a checkpoint from before checksums: the format check still speaks
    with pytest.raises(CheckpointError, match="model.safetensors: corrupt safetensors file"):
        load_checkpoint(tmp_path)
    (folder / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="state.json: unreadable training state"):
        load_checkpoint(tmp_path)


def test_state_that_is_not_json_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "run", *model_and_optimizer(1.0), {"step": np.int64(3)})
    assert not (tmp_path / "run").exists()


# --- integrity: checksums, the fallback one step back, weights that are not numbers ---------------
class TextTokenizer:
    def save(self, path):
        path.write_text("a tokenizer\n")


CHECKPOINT_FILES = ["model.safetensors", "optimizer.safetensors", "state.json", "tokenizer.txt"]


@pytest.mark.parametrize("name", CHECKPOINT_FILES)
def test_any_changed_byte_of_any_file_is_caught_by_its_checksum(tmp_path, name):
    """Bytes flipped at random offsets, ten times per file: each time the checksum names the damaged file."""
    rng = np.random.default_rng(sum(map(ord, name)))
    folder = save_checkpoint(tmp_path, *model_and_optimizer(1.0), {"step": 1}, tokenizer=TextTokenizer())
    path = folder / name
    original = path.read_bytes()
    for _ in range(10):
        damaged = bytearray(original)
        for offset in rng.choice(len(damaged), size=rng.integers(1, 4), replace=False):
            damaged[offset] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(damaged))
        with pytest.raises(CheckpointError, match=f"{name}: damaged: its SHA-256 is not the one written with it"):
            load_checkpoint(folder)
    path.write_bytes(original)
    assert load_checkpoint(folder).train_state["step"] == 1


def test_a_damaged_checkpoint_falls_back_to_the_intact_one_before_it_and_says_so(tmp_path):
    save_checkpoint(tmp_path, *model_and_optimizer(1.0), {"step": 1})
    newest = save_checkpoint(tmp_path, *model_and_optimizer(2.0), {"step": 2})
    (newest / "model.safetensors").write_bytes(b"\0" * 64)
    loaded = load_checkpoint(tmp_path)
    assert loaded.train_state["step"] == 1 and loaded.folder == tmp_path / "checkpoint.old"
    assert loaded.fallback.startswith(f"{newest / 'model.safetensors'}: damaged")
    assert loaded.fallback.endswith(f"using the checkpoint before it, {tmp_path / 'checkpoint.old'} (step 1)")
    (tmp_path / "checkpoint.old" / "state.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"checkpoint/model.safetensors: damaged"):  # both damaged: the newest
        load_checkpoint(tmp_path)


def test_generation_needs_no_optimizer_file(tmp_path):
    folder = save_checkpoint(tmp_path, *model_and_optimizer(1.0), {"step": 1})
    (folder / "optimizer.safetensors").write_bytes(b"cut")
    assert load_checkpoint(tmp_path, with_optimizer=False).optimizer_state == {}
    with pytest.raises(CheckpointError, match="optimizer.safetensors: damaged"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("value, named", [(np.nan, "NaN"), (np.inf, "an infinity")])
def test_weights_holding_nan_or_infinity_are_refused_by_name(tmp_path, value, named):
    model, optimizer = model_and_optimizer(1.0)
    model["ln_f.bias"][1] = value
    save_checkpoint(tmp_path, model, optimizer, {"step": 1})
    with pytest.raises(CheckpointError, match=f"model.safetensors: tensor 'ln_f.bias' holds {named}"):
        load_checkpoint(tmp_path)


def test_a_full_disk_during_a_save_is_one_line_naming_the_file_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import errno

    save_checkpoint(tmp_path, *model_and_optimizer(1.0), {"step": 1})

    def full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(FileWriteError, match=r"checkpoint.tmp/model.safetensors: cannot write it \(No space left"):
        save_checkpoint(tmp_path, *model_and_optimizer(2.0), {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(tmp_path).train_state["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]
