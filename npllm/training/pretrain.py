"""Pre-training a GPT: the recipe that turns a corpus into a language model.

What this recipe decides, and hands to the shared loop (``loop.py``) as a
``TrainingRun``:

    corpus       the standard library's source (default), the docs, a download, or the user's files,
                 read whole; or a corpus too large for that: a shard folder of ``npllm tokenize``,
                 or a stream (a JSONL file, a Wikipedia dump, compressed files) tokenized into
                 shards in the run folder first (``read_data``, ``corpus_tokens``)
    tokenizer    a byte-level BPE learned from the corpus's first characters (of a stream: a seeded
                 sample of its documents), <|endoftext|> last; a shard folder's own
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

A sharded corpus keeps its documents: windows cross their boundaries by
default (``boundaries`` "cross", as GPT-2), or never (``"respect"``, see
``npllm.data.batches``).

Left out on purpose: padding short documents to full windows.
"""

import dataclasses
import hashlib
import math
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npllm.data.batches import RandomWindows, evaluation_batches, require_windows
from npllm.data.shards import Shards, is_shard_folder, open_shards, tokenize_to_shards
from npllm.data.sources import Corpus, load_corpus
from npllm.data.streams import DocumentSource, sample_documents, wants_streaming
from npllm.data.tokens import (load_or_encode, split_tokens, text_sha256, token_cache_path, token_counts,
                               tokenizer_fingerprint)
from npllm.errors import SettingError
from npllm.io.safetensors import CheckpointError
from npllm.models import GPT, GPTConfig
from npllm.nn.lora import apply_lora, merge_lora
from npllm.optim import AdamW, WarmupCosineLR, configure_param_groups, param_groups_by_name
from npllm.pretrained import PretrainedError, load_pretrained
from npllm.pretrained.folder import CONFIG_FILE
from npllm.runtime.data_parallel import DataParallel
from npllm.runtime.memory import keep_freed_memory
from npllm.runtime.mpi import ranks_and_threads, world
from npllm.runtime.pool import cores
from npllm.tokenizer import BPETokenizer
from npllm.training import loop
from npllm.io.checksums import file_sha256
from npllm.training.checkpoint import CHECKPOINT_FOLDER, MODEL_FILE, STATE_FILE, load_checkpoint, read_json_object
from npllm.training.loop import METRICS_FILE, LoopSettings, TrainingError, TrainingRun  # noqa: F401 (METRICS_FILE: part of this recipe's API)
from npllm.training.objectives import NextToken

END_OF_TEXT = "<|endoftext|>"


@dataclass
class TrainConfig:
    """Everything a run needs; the defaults train in about six minutes on two CPU cores."""

    # data and tokenizer
    data: str = "stdlib"                    # "stdlib", "docs", "shakespeare", a text file / folder, a shard
                                            # folder, or a stream: JSONL, a MediaWiki dump, .gz/.bz2/.xz files
    text_field: str = "text"                # the key of each JSONL record's text
    boundaries: str = "cross"               # windows "cross" document boundaries (GPT-2) or "respect" them
    shard_tokens: int = 100_000_000         # a stream is tokenized into shards of about this many ids
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
                                            # recorded in the checkpoint: a resumed run keeps its count);
                                            # as many processes tokenize a streamed corpus
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
                              "tokenizer_chars", "decay_steps", "shard_tokens"), [
            ("vocab_size", self.vocab_size >= 257, "at least 257 (the 256 bytes and <|endoftext|>)"),
            *optimisation_checks(self),
            ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
            ("validation_fraction", 0 < self.validation_fraction < 1, "between 0 and 1"),
            ("boundaries", self.boundaries in BOUNDARIES, "cross or respect"),
            ("text_field", isinstance(self.text_field, str) and self.text_field != "", "a non-empty key"),
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


BOUNDARIES = ("cross", "respect")


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
FIXED_ON_RESUME = ("data", "text_field", "boundaries", "vocab_size", "validation_fraction", "n_layer", "n_head", "n_embd", "context_length",
                   "dropout", "batch_size", "grad_accum", "weight_decay", "beta2", "seed", "init")


# What this recipe adds to the loop's state.json, all of which ``restore_run`` needs.
RECIPE_STATE_KEYS = ("config", "model_config", "corpus_sha256")


@dataclass
class Run(TrainingRun):
    """A pre-training run: the loop's ``TrainingRun`` and what this recipe keeps beside it."""

    config: TrainConfig = None
    validation_tokens: np.ndarray = None  # the held-out end of the corpus
    corpus_sha256: str = ""  # the training ids' fingerprint (the text's, or the shards'): a resume must read the same

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
    corpus = read_data(config, log)
    if isinstance(corpus, Shards):
        tokenizer = shard_tokenizer(corpus, tokenizer, config, log)
        model_config = (config.model_config(tokenizer.vocab_size) if init_model is None else
                        dataclasses.replace(config.model_config(config.vocab_size),
                                            layer_norm_eps=init_model.config.layer_norm_eps))
    elif init_model is None:
        started = time.perf_counter()
        tokenizer = train_tokenizer(tokenizer_sample(corpus, config), config)
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
    run = build_run(config, tokenizer, corpus, log, model_config, initial_weights=init_model)
    loop.prepare_run_folder(out_dir)
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
    """Refuse, in one line and before any work, an ``out_dir`` that holds a run already or cannot be written.

    Under MPI every rank checks (the ranks are interchangeable: a resume may
    put rank 0 on another machine), and every rank stops if one cannot.
    """
    def check():
        if (out_dir / "checkpoint").exists() or (out_dir / "checkpoint.old").exists():  # .old: a crash mid-save
            raise TrainingError(f"{out_dir} already holds a run: continue it with `resume`, or choose another"
                                " `out_dir`")
        require_writable_folder(out_dir)

    world().require_everywhere(check)


def read_corpus(data: str):
    """``load_corpus(data)``, read (or downloaded and cached) by rank 0 first, then by the other ranks."""
    return world().writer_first(lambda: load_corpus(data))


def cached_tokens(text: str, tokenizer) -> np.ndarray:
    """``load_or_encode``: rank 0 encodes and caches the tokens while the others wait, then they map the same file.

    The file's name is a fingerprint of the text and the tokenizer: the ranks
    compare it first, so no rank trains on other ids than rank 0's.
    """
    ranks = world()
    ranks.require_same({"token_cache": token_cache_path(text, tokenizer).name}, "file")
    return ranks.writer_first(lambda: load_or_encode(text, tokenizer))


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


def train_tokenizer(sample: str | list[str], config: TrainConfig) -> BPETokenizer:
    """A byte-level BPE with ``vocab_size`` ids, the last one being <|endoftext|>.

    Learned from ``sample``: a text's first ``tokenizer_chars``, or the documents ``tokenizer_sample`` drew.
    """
    return BPETokenizer.train(within_budget(sample, config), vocab_size=config.vocab_size, pattern="gpt4",
                              special_tokens={END_OF_TEXT: config.vocab_size - 1})


def within_budget(sample: str | list[str], config: TrainConfig) -> str | list[str]:
    """A text cut to its first ``tokenizer_chars``; a stream's sample is drawn to that size already."""
    return sample[: config.tokenizer_chars] if isinstance(sample, str) else sample


# ---- the corpus: read whole, streamed into shards, or sharded already ------

def read_data(config: TrainConfig, log) -> Corpus | DocumentSource | Shards:
    """``config.data`` as a corpus in memory (the names, a plain text file or folder), a stream, or shards.

    A folder with an ``index.json`` is a shard folder of ``npllm tokenize``; a
    compressed file, a JSONL file or an XML dump (or a folder holding one) is
    streamed; anything else is read whole, as before.
    """
    named = config.data in ("stdlib", "docs", "shakespeare")
    if not named and is_shard_folder(config.data):
        shards = open_shards(config.data)
        log(f"corpus: the shards of {config.data} ({shards.index['source']}): {len(shards.train):,} tokens"
            f" for training, {len(shards.validation):,} for validation")
        return shards
    if not named and wants_streaming(Path(config.data)):
        source = DocumentSource(config.data, config.text_field)
        log(f"corpus: {source.description}, streamed into shards")
        return source
    if config.boundaries == "respect":
        raise SettingError(f"`boundaries` respect needs documents: {config.data} is read as one text; give a shard"
                           " folder (npllm tokenize) or a streamed corpus (JSONL, a dump, compressed files)")
    corpus = read_corpus(config.data)
    log(f"corpus: {corpus.description}, {len(corpus.text) / 1e6:.1f} M characters")
    return corpus


def tokenizer_sample(corpus: Corpus | DocumentSource, config: TrainConfig) -> str | list[str]:
    """What the tokenizer learns from: a text (its first ``tokenizer_chars`` are used), or a seeded sample of a stream."""
    if isinstance(corpus, Corpus):
        return corpus.text
    return sample_documents(corpus, config.tokenizer_chars, config.seed)


def shard_tokenizer(shards: Shards, init_tokenizer, config: TrainConfig, log) -> BPETokenizer:
    """The tokenizer the shards were encoded with (an init's must be the same one)."""
    tokenizer = BPETokenizer.load(shards.tokenizer_path)
    if init_tokenizer is not None and tokenizer_fingerprint(init_tokenizer) != shards.index["tokenizer_sha256"]:
        raise SettingError(f"`data` {config.data} was tokenized with another tokenizer than the one of `init`"
                           f" {config.init}; tokenize it with that one (npllm tokenize --tokenizer)")
    log(f"tokenizer: the shards' own, a vocabulary of {tokenizer.vocab_size} ids")
    return tokenizer


@dataclass(frozen=True)
class CorpusTokens:
    """A corpus's ids for training and for validation, its fingerprint, and the id that ends its documents."""

    train: object        # an array, or ShardedTokens
    validation: object
    fingerprint: str     # equal fingerprints: the same ids (a resumed run checks it)
    end_of_text: int | None = None  # None: the corpus is one text, without documents

    def boundary_id(self, config: TrainConfig) -> int | None:
        """The id windows must not cross, when ``boundaries`` says so."""
        return self.end_of_text if config.boundaries == "respect" else None


def corpus_tokens(config: TrainConfig, tokenizer: BPETokenizer, corpus, log) -> CorpusTokens:
    """The ids of ``corpus`` (from ``read_data``, or a text) under ``tokenizer``: cached, or sharded in the run folder."""
    if isinstance(corpus, str):
        corpus = Corpus(corpus, "a text")
    if isinstance(corpus, Corpus):
        tokens = cached_tokens(corpus.text, tokenizer)
        return CorpusTokens(*split_tokens(tokens, config.validation_fraction), text_sha256(corpus.text))
    if isinstance(corpus, DocumentSource):  # rank 0 writes the shards while the other ranks wait, then all map them
        folder = Path(config.out_dir) / "shards"
        world().on_writer(lambda: tokenize_to_shards(corpus, tokenizer, folder, config.shard_tokens,
                                                     config.validation_fraction, workers=config.workers, log=log))
        corpus = open_shards(folder)
    elif corpus.index["validation_fraction"] != config.validation_fraction:
        raise SettingError(f"`validation_fraction` {config.validation_fraction} differs from the one `data`"
                           f" {config.data} was split with, {corpus.index['validation_fraction']}")
    if corpus.index["tokenizer_sha256"] != tokenizer_fingerprint(tokenizer):
        raise SettingError(f"`data` {config.data}: its shards were encoded with another tokenizer than this run's")
    return CorpusTokens(corpus.train, corpus.validation, corpus.fingerprint(), corpus.end_of_text)


def restore_run(out_dir, changes: dict, log, config_class=TrainConfig, fixed_on_resume=FIXED_ON_RESUME,
                build=None) -> Run:
    """Rebuild the run saved in ``out_dir``, with the allowed ``changes`` applied.

    A recipe built on this one (distillation) passes its own ``config_class``,
    the settings it fixes, and ``build(config, tokenizer, corpus, log,
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
    corpus = read_data(config, log)

    def saved_groups(model, config):
        try:
            return _saved_param_groups(model, checkpoint.train_state["optimizer"], config)
        except (KeyError, TypeError) as error:
            raise CheckpointError(f"{checkpoint.folder}: its optimizer state does not fit this model ({error})") from error

    if build is None:
        model_config = GPTConfig(**checkpoint.train_state["model_config"])
        run = build_run(config, tokenizer, corpus, log, model_config, param_groups=saved_groups)
    else:
        run = build(config, tokenizer, corpus, log, saved_groups, checkpoint)
    require_same_corpus(run, checkpoint, config)
    loop.restore(run, checkpoint)
    log(f"resumed {out_dir} at step {run.step}")
    return run


def require_same_corpus(run, checkpoint, config: TrainConfig):
    """Refuse to resume on other ids than the run was trained on."""
    if run.corpus_sha256 != checkpoint.train_state["corpus_sha256"]:
        raise CheckpointError(f"{checkpoint.folder}: the text of `data` {config.data} is not the text this run"
                              " was trained on (changed, or a relative path read from another folder)")


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


def build_run(config: TrainConfig, tokenizer: BPETokenizer, corpus, log, model_config: GPTConfig = None,
              param_groups=_new_param_groups, initial_weights: GPT | None = None, objective=None, run_class=None,
              **run_fields) -> Run:
    """The run's objects; ``param_groups(model, config)`` chooses the optimizer's groups (a resume: the saved ones).

    ``corpus`` is what ``read_data`` returned: its ids come from ``corpus_tokens``.
    ``model_config`` defaults to ``config``'s shape at the tokenizer's vocabulary; ``initial_weights``, a
    model of its shape, replaces the random initialisation.

    Another recipe changes what is learned with ``objective`` (default
    ``NextToken``; evaluation always measures next-token loss, comparable
    across recipes) and keeps its own objects with ``run_class`` (a subclass
    of ``Run``) and ``run_fields``.
    """
    tokens = corpus_tokens(config, tokenizer, corpus, log)
    train_tokens, validation_tokens, boundary_id = tokens.train, tokens.validation, tokens.boundary_id(config)
    require_windows(validation_tokens, config.context_length, "validation")  # now, not at the first evaluation
    log(f"tokens: {len(train_tokens):,} for training, {len(validation_tokens):,} for validation;"
        f" unigram baseline loss {unigram_loss(train_tokens, validation_tokens, tokenizer.vocab_size):.3f}")
    model = GPT(model_config or config.model_config(tokenizer.vocab_size), seed=config.seed)
    if initial_weights is not None:
        model.load_state_dict(initial_weights.state_dict())
    log(f"model: {model.num_parameters():,} parameters, {model.flops_per_token() / 1e6:.1f} MFLOP per token;"
        f" each batch shared by {ranks_and_threads(config.workers)}")
    return (run_class or Run)(
        model=model,
        objective=objective or NextToken(),
        evaluation_objective=NextToken(),
        batches=RandomWindows(train_tokens, config.context_length, config.batch_size, seed=config.seed,
                              boundary_id=boundary_id),
        evaluation_batches=lambda: evaluation_batches(validation_tokens, config.context_length, config.batch_size,
                                                      config.eval_windows, boundary_id),
        **optimisation(config, model, param_groups),
        tokenizer=tokenizer,
        config=config,
        validation_tokens=validation_tokens,
        corpus_sha256=tokens.fingerprint,
        **run_fields,
    )


def warmup_cosine(config, decay_steps: int) -> WarmupCosineLR:
    """The warm-up and cosine schedule of ``config``, its warm-up cut (with a warning) to fit ``decay_steps``."""
    warmup = config.warmup_steps
    if warmup > decay_steps:
        warnings.warn(f"`warmup_steps` {warmup} is more than the {decay_steps} steps the schedule lasts;"
                      f" the warm-up is cut to {decay_steps}")
        warmup = decay_steps
    return WarmupCosineLR(config.lr, warmup, decay_steps, config.min_lr)


def optimisation(config: TrainConfig, model, param_groups) -> dict:
    """The run's fields that every pre-training recipe builds alike from ``TrainConfig``'s settings.

    AdamW over ``param_groups(model, config=config)``, the warm-up and cosine
    schedule, the data-parallel replicas, the loop's settings and the run folder.
    """
    decay_steps = config.decay_steps or config.max_steps
    return dict(
        optimizer=_optimizer(config, param_groups(model, config=config)),
        schedule=warmup_cosine(config, decay_steps),
        parallel=DataParallel(model, config.workers),
        settings=LoopSettings(max_steps=config.max_steps, grad_accum=config.grad_accum, grad_clip=config.grad_clip,
                              eval_interval=config.eval_interval),
        out_dir=Path(config.out_dir),
    )


def unigram_loss(train_tokens, validation_tokens, vocab_size) -> float:
    """Cross-entropy on validation of the best model that ignores context: token frequencies.

    The number any trained model must beat; add-one smoothing keeps unseen tokens finite.
    """
    counts = token_counts(train_tokens, vocab_size) + 1.0
    log_probs = np.log(counts / counts.sum())
    validation_counts = token_counts(validation_tokens, vocab_size)
    return float(-(validation_counts * log_probs).sum() / validation_counts.sum())


def model_kind(path) -> str:
    """"gpt", "bert" or "bart": what a run folder (or its checkpoint folder) or a Hugging Face folder holds.

    Read from JSON alone: config.json's ``model_type``, else the run's saved
    model_config, where each model's config has a field the GPT's lacks
    (BART's ``encoder_layers``, BERT's ``n_inner``).  A folder that says
    nothing readable counts as a GPT's, whose loader then names what is wrong.
    """
    folder = Path(path)
    if (folder / CONFIG_FILE).is_file():
        model_type = _json_object(folder / CONFIG_FILE).get("model_type")
        return model_type if model_type in ("bert", "bart") else "gpt"
    for state in (folder / CHECKPOINT_FOLDER / STATE_FILE, folder / STATE_FILE):
        if state.is_file():
            model_config = _json_object(state).get("model_config", {})
            return "bart" if "encoder_layers" in model_config else "bert" if "n_inner" in model_config else "gpt"
    return "gpt"


def _json_object(path: Path) -> dict:
    """``read_json_object``'s dict, or an empty one: ``model_kind`` only looks, the loader says what is wrong."""
    try:
        return read_json_object(path, "not a JSON object")
    except CheckpointError:
        return {}


def load_model(run_dir, log=print, model_class=GPT, config_class=GPTConfig, kind="a GPT"):
    """The GPT and tokenizer in ``run_dir``: a run folder of ``npllm train``, its checkpoint folder, or a Hugging Face GPT-2 folder.

    Of a run, only the weights, the state and the tokenizer are read (and
    checked): the optimizer's file does not matter here.  A LoRA fine-tuning
    run's adapters are merged into its weights: the model is a plain GPT.  A
    fallback to the checkpoint before a damaged one is told to ``log``.
    Another model's recipe loads its runs here with its ``model_class`` (built
    from ``config_class`` of the saved model_config) and names it ``kind``; a
    run or folder of another model is refused in one line.
    """
    if (Path(run_dir) / CONFIG_FILE).is_file():
        model, tokenizer = load_pretrained(run_dir)
        if not isinstance(model, model_class) or tokenizer is None:
            what = "no tokenizer files" if isinstance(model, model_class) \
                else f"a {type(model).__name__}, not {kind}"
            raise PretrainedError(f"{run_dir}: the Hugging Face folder holds {what}")
        return model, tokenizer
    checkpoint = load_checkpoint(run_dir, with_optimizer=False)
    if checkpoint.fallback:
        log(checkpoint.fallback)
    if checkpoint.tokenizer_path is None or "model_config" not in checkpoint.train_state:
        raise CheckpointError(f"{checkpoint.folder}: not a checkpoint written by npllm train (no tokenizer or config)")
    try:
        model = model_class(config_class(**checkpoint.train_state["model_config"]))
    except TypeError as error:  # another model's settings (a BERT run: hidden_act, attention_dropout, ...)
        raise CheckpointError(f"{checkpoint.folder}: not {kind} run, so this command cannot use it ({error})") from None
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
