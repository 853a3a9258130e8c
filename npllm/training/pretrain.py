"""Pre-training a GPT: the recipe that turns a corpus into a language model.

What this recipe decides, and hands to the shared loop (``loop.py``) as a
``TrainingRun``:

    corpus       the standard library's source (default), the docs, a download, or the user's files
    tokenizer    a byte-level BPE learned from the corpus's first characters, <|endoftext|> last
    model        a GPT-2 in miniature (``GPTConfig`` from ``TrainConfig``), initialised at random
    init         ... or, with ``init``, the weights and tokenizer of a Hugging Face GPT-2 folder or
                 of another run, trained further on the corpus (the tokenizer is not retrained)
    objective    next-token prediction (``NextToken``) on random windows of T tokens
    optimizer    AdamW, decaying the weight matrices (``configure_param_groups``)
    schedule     linear warm-up, then cosine decay to a floor
    evaluation   the same windows of the held-out last 5% of the tokens, every time

``train(config)`` starts a run in ``config.out_dir``; ``resume(out_dir)``
rebuilds it from its checkpoint and continues bit for bit.  A run from an
``init`` takes its model's shape and vocabulary from there:
``TrainConfig.from_init(path, **settings)`` fills them in and refuses a
setting that contradicts them.  Settings that
decide what is learned (``FIXED_ON_RESUME``) must match the checkpoint's;
the rest (``max_steps``, ``eval_interval``, ...) may change on resume.

Left out on purpose: sequence packing with document boundaries.
"""

import dataclasses
import hashlib
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npllm.data.batches import RandomWindows, evaluation_batches, require_windows
from npllm.data.sources import load_corpus
from npllm.data.tokens import load_or_encode, split_tokens, text_sha256
from npllm.errors import SettingError
from npllm.io.safetensors import CheckpointError
from npllm.models import GPT, GPTConfig
from npllm.nn.lora import apply_lora, merge_lora
from npllm.optim import AdamW, WarmupCosineLR, configure_param_groups, param_groups_by_name
from npllm.pretrained import PretrainedError, load_pretrained
from npllm.pretrained.folder import CONFIG_FILE
from npllm.runtime.data_parallel import DataParallel
from npllm.runtime.memory import keep_freed_memory
from npllm.runtime.pool import cores
from npllm.tokenizer import BPETokenizer
from npllm.training import loop
from npllm.io.checksums import file_sha256
from npllm.training.checkpoint import MODEL_FILE, STATE_FILE, load_checkpoint
from npllm.training.loop import METRICS_FILE, LoopSettings, TrainingError, TrainingRun
from npllm.training.objectives import NextToken

END_OF_TEXT = "<|endoftext|>"


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
    init: str | None = None                 # start from these weights and tokenizer: a Hugging Face GPT-2
                                            # folder or a run folder (see from_init)
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
        """Refuse a setting that cannot train, naming it, before the corpus is read.

        A comparison with NaN is false, so a NaN is refused by every check.
        """
        check_settings(self, ("batch_size", "grad_accum", "eval_interval", "eval_windows", "workers", "max_steps",
                              "tokenizer_chars", "decay_steps"), [
            ("vocab_size", self.vocab_size >= 257, "at least 257 (the 256 bytes and <|endoftext|>)"),
            *optimisation_checks(self),
            ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
            ("validation_fraction", 0 < self.validation_fraction < 1, "between 0 and 1"),
        ])
        self.model_config(self.vocab_size)  # GPTConfig checks the model's shape (n_embd divisible by n_head, ...)

    def model_config(self, vocab_size) -> GPTConfig:
        return GPTConfig(vocab_size=vocab_size, context_length=self.context_length, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd, dropout=self.dropout)

    @classmethod
    def from_init(cls, init, **settings) -> "TrainConfig":
        """The settings for a run that starts from ``init``, its model's shape and vocabulary filled in.

        A shape setting given in ``settings`` must agree with the init's: the
        weights fix it.  (The init's tokenizer is kept, never retrained.)
        """
        fixed = init_shape(load_model(init)[0].config)
        for name, value in settings.items():
            if name in fixed and value != fixed[name]:
                raise SettingError(f"`{name}` {value} contradicts the model in `init` {init}, which has {fixed[name]}")
        return cls(**{**settings, **fixed, "init": str(init)})


def optimisation_checks(config) -> list[tuple[str, bool, str]]:
    """(setting, whether it holds, what it must be) for the optimisation settings every recipe shares."""
    return [
        ("warmup_steps", config.warmup_steps >= 0, "at least 0"),
        ("seed", config.seed >= 0, "at least 0"),
        ("lr", 0 < config.lr < math.inf, "a positive number"),
        ("min_lr", 0 <= config.min_lr <= config.lr, f"between 0 and `lr` ({config.lr})"),
        ("weight_decay", 0 <= config.weight_decay < math.inf, "at least 0"),
        ("beta2", 0 <= config.beta2 < 1, "in [0, 1)"),
        ("grad_clip", config.grad_clip > 0, "a positive number (inf: no clipping)"),
    ]


def check_settings(config, at_least_one, checks):
    """Raise a SettingError naming the first setting out of its range (a NaN fails every comparison).

    ``at_least_one`` names whole-number settings that must be at least 1 (None: the default);
    ``checks`` are (setting, whether it holds, what it must be).
    """
    for name in at_least_one:
        if getattr(config, name) is not None and not getattr(config, name) >= 1:
            raise SettingError(f"`{name}` must be at least 1, got {getattr(config, name)}")
    for name, holds, requirement in checks:
        if not holds:
            raise SettingError(f"`{name}` must be {requirement}, got {getattr(config, name)!r}")


# The settings an init's weights fix.
INIT_SHAPE = ("vocab_size", "n_layer", "n_head", "n_embd", "context_length")


def init_shape(model_config: GPTConfig) -> dict:
    return {name: getattr(model_config, name) for name in INIT_SHAPE}


# The settings a resumed run must share with its checkpoint (the rest, like max_steps, may change).
# weight_decay and beta2 live in the optimizer state the checkpoint restores, so a new value would be
# ignored; validation_fraction decides which tokens are trained on.
FIXED_ON_RESUME = ("data", "vocab_size", "validation_fraction", "n_layer", "n_head", "n_embd", "context_length",
                   "dropout", "batch_size", "grad_accum", "weight_decay", "beta2", "seed", "init")


# What this recipe adds to the loop's state.json, all of which ``restore_run`` needs.
RECIPE_STATE_KEYS = ("config", "model_config", "corpus_sha256")


@dataclass
class Run(TrainingRun):
    """A pre-training run: the loop's ``TrainingRun`` and what this recipe keeps beside it."""

    config: TrainConfig = None
    validation_tokens: np.ndarray = None  # the held-out end of the corpus
    corpus_sha256: str = ""  # the training text's fingerprint: a resumed run must read the same text

    def recipe_state(self) -> dict:
        return {"config": dataclasses.asdict(self.config), "model_config": dataclasses.asdict(self.model.config),
                "corpus_sha256": self.corpus_sha256}


def train(config: TrainConfig, progress=True, log=print) -> Run:
    """Start a new run in ``config.out_dir`` and train it for ``config.max_steps`` steps."""
    keep_freed_memory()  # reuse freed memory for the step's large arrays (a process-wide setting: see npllm.runtime.memory)
    return loop.train(start_run(config, log), progress, log)


def resume(out_dir, changes=None, progress=True, log=print) -> Run:
    """Continue the run saved in ``out_dir``, exactly where it stopped.

    ``changes`` holds settings the user gave explicitly: ``max_steps``,
    ``eval_interval`` and the like may change; the model, data and batch
    settings (``FIXED_ON_RESUME``) must match the checkpoint's.
    """
    keep_freed_memory()  # reuse freed memory for the step's large arrays (a process-wide setting: see npllm.runtime.memory)
    return loop.train(restore_run(out_dir, changes or {}, log), progress, log)


def start_run(config: TrainConfig, log) -> Run:
    config = with_workers_fixed(config)
    out_dir = Path(config.out_dir)
    require_new_run_folder(out_dir)  # before the corpus, the tokenizer and the encoding are paid for
    init_model, tokenizer = _load_init(config, log) if config.init else (None, None)
    corpus = load_corpus(config.data)
    log(f"corpus: {corpus.description}, {len(corpus.text) / 1e6:.1f} M characters")
    if init_model is None:
        started = time.perf_counter()
        tokenizer = train_tokenizer(corpus.text, config)
        merges = len(tokenizer.mergeable_ranks) - 256
        short = (f" (the text ran out of pairs to merge before {config.vocab_size - 257}: ids up to"
                 f" {config.vocab_size - 1} are kept for the model, the unused ones never occur)"
                 if merges < config.vocab_size - 257 else "")
        log(f"tokenizer: {merges} merges learned in {time.perf_counter() - started:.1f} s,"
            f" a vocabulary of {tokenizer.vocab_size} ids{short}")
        model_config = config.model_config(tokenizer.vocab_size)
    else:
        log(f"init: the weights and the {tokenizer.vocab_size}-token tokenizer of {config.init}")
        model_config = dataclasses.replace(config.model_config(config.vocab_size),
                                           layer_norm_eps=init_model.config.layer_norm_eps)
    run = build_run(config, tokenizer, corpus.text, log, model_config, initial_weights=init_model)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / METRICS_FILE).unlink(missing_ok=True)
    return run


def _load_init(config: TrainConfig, log) -> tuple[GPT, BPETokenizer]:
    """The init's model and tokenizer, once its shape is checked against ``config``."""
    model, tokenizer = load_model(config.init, log=log)
    differing = [f"`{name}` {getattr(config, name)} (the init has {value})"
                 for name, value in init_shape(model.config).items() if getattr(config, name) != value]
    if differing:
        raise SettingError(f"`init` {config.init}: the settings disagree with its model: {', '.join(differing)};"
                           " TrainConfig.from_init fills them in")
    return model, tokenizer


def require_new_run_folder(out_dir: Path):
    """Refuse, in one line and before any work, an ``out_dir`` that holds a run already or cannot be written."""
    if (out_dir / "checkpoint").exists() or (out_dir / "checkpoint.old").exists():  # .old: a crash mid-save
        raise TrainingError(f"{out_dir} already holds a run: continue it with `resume`, or choose another `out_dir`")
    require_writable_folder(out_dir)


def require_writable_folder(folder: Path):
    """Refuse, in one line, an ``out_dir`` that is a file or sits where nothing can be written.

    The test writes a nameless temporary file in the nearest folder that
    exists (``folder`` itself, or the ancestor it would be created in), so it
    leaves nothing behind, not even an empty run folder.
    """
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise SettingError(f"`out_dir` {folder}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise SettingError(f"`out_dir` {folder}: cannot write in {existing} ({error.strerror or error})") from error


def with_workers_fixed(config: TrainConfig) -> TrainConfig:
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


def restore_run(out_dir, changes: dict, log, config_class=TrainConfig, fixed_on_resume=FIXED_ON_RESUME,
                build=None) -> Run:
    """Rebuild the run saved in ``out_dir``, with the allowed ``changes`` applied.

    A recipe built on this one (distillation) passes its own ``config_class``,
    the settings it fixes, and ``build(config, tokenizer, text, log,
    param_groups, checkpoint)`` for its own run; the default builds this
    recipe's.
    """
    fixed = {key: value for key, value in changes.items() if key in fixed_on_resume}
    if (Path(out_dir) / STATE_FILE).is_file():
        raise SettingError(f"`out_dir` {out_dir} is a checkpoint folder; resume its run folder, {Path(out_dir).parent}")
    checkpoint = load_checkpoint(out_dir, require_config=fixed)
    if checkpoint.fallback:
        log(checkpoint.fallback)
    loop.require_loop_state(checkpoint)
    missing = [key for key in RECIPE_STATE_KEYS if key not in checkpoint.train_state]
    if missing:
        raise CheckpointError(f"{checkpoint.folder}: not a checkpoint written by npllm train"
                              f" (state.json lacks {', '.join(missing)})")
    saved = {"workers": 1, **checkpoint.train_state["config"]}  # (a checkpoint from before workers existed ran on one)
    try:
        config = with_workers_fixed(config_class(**{**saved, **changes, "out_dir": str(out_dir)}))
    except TypeError as error:  # settings this recipe does not have: the run is another recipe's
        raise CheckpointError(f"{checkpoint.folder}: a run of another kind ({error}); resume it with the command"
                              " that started it (npllm train --model bert, npllm distill, ...)") from None
    if checkpoint.tokenizer_path is None:
        raise CheckpointError(f"{checkpoint.folder}: the checkpoint has no tokenizer file")
    tokenizer = BPETokenizer.load(checkpoint.tokenizer_path)
    text = load_corpus(config.data).text
    if text_sha256(text) != checkpoint.train_state["corpus_sha256"]:
        raise CheckpointError(f"{checkpoint.folder}: the text of `data` {config.data} is not the text this run"
                              " was trained on (changed, or a relative path read from another folder)")
    def saved_groups(model, config):
        try:
            return _saved_param_groups(model, checkpoint.train_state["optimizer"], config)
        except (KeyError, TypeError) as error:
            raise CheckpointError(f"{checkpoint.folder}: its optimizer state does not fit this model ({error})") from error

    if build is None:
        model_config = GPTConfig(**checkpoint.train_state["model_config"])
        run = build_run(config, tokenizer, text, log, model_config, param_groups=saved_groups)
    else:
        run = build(config, tokenizer, text, log, saved_groups, checkpoint)
    loop.restore(run, checkpoint)
    log(f"resumed {out_dir} at step {run.step}")
    return run


def _saved_param_groups(model: GPT, saved_optimizer: dict, config: TrainConfig) -> list[dict]:
    """The parameter groups the checkpoint's optimizer had, by name.

    A checkpoint from before groups were saved by name (npllm 0.1) decayed the
    Linear layers' matrices only, not the embeddings: its groups are rebuilt
    by that rule, so that it resumes exactly as it was trained.  (In a GPT the
    matrices that are not Linear weights are exactly the two embedding tables.)
    """
    groups = saved_optimizer["param_groups"]
    if all("names" in group for group in groups):
        return param_groups_by_name(model, groups)
    embeddings = {"wte.weight", "wpe.weight"}
    return configure_param_groups(model, config.weight_decay,
                                  decays=lambda name, param: param.ndim >= 2 and name not in embeddings)


def _optimizer(config: TrainConfig, param_groups: list[dict]) -> AdamW:
    return AdamW(param_groups, lr=config.lr, betas=(0.9, config.beta2))


def _new_param_groups(model: GPT, config: TrainConfig) -> list[dict]:
    return configure_param_groups(model, config.weight_decay)


def build_run(config: TrainConfig, tokenizer: BPETokenizer, text: str, log, model_config: GPTConfig = None,
              param_groups=_new_param_groups, initial_weights: GPT | None = None, objective=None, run_class=None,
              **run_fields) -> Run:
    """The run's objects; ``param_groups(model, config)`` chooses the optimizer's groups (a resume: the saved ones).

    ``model_config`` defaults to ``config``'s shape at the tokenizer's vocabulary; ``initial_weights``, a
    model of its shape, replaces the random initialisation.

    Another recipe changes what is learned with ``objective`` (default
    ``NextToken``; evaluation always measures next-token loss, comparable
    across recipes) and keeps its own objects with ``run_class`` (a subclass
    of ``Run``) and ``run_fields``.
    """
    tokens = load_or_encode(text, tokenizer)
    train_tokens, validation_tokens = split_tokens(tokens, config.validation_fraction)
    require_windows(validation_tokens, config.context_length, "validation")  # now, not at the first evaluation
    log(f"tokens: {len(train_tokens):,} for training, {len(validation_tokens):,} for validation;"
        f" unigram baseline loss {unigram_loss(train_tokens, validation_tokens, tokenizer.vocab_size):.3f}")
    model = GPT(model_config or config.model_config(tokenizer.vocab_size), seed=config.seed)
    if initial_weights is not None:
        model.load_state_dict(initial_weights.state_dict())
    log(f"model: {model.num_parameters():,} parameters, {model.flops_per_token() / 1e6:.1f} MFLOP per token;"
        f" each batch shared by {config.workers} worker thread{'s' * (config.workers > 1)}")
    return (run_class or Run)(
        model=model,
        objective=objective or NextToken(),
        evaluation_objective=NextToken(),
        batches=RandomWindows(train_tokens, config.context_length, config.batch_size, seed=config.seed),
        evaluation_batches=lambda: evaluation_batches(validation_tokens, config.context_length, config.batch_size,
                                                      config.eval_windows),
        **optimisation(config, model, param_groups),
        tokenizer=tokenizer,
        config=config,
        validation_tokens=validation_tokens,
        corpus_sha256=text_sha256(text),
        **run_fields,
    )


def optimisation(config: TrainConfig, model, param_groups) -> dict:
    """The run's fields that every pre-training recipe builds alike from ``TrainConfig``'s settings.

    AdamW over ``param_groups(model, config=config)``, the warm-up and cosine
    schedule, the data-parallel replicas, the loop's settings and the run folder.
    """
    decay_steps = config.decay_steps or config.max_steps
    return dict(
        optimizer=_optimizer(config, param_groups(model, config=config)),
        schedule=WarmupCosineLR(config.lr, min(config.warmup_steps, decay_steps), decay_steps, config.min_lr),
        parallel=DataParallel(model, config.workers),
        settings=LoopSettings(max_steps=config.max_steps, grad_accum=config.grad_accum, grad_clip=config.grad_clip,
                              eval_interval=config.eval_interval),
        out_dir=Path(config.out_dir),
    )


def unigram_loss(train_tokens, validation_tokens, vocab_size) -> float:
    """Cross-entropy on validation of the best model that ignores context: token frequencies.

    The number any trained model must beat; add-one smoothing keeps unseen tokens finite.
    """
    counts = np.bincount(train_tokens, minlength=vocab_size) + 1.0
    log_probs = np.log(counts / counts.sum())
    return float(-log_probs[validation_tokens].mean())


def load_model(run_dir, log=print):
    """The GPT and tokenizer in ``run_dir``: a run folder of ``npllm train``, its checkpoint folder, or a Hugging Face GPT-2 folder.

    Of a run, only the weights, the state and the tokenizer are read (and
    checked): the optimizer's file does not matter here.  A LoRA fine-tuning
    run's adapters are merged into its weights: the model is a plain GPT.  A fallback to the
    checkpoint before a damaged one is told to ``log``.
    """
    if (Path(run_dir) / CONFIG_FILE).is_file():
        model, tokenizer = load_pretrained(run_dir)
        if not isinstance(model, GPT) or tokenizer is None:
            what = "no tokenizer files (tokenizer.json, or vocab.json and merges.txt)" if isinstance(model, GPT) \
                else f"a {type(model).__name__}, not a GPT"
            raise PretrainedError(f"{run_dir}: the Hugging Face folder holds {what}")
        return model, tokenizer
    checkpoint = load_checkpoint(run_dir, with_optimizer=False)
    if checkpoint.fallback:
        log(checkpoint.fallback)
    if checkpoint.tokenizer_path is None or "model_config" not in checkpoint.train_state:
        raise CheckpointError(f"{checkpoint.folder}: not a checkpoint written by npllm train (no tokenizer or config)")
    try:
        model = GPT(GPTConfig(**checkpoint.train_state["model_config"]))
    except TypeError as error:  # another model's settings (a BERT run: hidden_act, attention_dropout, ...)
        raise CheckpointError(f"{checkpoint.folder}: not a GPT run, so this command cannot use it ({error})") from None
    lora = checkpoint.train_state.get("lora")  # a LoRA fine-tuning run saves its adapters beside the frozen base
    if lora:
        apply_lora(model, lora["rank"], lora["alpha"], targets=lora["targets"])
    try:
        model.load_state_dict(checkpoint.model_state)
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{checkpoint.folder}: weights do not fit the saved config ({error})") from error
    return merge_lora(model), BPETokenizer.load(checkpoint.tokenizer_path)


def weights_sha256(run_dir) -> str:
    """A fingerprint of the weights ``load_model`` reads from ``run_dir``: one SHA-256 over its weight files.

    A run folder's is its model.safetensors; a Hugging Face folder's, every
    ``*.safetensors`` file of it (one, or the shards) in name order.  A run
    that starts from a model records it and refuses to resume from another.
    """
    folder = Path(run_dir)
    if (folder / CONFIG_FILE).is_file():
        files = sorted(folder.glob("*.safetensors"))
    else:
        files = [load_checkpoint(folder, with_optimizer=False).folder / MODEL_FILE]
    if len(files) == 1:
        return file_sha256(files[0])
    return hashlib.sha256(" ".join(file_sha256(path) for path in files).encode()).hexdigest()
