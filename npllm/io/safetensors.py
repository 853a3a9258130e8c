"""The safetensors layout, written and read in NumPy: weights in a file that runs no code.

**The safetensors layout** (the format Hugging Face publishes GPT-2 in) is simple
enough to write by hand, and safe to read: unlike a pickle, loading it runs no code.
A file is three parts::

    8 bytes     N, the header length, an unsigned 64-bit little-endian integer
    N bytes     a JSON object (UTF-8), one entry per tensor:
                  "wte.weight": {"dtype": "F32", "shape": [50257, 768], "data_offsets": [0, 154389504]}
                plus an optional "__metadata__": {"key": "value", ...} of strings
    the rest    the raw bytes of every tensor, little-endian, C order, back to back;
                data_offsets count from the start of this part

The tensors must tile the data exactly: no gaps, no overlaps, nothing after the
last one. We write them in sorted name order and pad the JSON with spaces to a
multiple of 8 bytes, so every tensor starts 8-byte aligned, as the reference
implementation does. ``load_safetensors`` reads any such file, including a real
GPT-2 ``model.safetensors`` (mapping names such as ``h.0.attn.c_attn.weight`` onto a
model, and dropping a ``transformer.`` prefix, is the caller's job). BF16, which
NumPy lacks, is widened to float32 on reading. A damaged file raises
``CheckpointError`` with one line naming the file and what is wrong with it.

What this module leaves out on purpose: nested state (pass flat name -> array
dicts), and compression.
"""

import json
import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npllm.errors import NpllmError
from npllm.io.atomic import atomic_write

DTYPES = {  # safetensors dtype code -> NumPy dtype, all little-endian
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
DTYPE_CODES = {dtype.newbyteorder("="): code for code, dtype in DTYPES.items()}
BFLOAT16 = "BF16"  # read only: stored as the top 16 bits of a float32
HEADER_LENGTH_BYTES = 8
HEADER_ALIGNMENT = 8
METADATA_KEY = "__metadata__"



class CheckpointError(NpllmError):
    """A checkpoint or weights file that is missing, damaged, or from another configuration."""


# ---- safetensors: writing -------------------------------------------------------------------

def save_safetensors(path: str | os.PathLike, tensors: dict[str, np.ndarray],
                     metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (name -> array) to ``path`` in the safetensors layout, atomically."""
    header, arrays, offset = {}, [], 0
    if metadata:
        if not all(isinstance(key, str) and isinstance(value, str) for key, value in metadata.items()):
            raise TypeError(f"safetensors metadata must map strings to strings, got {metadata!r}")
        header[METADATA_KEY] = dict(metadata)
    for name in sorted(tensors):
        array = np.asarray(tensors[name], order="C")  # (ascontiguousarray would turn 0-d into 1-d)
        if array.dtype.newbyteorder("=") not in DTYPE_CODES:
            raise TypeError(f"tensor {name!r} has dtype {array.dtype}, which safetensors cannot store")
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)  # little-endian on any machine
        code = DTYPE_CODES[array.dtype.newbyteorder("=")]
        header[name] = {"dtype": code, "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        arrays.append(array)
        offset += array.nbytes
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % HEADER_ALIGNMENT)  # so tensor data starts aligned
    with atomic_write(path) as file:
        file.write(struct.pack("<Q", len(header_bytes)))
        file.write(header_bytes)
        for array in arrays:
            file.write(array.tobytes())


# ---- safetensors: reading -------------------------------------------------------------------

@dataclass(frozen=True)
class TensorEntry:
    """One tensor's header entry, checked: where its bytes are and how to view them."""

    name: str
    dtype_code: str
    shape: tuple[int, ...]
    begin: int
    end: int


def load_safetensors(path: str | os.PathLike, memory_map: bool = False) -> dict[str, np.ndarray]:
    """Every tensor in a safetensors file, as writable native-order NumPy arrays.

    With ``memory_map``, each array is a view of a copy-on-write mapping of the
    file instead of a copy read into memory: nothing is read until an array is
    used, pages the arrays never touch are never read at all, and the bytes
    sit in the operating system's file cache once rather than twice.  Writing
    to such an array changes a private copy of that page, never the file.
    (BF16 tensors, widened to float32, still become arrays of their own.)
    The file may be replaced while mapped, as our atomic writes do; it must
    not be truncated in place.
    """
    path = Path(path)
    with open_for_reading(path) as file:
        header, data_start = read_header(file, path)
        entries = checked_entries(header, path, data_size=file_size(file) - data_start)
        if memory_map:
            data = memoryview(mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY))[data_start:]
            return {entry.name: array_from_bytes(data[entry.begin:entry.end], entry) for entry in entries}
        tensors = {}
        for entry in entries:
            file.seek(data_start + entry.begin)
            buffer = bytearray(entry.end - entry.begin)
            if file.readinto(buffer) != len(buffer):
                raise corrupt(path, f"tensor {entry.name!r} is cut short")
            tensors[entry.name] = array_from_bytes(buffer, entry)
    return tensors


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` strings of a safetensors file (empty if it has none)."""
    path = Path(path)
    with open_for_reading(path) as file:
        header, _ = read_header(file, path)
    return header.get(METADATA_KEY, {})


def corrupt(path: Path, problem: str) -> CheckpointError:
    return CheckpointError(f"{path}: corrupt safetensors file: {problem}")


def open_for_reading(path: Path):
    try:
        return open(path, "rb")
    except OSError as error:
        raise CheckpointError(f"{path}: cannot open ({error.strerror or error})") from error


def file_size(file) -> int:
    return os.fstat(file.fileno()).st_size


def read_header(file, path: Path) -> tuple[dict, int]:
    """The parsed JSON header and the byte position where tensor data starts."""
    length_bytes = file.read(HEADER_LENGTH_BYTES)
    if len(length_bytes) < HEADER_LENGTH_BYTES:
        raise corrupt(path, f"only {len(length_bytes)} bytes, too short for the 8-byte header length")
    (header_length,) = struct.unpack("<Q", length_bytes)
    available = file_size(file) - HEADER_LENGTH_BYTES
    if header_length > available:
        raise corrupt(path, f"header length {header_length} exceeds the {available} bytes that follow it")
    try:
        header = json.loads(file.read(header_length).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise corrupt(path, f"header is not valid JSON ({error})") from error
    if not isinstance(header, dict):
        raise corrupt(path, f"header is a JSON {type(header).__name__}, not an object")
    return header, HEADER_LENGTH_BYTES + header_length


def checked_entries(header: dict, path: Path, data_size: int) -> list[TensorEntry]:
    """The header's tensor entries, each checked, ordered by position, tiling the data exactly."""
    entries = sorted((checked_entry(name, fields, path) for name, fields in header.items() if name != METADATA_KEY),
                     key=lambda entry: entry.begin)
    position = 0
    for entry in entries:
        if entry.begin != position:
            raise corrupt(path, f"tensor {entry.name!r} starts at byte {entry.begin}, expected {position}")
        position = entry.end
    if position != data_size:
        raise corrupt(path, f"tensors need {position} data bytes but the file holds {data_size}"
                      + (" (truncated?)" if position > data_size else ""))
    return entries


def checked_entry(name: str, fields, path: Path) -> TensorEntry:
    """One header entry, with its dtype, shape and offsets checked against each other."""
    if not isinstance(fields, dict) or not {"dtype", "shape", "data_offsets"} <= fields.keys():
        raise corrupt(path, f"tensor {name!r} needs dtype, shape and data_offsets, got {fields!r}")
    code, shape, offsets = fields["dtype"], fields["shape"], fields["data_offsets"]
    if code not in DTYPES and code != BFLOAT16:
        raise corrupt(path, f"tensor {name!r} has unknown dtype {code!r}")
    if not is_list_of_naturals(shape):
        raise corrupt(path, f"tensor {name!r} has invalid shape {shape!r}")
    if not (is_list_of_naturals(offsets) and len(offsets) == 2 and offsets[0] <= offsets[1]):
        raise corrupt(path, f"tensor {name!r} has invalid data_offsets {offsets!r}")
    itemsize = 2 if code == BFLOAT16 else DTYPES[code].itemsize
    expected_bytes = int(np.prod(shape, dtype=np.int64)) * itemsize
    if offsets[1] - offsets[0] != expected_bytes:
        raise corrupt(path, f"tensor {name!r} of shape {shape} and dtype {code} needs {expected_bytes} bytes, "
                      f"but data_offsets {offsets} span {offsets[1] - offsets[0]}")
    return TensorEntry(name, code, tuple(shape), offsets[0], offsets[1])


def is_list_of_naturals(value) -> bool:
    return isinstance(value, list) and all(type(item) is int and item >= 0 for item in value)


def array_from_bytes(buffer, entry: TensorEntry) -> np.ndarray:
    """View the tensor's bytes as an array of its dtype and shape (BF16 widened to float32)."""
    if entry.dtype_code == BFLOAT16:
        top_bits = np.frombuffer(buffer, dtype="<u2").astype(np.uint32)
        return (top_bits << 16).view(np.float32).reshape(entry.shape)
    array = np.frombuffer(buffer, dtype=DTYPES[entry.dtype_code]).reshape(entry.shape)
    return array.astype(array.dtype.newbyteorder("="), copy=False)
