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

A checkpoint is only useful whole: new weights with an old optimizer state would
resume a different run. So ``save_checkpoint`` writes all files into
``checkpoint.tmp/`` first, then swaps folders with two renames::

    checkpoint/ -> checkpoint.old/      checkpoint.tmp/ -> checkpoint/      delete checkpoint.old/

A crash before the swap leaves the old ``checkpoint/`` untouched; a crash between the
two renames leaves ``checkpoint.old/``, which ``load_checkpoint`` falls back to. At no
moment is a half-written folder the one that gets loaded.

What this module leaves out on purpose: keeping more than one checkpoint.
"""

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npllm.io.atomic import atomic_write_text, fsync_directory
from npllm.io.safetensors import CheckpointError, load_safetensors, save_safetensors

CHECKPOINT_FOLDER = "checkpoint"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
TOKENIZER_FILE = "tokenizer.txt"


@dataclass
class Checkpoint:
    """What ``load_checkpoint`` returns: the arrays, the JSON state, and where the tokenizer is."""

    folder: Path
    model_state: dict[str, np.ndarray]
    optimizer_state: dict[str, np.ndarray]
    train_state: dict
    tokenizer_path: Path | None  # load it with BPETokenizer.load


def save_checkpoint(run_dir: str | os.PathLike, model_state: dict[str, np.ndarray],
                    optimizer_state: dict[str, np.ndarray], train_state: dict, tokenizer=None) -> Path:
    """Write a whole checkpoint into ``run_dir/checkpoint/``, replacing the previous one in one swap.

    ``train_state`` must hold plain JSON values (config, step, RNG states, ...);
    ``tokenizer`` is anything with a ``save(path)`` method. Returns the checkpoint folder.
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
            tokenizer.save(staging / TOKENIZER_FILE)
        atomic_write_text(staging / STATE_FILE, state_text)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    swap_in(staging, final, previous)
    return final


def swap_in(staging: Path, final: Path, previous: Path) -> None:
    """Make ``staging`` the ``final`` folder; the old one stays as ``previous`` until then."""
    if final.exists():
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(final, previous)
    os.replace(staging, final)
    fsync_directory(final.parent)
    shutil.rmtree(previous, ignore_errors=True)


def checkpoint_folder(run_dir: str | os.PathLike) -> Path:
    """The newest complete checkpoint under ``run_dir`` (which may also be a checkpoint folder itself)."""
    run_dir = Path(run_dir)
    for candidate in (run_dir / CHECKPOINT_FOLDER, run_dir / f"{CHECKPOINT_FOLDER}.old", run_dir):
        if (candidate / STATE_FILE).is_file():
            return candidate
    raise CheckpointError(f"{run_dir}: no checkpoint here (expected {run_dir / CHECKPOINT_FOLDER / STATE_FILE})")


def load_checkpoint(run_dir: str | os.PathLike, require_config: dict | None = None) -> Checkpoint:
    """Read the checkpoint in ``run_dir``; every problem is a one-line ``CheckpointError``.

    ``require_config`` lists the config values this run cannot change (layer count,
    widths, vocabulary size, ...): a checkpoint saved with other values is refused.
    """
    folder = checkpoint_folder(run_dir)
    train_state = read_state(folder / STATE_FILE)
    if require_config is not None:
        check_config(train_state.get("config", {}), require_config, folder / STATE_FILE)
    tokenizer_path = folder / TOKENIZER_FILE
    return Checkpoint(folder, load_safetensors(folder / MODEL_FILE), load_safetensors(folder / OPTIMIZER_FILE),
                      train_state, tokenizer_path if tokenizer_path.is_file() else None)


def read_state(path: Path) -> dict:
    """The JSON object in ``state.json``."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable training state ({error})") from error
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: training state is a JSON {type(state).__name__}, not an object")
    return state


def check_config(saved: dict, required: dict, path: Path) -> None:
    """Refuse a checkpoint whose saved config differs from ``required`` in any of its keys."""
    required = json.loads(json.dumps(required))  # compare as JSON sees it: tuples become lists
    differences = [f"{key}={saved.get(key)!r} (this run: {value!r})"
                   for key, value in required.items() if saved.get(key) != value]
    if differences:
        raise CheckpointError(f"{path}: checkpoint is from another configuration: {', '.join(differences)}")

