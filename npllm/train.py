"""Pre-training: the loop that turns a corpus into a GPT.

One training step, as every language model since GPT-1 takes it:

    x, y   = B random windows of T tokens, and the same windows shifted by one
    loss   = cross_entropy(model(x), y)          how surprised the model is by each next token
    loss.backward()                               d loss / d every parameter
    clip the gradient's global norm               one bad batch cannot throw the weights far
    AdamW step at the scheduled learning rate     linear warm-up, then cosine decay to a floor

Around it, what makes a run usable rather than a demo:

- validation loss on held-out tokens every ``eval_interval`` steps (the
  number to watch: train loss alone cannot show overfitting);
- ``metrics.jsonl`` in the run folder, one JSON object per step;
- checkpoints written whole and atomically (``npllm.checkpoint``), holding the
  weights, the AdamW moments, the step, every random generator's state, the
  configuration and the tokenizer, so ``resume=True`` continues *bit for bit*
  as if the run had never stopped;
- Ctrl-C finishes the current step, saves, and exits cleanly;
- a NaN or infinite loss stops the run before it can be saved, so the last
  good checkpoint stays intact.

Gradient accumulation runs ``grad_accum`` micro-batches per step and
averages their gradients, training with an effective batch of
``batch_size * grad_accum`` windows in the memory of one.

Each micro-batch is trained on every core at once: ``npllm.nn.DataParallel``
gives each of ``workers`` threads a slice of it and adds up their gradients.

Left out on purpose: mixed precision, and sequence packing with document
boundaries.
"""

import dataclasses
import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from npllm.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from npllm.atomic import atomic_write_text
from npllm.data.batches import RandomWindows, evaluation_batches, require_windows
from npllm.data.sources import load_corpus
from npllm.data.tokens import load_or_encode, split_tokens, text_sha256
from npllm.models import GPT, GPTConfig
from npllm.nn import DataParallel
from npllm.ops.parallel import cores
from npllm.ops.memory import keep_freed_memory
from npllm.optim import AdamW, WarmupCosineLR, clip_grad_norm, configure_param_groups, set_lr
from npllm.tokenizer import BPETokenizer

END_OF_TEXT = "<|endoftext|>"
METRICS_FILE = "metrics.jsonl"


@dataclass
class TrainConfig:
    """Everything a run needs; the defaults train in about six minutes on two CPU cores."""

    # data and tokenizer
    data: str = "stdlib"                    # "stdlib", "docs", "shakespeare", or a text file / folder
    vocab_size: int = 2048                  # BPE vocabulary: 256 bytes + merges + <|endoftext|>
    tokenizer_chars: int = 4_000_000        # the tokenizer learns its merges from this many characters
    validation_fraction: float = 0.05       # the last 5% of the tokens are held out
    # model (a GPT-2 in miniature)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    context_length: int = 128
    dropout: float = 0.0                    # little data is seen twice in a short run: no need to regularise
    # optimisation
    batch_size: int = 16
    grad_accum: int = 1                     # micro-batches per step
    workers: int | None = None              # threads, each on a slice of every batch (default: one per core;
                                            # recorded in the checkpoint: a resumed run keeps its count)
    max_steps: int = 2000
    lr: float = 2e-3                        # peak learning rate (small models like large rates)
    min_lr: float = 2e-4                    # the cosine decays to this floor
    warmup_steps: int = 100
    decay_steps: int | None = None          # the cosine reaches min_lr here (default: max_steps)
    weight_decay: float = 0.1
    beta2: float = 0.95
    grad_clip: float = 1.0
    # bookkeeping
    eval_interval: int = 250                # validate and checkpoint every this many steps
    eval_windows: int = 64                  # validation windows per evaluation
    seed: int = 1337
    out_dir: str = "runs/gpt"

    def __post_init__(self):
        """Refuse a setting that cannot train, naming it, before the corpus is read."""
        for name in ("batch_size", "grad_accum", "eval_interval", "eval_windows", "workers"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        self.model_config(self.vocab_size)  # GPTConfig checks the model's shape (n_embd divisible by n_head, ...)

    def model_config(self, vocab_size) -> GPTConfig:
        return GPTConfig(vocab_size=vocab_size, context_length=self.context_length, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd, dropout=self.dropout)


# The settings a resumed run must share with its checkpoint (the rest, like max_steps, may change).
# weight_decay and beta2 live in the optimizer state the checkpoint restores, so a new value would be
# ignored; validation_fraction decides which tokens are trained on.
FIXED_ON_RESUME = ("data", "vocab_size", "validation_fraction", "n_layer", "n_head", "n_embd", "context_length",
                   "dropout", "batch_size", "grad_accum", "weight_decay", "beta2", "seed")


# What save_run writes into state.json, all of which restore_run needs.
TRAIN_STATE_KEYS = ("step", "config", "model_config", "optimizer", "batches_rng", "dropout_rngs", "corpus_sha256")


class TrainingError(RuntimeError):
    """A run that cannot go on: the message is one line for the user."""


@dataclass
class Run:
    """The live objects of a run, built fresh or restored from a checkpoint."""

    config: TrainConfig
    tokenizer: BPETokenizer
    model: GPT
    optimizer: AdamW
    schedule: WarmupCosineLR
    batches: RandomWindows
    validation_tokens: np.ndarray
    corpus_sha256: str  # the training text's fingerprint: a resumed run must read the same text
    parallel: DataParallel  # the model's replicas, one per worker thread
    step: int = 0  # steps completed


def train(config: TrainConfig, progress=True, log=print) -> Run:
    """Start a new run in ``config.out_dir`` and train it for ``config.max_steps`` steps."""
    keep_freed_memory()  # reuse freed memory for the step's large arrays (a process-wide setting: see npllm.ops.memory)
    return _train(start_run(config, log), progress, log)


def resume(out_dir, changes=None, progress=True, log=print) -> Run:
    """Continue the run saved in ``out_dir``, exactly where it stopped.

    ``changes`` holds settings the user gave explicitly: ``max_steps``,
    ``eval_interval`` and the like may change; the model, data and batch
    settings (``FIXED_ON_RESUME``) must match the checkpoint's.
    """
    keep_freed_memory()  # reuse freed memory for the step's large arrays (a process-wide setting: see npllm.ops.memory)
    return _train(restore_run(out_dir, changes or {}, log), progress, log)


def _train(run: Run, progress, log) -> Run:
    stop = _StopRequest()
    with stop.on_ctrl_c():
        _train_loop(run, stop, progress, log)
    return run


def start_run(config: TrainConfig, log) -> Run:
    config = _with_workers_fixed(config)
    out_dir = Path(config.out_dir)
    if (out_dir / "checkpoint").exists() or (out_dir / "checkpoint.old").exists():  # .old: a crash mid-save
        raise TrainingError(f"{out_dir} already holds a run: continue it with --resume, or choose another --out")
    corpus = load_corpus(config.data)
    log(f"corpus: {corpus.description}, {len(corpus.text) / 1e6:.1f} M characters")
    started = time.perf_counter()
    tokenizer = train_tokenizer(corpus.text, config)
    log(f"tokenizer: {tokenizer.vocab_size} tokens learned in {time.perf_counter() - started:.1f} s")
    run = _build_run(config, tokenizer, corpus.text, log)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / METRICS_FILE).unlink(missing_ok=True)
    return run


def _with_workers_fixed(config: TrainConfig) -> TrainConfig:
    """``workers`` made a number (default: this machine's cores), so the checkpoint records it.

    The shards a batch is cut into decide the order of the gradient's sums, so a
    run resumed elsewhere keeps its worker count (and stays bit-identical) unless
    told otherwise.
    """
    return config if config.workers is not None else dataclasses.replace(config, workers=cores())


def train_tokenizer(text: str, config: TrainConfig) -> BPETokenizer:
    """A byte-level BPE with ``vocab_size`` ids, the last one being <|endoftext|>."""
    sample = text[: config.tokenizer_chars]
    return BPETokenizer.train(sample, vocab_size=config.vocab_size, pattern="gpt4",
                              special_tokens={END_OF_TEXT: config.vocab_size - 1})


def restore_run(out_dir, changes: dict, log) -> Run:
    """Rebuild the run saved in ``out_dir``, with the allowed ``changes`` applied."""
    fixed = {key: value for key, value in changes.items() if key in FIXED_ON_RESUME}
    checkpoint = load_checkpoint(out_dir, require_config=fixed)
    missing = [key for key in TRAIN_STATE_KEYS if key not in checkpoint.train_state]
    if missing:
        raise CheckpointError(f"{checkpoint.folder}: not a checkpoint written by npllm train"
                              f" (state.json lacks {', '.join(missing)})")
    saved = {"workers": 1, **checkpoint.train_state["config"]}  # (a checkpoint from before workers existed ran on one)
    config = _with_workers_fixed(TrainConfig(**{**saved, **changes, "out_dir": str(out_dir)}))
    if checkpoint.tokenizer_path is None:
        raise CheckpointError(f"{checkpoint.folder}: the checkpoint has no tokenizer file")
    tokenizer = BPETokenizer.load(checkpoint.tokenizer_path)
    text = load_corpus(config.data).text
    if text_sha256(text) != checkpoint.train_state["corpus_sha256"]:
        raise CheckpointError(f"{checkpoint.folder}: the text of --data {config.data} is not the text this run"
                              " was trained on (changed, or a relative path read from another folder)")
    run = _build_run(config, tokenizer, text, log)
    try:
        run.model.load_state_dict(checkpoint.model_state)
        run.optimizer.load_state_dict(
            unflatten_optimizer_state(checkpoint.optimizer_state, checkpoint.train_state["optimizer"]))
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{checkpoint.folder}: does not fit this model ({error})") from error
    run.batches.load_state_dict(checkpoint.train_state["batches_rng"])
    set_generator_states(run.parallel, checkpoint.train_state["dropout_rngs"])
    run.step = checkpoint.train_state["step"]
    _drop_metrics_after(Path(out_dir) / METRICS_FILE, run.step)
    log(f"resumed {out_dir} at step {run.step}")
    return run


def _build_run(config: TrainConfig, tokenizer: BPETokenizer, text: str, log) -> Run:
    tokens = load_or_encode(text, tokenizer)
    train_tokens, validation_tokens = split_tokens(tokens, config.validation_fraction)
    require_windows(validation_tokens, config.context_length, "validation")  # now, not at the first evaluation
    log(f"tokens: {len(train_tokens):,} for training, {len(validation_tokens):,} for validation;"
        f" unigram baseline loss {unigram_loss(train_tokens, validation_tokens, tokenizer.vocab_size):.3f}")
    model = GPT(config.model_config(tokenizer.vocab_size), seed=config.seed)
    optimizer = AdamW(configure_param_groups(model, config.weight_decay), lr=config.lr,
                      betas=(0.9, config.beta2))
    decay_steps = config.decay_steps or config.max_steps
    schedule = WarmupCosineLR(config.lr, min(config.warmup_steps, decay_steps), decay_steps, config.min_lr)
    batches = RandomWindows(train_tokens, config.context_length, config.batch_size, seed=config.seed)
    log(f"model: {model.num_parameters():,} parameters, {model.flops_per_token() / 1e6:.1f} MFLOP per token;"
        f" each batch shared by {config.workers} worker thread{'s' * (config.workers > 1)}")
    return Run(config, tokenizer, model, optimizer, schedule, batches, validation_tokens, text_sha256(text),
               DataParallel(model, config.workers))


def unigram_loss(train_tokens, validation_tokens, vocab_size) -> float:
    """Cross-entropy on validation of the best model that ignores context: token frequencies.

    The number any trained model must beat; add-one smoothing keeps unseen tokens finite.
    """
    counts = np.bincount(train_tokens, minlength=vocab_size) + 1.0
    log_probs = np.log(counts / counts.sum())
    return float(-log_probs[validation_tokens].mean())


# --- the loop ---------------------------------------------------------------
def _train_loop(run: Run, stop, progress, log):
    config, model = run.config, run.model
    tokens_per_step = config.batch_size * config.context_length * config.grad_accum
    metrics_path = Path(config.out_dir) / METRICS_FILE
    bar = tqdm(total=config.max_steps, initial=run.step, disable=not progress, unit="step", dynamic_ncols=True)
    model.train()
    while run.step < config.max_steps and not stop.requested:
        started = time.perf_counter()
        lr = run.schedule(run.step)
        loss = _train_step(run, lr)
        record = {"step": run.step + 1, "train_loss": loss, "lr": lr,
                  "tokens_per_s": tokens_per_step / (time.perf_counter() - started)}
        run.step += 1
        evaluating = run.step % config.eval_interval == 0 or run.step == config.max_steps
        if evaluating:
            record["val_loss"] = evaluate(run)
            _stop_unless_finite("validation loss", record["val_loss"], run.step, config.out_dir)
        _append_metrics(metrics_path, record)  # before saving, so a saved step always has its record
        if evaluating:
            save_run(run)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{record['tokens_per_s']:,.0f}",
                        **({"val": f"{record['val_loss']:.3f}"} if "val_loss" in record else {}))
    bar.close()
    if stop.requested and run.step < config.max_steps:
        save_run(run)
        log(f"interrupted: saved step {run.step} in {config.out_dir}; continue with --resume")


def _train_step(run: Run, lr: float) -> float:
    """One optimizer step over ``grad_accum`` micro-batches; returns the mean loss."""
    config = run.config
    set_lr(run.optimizer, lr)
    run.optimizer.zero_grad()
    total = 0.0
    for _ in range(config.grad_accum):
        inputs, targets = run.batches.next_batch()
        loss = run.parallel.forward_backward(inputs, targets, scale=1.0 / config.grad_accum)
        _stop_unless_finite("loss", loss, run.step + 1, config.out_dir)
        total += loss
    clip_grad_norm(run.model.parameters(), config.grad_clip)
    run.optimizer.step()
    return total / config.grad_accum


def _stop_unless_finite(what: str, value: float, step: int, out_dir):
    """Raise TrainingError for a NaN or inf loss, before anything can be saved."""
    if not math.isfinite(value):
        raise TrainingError(f"{what} became {value} at step {step}; stopped without saving,"
                            f" so the last good checkpoint in {out_dir} is intact (try a lower --lr)")


def evaluate(run: Run) -> float:
    """Mean cross-entropy over the fixed validation windows (dropout off, no graph)."""
    config, model = run.config, run.model
    model.eval()
    losses, weights = [], []
    for inputs, targets in evaluation_batches(run.validation_tokens, config.context_length,
                                              config.batch_size, config.eval_windows):
        losses.append(run.parallel.loss(inputs, targets))  # on every core, as training
        weights.append(len(inputs))
    model.train()
    return float(np.average(losses, weights=weights))


# --- saving and restoring ---------------------------------------------------
def save_run(run: Run):
    """Write the whole run (weights, AdamW state, step, every RNG, config, tokenizer) atomically."""
    optimizer_arrays, optimizer_rest = flatten_optimizer_state(run.optimizer.state_dict())
    train_state = {
        "step": run.step,
        "config": dataclasses.asdict(run.config),
        "model_config": dataclasses.asdict(run.model.config),
        "optimizer": optimizer_rest,
        "batches_rng": run.batches.state_dict(),
        "dropout_rngs": generator_states(run.parallel),
        "corpus_sha256": run.corpus_sha256,
    }
    save_checkpoint(run.config.out_dir, run.model.state_dict(), optimizer_arrays, train_state, run.tokenizer)


def flatten_optimizer_state(state: dict) -> tuple[dict, dict]:
    """Split an optimizer state_dict into named arrays (for safetensors) and the JSON rest."""
    arrays, rest = {}, {"param_groups": state["param_groups"], "state": []}
    for index, group_state in enumerate(state["state"]):
        scalars = {}
        for key, value in group_state.items():
            if isinstance(value, np.ndarray):
                arrays[f"{index}.{key}"] = value
            else:
                scalars[key] = value
        rest["state"].append(scalars)
    return arrays, json.loads(json.dumps(rest, default=_json_number))


def unflatten_optimizer_state(arrays: dict, rest: dict) -> dict:
    """The inverse of ``flatten_optimizer_state``."""
    state = [dict(scalars) for scalars in rest["state"]]
    for name, array in arrays.items():
        index, key = name.split(".", 1)
        state[int(index)][key] = array
    return {"param_groups": rest["param_groups"], "state": state}


def _json_number(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint's JSON state")


def generator_states(parallel: DataParallel) -> dict:
    """The state of every random generator (dropout masks) in the model and its replicas, by module name.

    The model's modules go by their own names, replica k's (k >= 1) by ``replica{k}.`` and theirs.
    """
    return {f"{_replica_prefix(k)}{name}": generator.bit_generator.state
            for k, replica in enumerate(parallel.replicas) for name, generator in replica.named_generators()}


def set_generator_states(parallel: DataParallel, states: dict):
    """Restore ``generator_states``; a replica the checkpoint has no state for (more workers now) keeps its own."""
    generators = {f"{_replica_prefix(k)}{name}": generator
                  for k, replica in enumerate(parallel.replicas) for name, generator in replica.named_generators()}
    for name, state in states.items():
        if name in generators:  # (a replica of a run that had more workers than this one has no generator here)
            generators[name].bit_generator.state = state


def _replica_prefix(k: int) -> str:
    return f"replica{k}." if k else ""


def _append_metrics(path: Path, record: dict):
    with open(path, "a", encoding="utf-8") as file:
        file.write(json.dumps(record) + "\n")


def _drop_metrics_after(path: Path, step: int):
    """Forget metrics of steps after the checkpoint: the resumed run will log them again.

    A last line cut short (the process was killed while writing it) is dropped with them.
    """
    if not path.exists():
        return
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):
                break
            raise TrainingError(f"{path}, line {number}: not a JSON record ({error.msg})") from error
        if record["step"] <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


class _StopRequest:
    """Ctrl-C sets a flag; the loop finishes its step, saves, and returns. A second Ctrl-C aborts."""

    def __init__(self):
        self.requested = False

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def on_ctrl_c(self):
        return _SignalHandler(signal.SIGINT, self._handle)


class _SignalHandler:
    """Install a signal handler for a ``with`` block (only possible in the main thread)."""

    def __init__(self, signum, handler):
        self.signum, self.handler, self.previous = signum, handler, None

    def __enter__(self):
        try:
            self.previous = signal.signal(self.signum, self.handler)
        except ValueError:  # not the main thread: leave Ctrl-C as it is
            self.previous = None
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(self.signum, self.previous)
        return False
