"""Pre-training BERT: the masked-LM recipe behind ``npllm train --model bert``.

The same shape as the GPT recipe (``pretrain.py``), whose settings and
checks it shares (``BERTTrainConfig`` extends ``TrainConfig``); what differs:

    tokenizer    the byte-level BPE with four special tokens last: [PAD], [CLS], [SEP], [MASK]
                 (encode_ordinary never produces them from text: the corpus cannot forge a mask)
    model        ``BERTForMaskedLM`` in miniature (``BERTConfig`` from the settings)
    examples     windows of T - 2 tokens framed as [CLS] ... [SEP], 15% of their positions
                 chosen and hidden (80% [MASK], 10% random, 10% kept; ``npllm.data.masking``),
                 starts and masks drawn from one seeded generator that the checkpoint saves
    objective    ``MaskedLM``: cross-entropy on the chosen positions only
    evaluation   the held-out windows with the same masks every time: the loss, and
                 ``val_accuracy``, the share of hidden tokens the model's top guess gets right

The baselines logged at the start are what a model that ignores the context
scores on the same held-out tokens: the unigram loss (token frequencies), and
the accuracy of always guessing the most frequent token.

The model is BERT's own, exact erf GELU included (``hidden_act`` "gelu";
"gelu_new", GPT-2's tanh form, is ~5x cheaper per GELU and ~7% of a step).

Left out: next-sentence prediction (see ``MaskedLM``), whole-word masking.
"""

import time
from dataclasses import dataclass
from pathlib import Path

from npllm.data.masking import Boundaries, MaskedWindows, MaskingRule, masked_evaluation_batches
from npllm.data.shards import Shards
from npllm.data.tokens import token_counts
from npllm.errors import NpllmError, SettingError
from npllm.io.safetensors import CheckpointError
from npllm.models import BERTConfig, BERTForMaskedLM
from npllm.optim import configure_param_groups, param_groups_by_name
from npllm.pretrained import load_pretrained
from npllm.runtime.memory import keep_freed_memory
from npllm.runtime.mpi import ranks_and_threads
from npllm.tensor import no_grad
from npllm.tokenizer import BPETokenizer
from npllm.training import loop
from npllm.training.checkpoint import CHECKPOINT_FOLDER, STATE_FILE, load_checkpoint
from npllm.training.objectives import MaskedLM
from npllm.training.pretrain import (FIXED_ON_RESUME, RECIPE_STATE_KEYS, Run, TrainConfig, corpus_tokens,
                                     optimisation, read_data, require_new_run_folder, require_same_corpus,
                                     shard_tokenizer, tokenizer_sample, unigram_loss, with_workers_fixed,
                                     within_budget)

SPECIAL_TOKENS = ("[PAD]", "[CLS]", "[SEP]", "[MASK]")  # the last four ids, in this order


@dataclass
class BERTTrainConfig(TrainConfig):
    """``TrainConfig``'s settings for a BERT, and the masked-LM ones; the defaults train in under twenty minutes."""

    n_inner: int | None = None              # MLP width (default 4 n_embd)
    hidden_act: str = "gelu"                # BERT's exact GELU; "gelu_new" for GPT-2's tanh form
    mask_rate: float = 0.15                 # share of the positions hidden and predicted (BERT: 15%)
    warmup_steps: int = 200                 # post-LayerNorm needs its warm-up (GPT's lr of 2e-3 kept: at step
                                            # 250, 3e-3 had learned more than 1e-3, 6.21 vs 6.34 held-out loss)
    out_dir: str = "runs/bert"

    def __post_init__(self):
        if self.init:
            raise SettingError("`init` starts a GPT from another model's weights; a BERT run starts from random ones")
        if not self.vocab_size >= 256 + len(SPECIAL_TOKENS):
            raise SettingError(f"`vocab_size` must be at least {256 + len(SPECIAL_TOKENS)} (the 256 bytes and"
                               f" {', '.join(SPECIAL_TOKENS)}), got {self.vocab_size}")
        self.masking_rule(self.vocab_size)  # checks `mask_rate`
        super().__post_init__()  # the shared checks, and BERTConfig's (model_config)

    def model_config(self, vocab_size) -> BERTConfig:
        return BERTConfig(vocab_size=vocab_size, context_length=self.context_length, n_layer=self.n_layer,
                          n_head=self.n_head, n_embd=self.n_embd, n_inner=self.n_inner or 4 * self.n_embd,
                          dropout=self.dropout, attention_dropout=self.dropout, hidden_act=self.hidden_act,
                          pad_token_id=vocab_size - len(SPECIAL_TOKENS))

    def masking_rule(self, vocab_size) -> MaskingRule:
        """[MASK] is the last id; random replacements are ordinary tokens (every id before the special ones)."""
        return MaskingRule(mask_id=vocab_size - 1, random_ids=vocab_size - len(SPECIAL_TOKENS), rate=self.mask_rate)


FIXED_ON_RESUME_BERT = FIXED_ON_RESUME + ("n_inner", "hidden_act", "mask_rate")


@dataclass
class BERTRun(Run):
    """A masked-LM run: the GPT recipe's ``Run`` (config, corpus fingerprint), and masked-token accuracy."""

    evaluation_set: object = None  # () -> the held-out masked batches

    def evaluation_metrics(self) -> dict:
        return {"val_accuracy": masked_accuracy(self.model, self.evaluation_set(), self.objective)}


def masked_accuracy(model, batches, objective: MaskedLM) -> float:
    """The share of hidden tokens whose highest-scoring guess is the original (dropout off, no graph)."""
    model.eval()
    correct = total = 0
    with no_grad():
        for batch in batches:
            positions, targets = objective.chosen(batch)
            logits = model.masked_logits(batch["input_ids"], positions)  # (N, V)
            correct += int((logits.data.argmax(axis=-1) == targets).sum())
            total += len(targets)
    model.train()
    return correct / max(total, 1)


def train(config: BERTTrainConfig, progress=True, log=print) -> BERTRun:
    """Start a new masked-LM run in ``config.out_dir`` and train it for ``config.max_steps`` steps."""
    keep_freed_memory()
    return loop.train(start_run(config, log), progress, log)


def resume(out_dir, changes=None, progress=True, log=print) -> BERTRun:
    """Continue the masked-LM run saved in ``out_dir``, exactly where it stopped (see ``pretrain.resume``)."""
    keep_freed_memory()
    return loop.train(restore_run(out_dir, changes or {}, log), progress, log)


def start_run(config: BERTTrainConfig, log, special_tokens=SPECIAL_TOKENS, build=None):
    """A new run of ``config``: its tokenizer learned with ``special_tokens`` last, then ``build(config, tokenizer, text, log)``.

    The encoder–decoder's recipe starts its runs here too, with its own special tokens and build.
    """
    config = with_workers_fixed(config)
    out_dir = Path(config.out_dir)
    require_new_run_folder(out_dir)
    corpus = read_data(config, log)
    if isinstance(corpus, Shards):
        tokenizer = shard_tokenizer(corpus, None, config, log)
        require_special_tokens_last(tokenizer, config, special_tokens)
    else:
        started = time.perf_counter()
        tokenizer = train_tokenizer(tokenizer_sample(corpus, config), config, special_tokens)
        log(f"tokenizer: {tokenizer.vocab_size} tokens learned in {time.perf_counter() - started:.1f} s")
    run = (build or _build_run)(config, tokenizer, corpus, log)
    loop.prepare_run_folder(out_dir)
    return run


def train_tokenizer(sample: str | list[str], config: BERTTrainConfig, special_tokens=SPECIAL_TOKENS) -> BPETokenizer:
    """A byte-level BPE of ``vocab_size`` ids whose last ones are ``special_tokens`` ([PAD], [CLS], [SEP], [MASK])."""
    first = config.vocab_size - len(special_tokens)
    return BPETokenizer.train(within_budget(sample, config), vocab_size=config.vocab_size, pattern="gpt4",
                              special_tokens={token: first + i for i, token in enumerate(special_tokens)})


def require_special_tokens_last(tokenizer: BPETokenizer, config: BERTTrainConfig, special_tokens=SPECIAL_TOKENS):
    """A shard folder's tokenizer must end with the recipe's special tokens, as the recipe's own does."""
    V = tokenizer.vocab_size
    expected = {token: V - len(special_tokens) + i for i, token in enumerate(special_tokens)}
    if {token: tokenizer.special_tokens.get(token) for token in special_tokens} != expected:
        raise SettingError(f"`data` {config.data}: its tokenizer does not end with {', '.join(special_tokens)}"
                           " (tokenize the corpus with the tokenizer of a run of this model)")


def restore_run(out_dir, changes: dict, log) -> BERTRun:
    """Rebuild the masked-LM run saved in ``out_dir``, with the allowed ``changes`` applied."""
    fixed = {key: value for key, value in changes.items() if key in FIXED_ON_RESUME_BERT}
    checkpoint = load_checkpoint(out_dir, require_config=fixed)
    loop.require_loop_state(checkpoint)
    state = checkpoint.train_state
    if any(key not in state for key in RECIPE_STATE_KEYS) or "mask_rate" not in state["config"] \
            or checkpoint.tokenizer_path is None:
        raise CheckpointError(f"{checkpoint.folder}: not a checkpoint written by npllm train --model bert")
    config = with_workers_fixed(BERTTrainConfig(**{**state["config"], **changes, "out_dir": str(out_dir)}))
    corpus = read_data(config, log)

    def saved_groups(model, config):
        try:
            return param_groups_by_name(model, state["optimizer"]["param_groups"])
        except (KeyError, TypeError) as error:
            raise CheckpointError(f"{checkpoint.folder}: its optimizer state does not fit this model ({error})") from error

    run = _build_run(config, BPETokenizer.load(checkpoint.tokenizer_path), corpus, log, param_groups=saved_groups)
    require_same_corpus(run, checkpoint, config)
    loop.restore(run, checkpoint)
    log(f"resumed {out_dir} at step {run.step}")
    return run


def _new_param_groups(model, config: BERTTrainConfig) -> list[dict]:
    return configure_param_groups(model, config.weight_decay)


def _build_run(config: BERTTrainConfig, tokenizer: BPETokenizer, corpus, log,
               param_groups=_new_param_groups) -> BERTRun:
    tokens = corpus_tokens(config, tokenizer, corpus, log)
    train_tokens, validation_tokens = tokens.train, tokens.validation
    V = tokenizer.vocab_size
    rule = config.masking_rule(V)
    cls_id, sep_id = tokenizer.special_tokens["[CLS]"], tokenizer.special_tokens["[SEP]"]
    boundary_id = tokens.boundary_id(config)
    boundaries = None if boundary_id is None else Boundaries(boundary_id, tokenizer.special_tokens["[PAD]"])

    def evaluation_set():
        return masked_evaluation_batches(validation_tokens, config.context_length, config.batch_size,
                                         config.eval_windows, rule, cls_id, sep_id, boundaries=boundaries)

    batches = MaskedWindows(train_tokens, config.context_length, config.batch_size, config.seed, rule, cls_id, sep_id,
                            boundaries)
    next(iter(evaluation_set()))  # too few held-out tokens for one window: say so now, not at the first evaluation
    log(f"tokens: {len(train_tokens):,} for training, {len(validation_tokens):,} for validation;"
        f" baselines on held-out tokens: unigram loss {unigram_loss(train_tokens, validation_tokens, V):.3f},"
        f" accuracy {most_frequent_accuracy(train_tokens, validation_tokens, V):.3f} (always the most frequent token)")
    model = BERTForMaskedLM(config.model_config(V), seed=config.seed)
    log(f"model: {model.num_parameters():,} parameters; masking {config.mask_rate:.0%} of each window;"
        f" each batch shared by {ranks_and_threads(config.workers)}")
    return run_with_evaluation_set(BERTRun, model, MaskedLM(), batches, evaluation_set, config, tokenizer,
                                   validation_tokens, tokens.fingerprint, param_groups)


def run_with_evaluation_set(run_class, model, objective, batches, evaluation_set, config, tokenizer,
                            validation_tokens, corpus_sha256, param_groups):
    """A pre-training run whose recipe measures more than the loss on ``evaluation_set`` (BERT's, BART's)."""
    return run_class(model=model, objective=objective, batches=batches, evaluation_batches=evaluation_set,
                     **optimisation(config, model, param_groups), tokenizer=tokenizer, config=config,
                     validation_tokens=validation_tokens, corpus_sha256=corpus_sha256,
                     evaluation_set=evaluation_set)


def most_frequent_accuracy(train_tokens, validation_tokens, vocab_size) -> float:
    """How often the training text's most frequent token is right on the held-out tokens."""
    most_frequent = token_counts(train_tokens, vocab_size).argmax()
    return float(token_counts(validation_tokens, vocab_size)[most_frequent] / len(validation_tokens))


def load_model(run_dir):
    """The BERTForMaskedLM and tokenizer saved by ``npllm train --model bert`` in ``run_dir``."""
    checkpoint = load_checkpoint(run_dir)
    if checkpoint.tokenizer_path is None or "model_config" not in checkpoint.train_state \
            or "n_inner" not in checkpoint.train_state["model_config"]:
        raise CheckpointError(f"{checkpoint.folder}: not a checkpoint written by npllm train --model bert")
    model = BERTForMaskedLM(BERTConfig(**checkpoint.train_state["model_config"]))
    try:
        model.load_state_dict(checkpoint.model_state)
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{checkpoint.folder}: weights do not fit the saved config ({error})") from error
    return model.eval(), BPETokenizer.load(checkpoint.tokenizer_path)


def load_encoder(path):
    """A run folder of ``npllm train --model bert`` (or its checkpoint folder), or a Hugging Face folder: (model, tokenizer).

    A Hugging Face folder must hold a tokenizer (what an encoder's user
    needs); which model it holds is the caller's to check.
    """
    folder = Path(path)
    if (folder / CHECKPOINT_FOLDER).is_dir() or (folder / STATE_FILE).is_file():
        return load_model(folder)
    model, tokenizer = load_pretrained(folder)
    if tokenizer is None:
        raise NpllmError(f"{folder}: has no tokenizer (vocab.txt or tokenizer.json)")
    return model, tokenizer
