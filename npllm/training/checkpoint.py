"""Training checkpoints: a run folder's weights, optimizer state and the rest, swapped in whole.

**A training checkpoint** is a folder inside the run folder::

    out/                          the run folder (the training loop also keeps metrics.jsonl here)
      checkpoint/
        model.safetensors         model weights, by state_dict name
        optimizer.safetensors     optimizer state, e.g. AdamW moments, as flat name -> array
        state.json                everything else, as JSON: the step, the optimizer's settings and
                                  scalars, every random generator's state, and what the recipe
                                  adds (its config, the model's config, the corpus's fingerprint)
        tokenizer.txt             the tokenizer in its own save format (optional)
        checksums.json            the SHA-256 of each file above, written last

A checkpoint is only useful whole: new weights with an old optimizer state would
resume a different run. So ``save_checkpoint`` writes all files into
``checkpoint.tmp/`` first, then swaps folders with two renames::

    checkpoint/ -> checkpoint.old/      checkpoint.tmp/ -> checkpoint/      delete checkpoint.old/

A crash before the swap leaves the old ``checkpoint/`` untouched; a crash between the
two renames leaves ``checkpoint.old/``, which ``load_checkpoint`` falls back to. At no
moment is a half-written folder the one that gets loaded.  The previous checkpoint
stays as ``checkpoint.old/`` until the next save replaces it: one step back, always.

**Integrity.**  Renames protect against a crash, not against a disk or a copy that
changes bytes later.  So the last file written, ``checksums.json``, holds the SHA-256
of every other file, and loading checks each file it reads against it: a damaged
file is refused in one line naming it, never loaded as garbage.  When
``checkpoint/`` is damaged and ``checkpoint.old/`` is intact, ``load_checkpoint``
falls back to it and says so (``Checkpoint.fallback``).  Weights holding NaN or an
infinity are refused too, naming the tensor.  A checkpoint written before checksums
existed loads unchecked.  Hashing reads each file once more (from the page cache,
right after it was written or before it is parsed): ``npllm bench checkpoint``
measures what that costs.

What this module leaves out on purpose: keeping more than one step back.
"""

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npllm.io.atomic import atomic_write_text, fsync_directory
from npllm.io.checksums import file_sha256
from npllm.io.safetensors import CheckpointError, load_safetensors, save_safetensors
from npllm.tokenizer import save_tokenizer_file

CHECKPOINT_FOLDER = "checkpoint"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
TOKENIZER_FILE = "tokenizer.txt"
CHECKSUMS_FILE = "checksums.json"


@dataclass
class Checkpoint:
    """What ``load_checkpoint`` returns: the arrays, the JSON state, and where the tokenizer is."""

    folder: Path
    model_state: dict[str, np.ndarray]
    optimizer_state: dict[str, np.ndarray]
    train_state: dict
    tokenizer_path: Path | None  # load it with npllm.tokenizer.load_tokenizer_file
    fallback: str | None = None  # why checkpoint/ was not used, when this is checkpoint.old/


def save_checkpoint(run_dir: str | os.PathLike, model_state: dict[str, np.ndarray],
                    optimizer_state: dict[str, np.ndarray], train_state: dict, tokenizer=None) -> Path:
    """Write a whole checkpoint into ``run_dir/checkpoint/``, replacing the previous one in one swap.

    ``train_state`` must hold plain JSON values (config, step, RNG states, ...);
    ``tokenizer`` is a BPE or WordPiece tokenizer (``save_tokenizer_file``). Returns the checkpoint folder.
    """
    run_dir = Path(run_dir)
    final, staging, previous = (run_dir / f"{CHECKPOINT_FOLDER}{suffix}" for suffix in ("", ".tmp", ".old"))
    state_text = json.dumps(train_state, indent=2, sort_keys=True)  # fails before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(staging, ignore_errors=True)  # left over from a crash
    staging.mkdir()
    try:
        save_safetensors(staging / MODEL_FILE, model_state)
        save_safetensors(staging / OPTIMIZER_FILE, optimizer_state)
        if tokenizer is not None:
            save_tokenizer_file(tokenizer, staging / TOKENIZER_FILE)
        atomic_write_text(staging / STATE_FILE, state_text)
        checksums = {path.name: file_sha256(path) for path in sorted(staging.iterdir())}
        atomic_write_text(staging / CHECKSUMS_FILE, json.dumps(checksums, indent=2, sort_keys=True))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    swap_in(staging, final, previous)
    return final


def swap_in(staging: Path, final: Path, previous: Path) -> None:
    """Make ``staging`` the ``final`` folder; the one it replaces stays as ``previous`` (one step back)."""
    if final.exists():
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(final, previous)
    os.replace(staging, final)
    fsync_directory(final.parent)


def checkpoint_folders(run_dir: Path) -> list[Path]:
    """The complete checkpoints under ``run_dir``, newest first (``run_dir`` may be a checkpoint folder itself)."""
    found = [candidate for candidate in (run_dir / CHECKPOINT_FOLDER, run_dir / f"{CHECKPOINT_FOLDER}.old")
             if (candidate / STATE_FILE).is_file()]
    if not found and (run_dir / STATE_FILE).is_file():
        found = [run_dir]
    if not found:
        raise CheckpointError(f"{run_dir}: no checkpoint here (expected {run_dir / CHECKPOINT_FOLDER / STATE_FILE})")
    return found


def load_checkpoint(run_dir: str | os.PathLike, require_config: dict | None = None,
                    with_optimizer: bool = True) -> Checkpoint:
    """Read the newest intact checkpoint in ``run_dir``; every problem is a one-line ``CheckpointError``.

    ``require_config`` lists the config values this run cannot change (layer count,
    widths, vocabulary size, ...): a checkpoint saved with other values is refused.
    ``with_optimizer=False`` reads the weights, state and tokenizer only (all that
    generation needs: a damaged optimizer file does not stop it).  A damaged
    ``checkpoint/`` gives way to an intact ``checkpoint.old/``, the reason kept in
    ``fallback``; when both are damaged, the newest one's problem is the error.
    """
    folders = checkpoint_folders(Path(run_dir))
    try:
        return _read_checkpoint(folders[0], require_config, with_optimizer)
    except CheckpointError as damaged:
        if len(folders) == 1:
            raise
        try:
            older = _read_checkpoint(folders[1], require_config, with_optimizer)
        except CheckpointError:
            raise damaged from None
        older.fallback = f"{damaged}; using the checkpoint before it, {folders[1]} (step {older.train_state.get('step')})"
        return older


def _read_checkpoint(folder: Path, require_config, with_optimizer) -> Checkpoint:
    checksums = read_checksums(folder)
    verify(folder / STATE_FILE, checksums)
    train_state = read_state(folder / STATE_FILE)
    if require_config is not None:
        check_config(train_state.get("config", {}), require_config, folder / STATE_FILE)
    tokenizer_path = folder / TOKENIZER_FILE
    if tokenizer_path.is_file():
        verify(tokenizer_path, checksums)
    model_state = finite(load_verified(folder / MODEL_FILE, checksums), folder / MODEL_FILE)
    optimizer_state = load_verified(folder / OPTIMIZER_FILE, checksums) if with_optimizer else {}
    return Checkpoint(folder, model_state, optimizer_state, train_state,
                      tokenizer_path if tokenizer_path.is_file() else None)


def read_checksums(folder: Path) -> dict | None:
    """The folder's checksums.json, or None for a checkpoint written before checksums existed."""
    path = folder / CHECKSUMS_FILE
    return read_json_object(path, "damaged checksum file") if path.exists() else None


def verify(path: Path, checksums: dict | None) -> None:
    """Refuse ``path`` unless its SHA-256 is the one ``checksums`` holds for it (None: nothing to check)."""
    if checksums is None:
        return
    if path.name not in checksums:
        raise CheckpointError(f"{path}: not listed in {CHECKSUMS_FILE}, so it cannot be trusted")
    try:
        actual = file_sha256(path)
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read ({error.strerror or error})") from error
    if actual != checksums[path.name]:
        raise CheckpointError(f"{path}: damaged: its SHA-256 is not the one written with it ({CHECKSUMS_FILE})")


def load_verified(path: Path, checksums: dict | None) -> dict[str, np.ndarray]:
    verify(path, checksums)
    return load_safetensors(path)


def finite(tensors: dict[str, np.ndarray], path: Path) -> dict[str, np.ndarray]:
    """``tensors``, unless one holds a NaN or an infinity: then one line naming it."""
    for name, array in tensors.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            what = "NaN" if np.isnan(array).any() else "an infinity"
            raise CheckpointError(f"{path}: tensor {name!r} holds {what}; these weights cannot be used")
    return tensors


def read_state(path: Path) -> dict:
    """The JSON object in ``state.json``."""
    return read_json_object(path, "unreadable training state")


def read_json_object(path: Path, problem: str) -> dict:
    """The JSON object in ``path``; anything else is a CheckpointError saying ``problem`` and why."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: {problem} ({error})") from error
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: {problem} (a JSON {type(value).__name__}, not an object)")
    return value


def check_config(saved: dict, required: dict, path: Path) -> None:
    """Refuse a checkpoint whose saved config differs from ``required`` in any of its keys."""
    required = json.loads(json.dumps(required))  # compare as JSON sees it: tuples become lists
    differences = [f"{key}={saved.get(key)!r} (this run: {value!r})"
                   for key, value in required.items() if saved.get(key) != value]
    if differences:
        raise CheckpointError(f"{path}: checkpoint is from another configuration: {', '.join(differences)}")

