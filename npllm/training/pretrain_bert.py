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

**Next-sentence prediction** (``next_sentence``, ``--next-sentence``; off by
default, as RoBERTa showed it does not help) trains a ``BERTForPreTraining``
on sentence pairs (``npllm.data.sentence_pairs``: [CLS] A [SEP] B [SEP], B
the true continuation half the time) with ``MaskedLMWithNextSentence``; the
held-out masked-LM figures stay those of the same windows as without it,
and ``val_next_sentence_accuracy`` on fixed held-out pairs joins them,
against the 50% of a coin.

Left out: whole-word masking.
"""

import time
from dataclasses import dataclass
from pathlib import Path

from npllm.data.masking import Boundaries, MaskedWindows, MaskingRule, masked_evaluation_batches
from npllm.data.sentence_pairs import SentencePairs, sentence_pair_evaluation_batches
from npllm.data.shards import Shards
from npllm.data.tokens import token_counts
from npllm.errors import NpllmError, SettingError
from npllm.io.safetensors import CheckpointError
from npllm.models import BERTConfig, BERTForMaskedLM, BERTForPreTraining
from npllm.optim import configure_param_groups, param_groups_by_name
from npllm.pretrained import load_pretrained
from npllm.runtime.memory import keep_freed_memory
from npllm.runtime.mpi import ranks_and_threads
from npllm.tensor import no_grad
from npllm.pretrained.folder import CONFIG_FILE
from npllm.tokenizer import BPETokenizer, load_tokenizer_file
from npllm.training import loop
from npllm.training.checkpoint import load_checkpoint
from npllm.training.objectives import MaskedLM, MaskedLMWithNextSentence
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
    next_sentence: bool = False             # also BERT's next-sentence prediction, on sentence pairs (off: RoBERTa
                                            # found it does not help)
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


def masking_rule(config: BERTTrainConfig, tokenizer) -> MaskingRule:
    """``config.masking_rule`` for our BPE; for a checkpoint's WordPiece (a student distilled from a Hugging
    Face BERT), its own [MASK], and random replacements from the whole vocabulary, as Hugging Face masks."""
    if isinstance(tokenizer, BPETokenizer):
        return config.masking_rule(tokenizer.vocab_size)
    return MaskingRule(mask_id=tokenizer.special_tokens["[MASK]"], random_ids=tokenizer.vocab_size,
                       rate=config.mask_rate)


FIXED_ON_RESUME_BERT = FIXED_ON_RESUME + ("n_inner", "hidden_act", "mask_rate", "next_sentence")


@dataclass
class BERTRun(Run):
    """A masked-LM run: the GPT recipe's ``Run`` (config, corpus fingerprint), and masked-token accuracy."""

    evaluation_set: object = None  # () -> the held-out masked batches
    next_sentence_set: object = None  # () -> the held-out sentence pairs (with next-sentence prediction)

    def evaluation_metrics(self) -> dict:
        metrics = {"val_accuracy": masked_accuracy(self.model, self.evaluation_set(), self.evaluation_objective)}
        if self.next_sentence_set is not None:
            metrics["val_next_sentence_accuracy"] = next_sentence_accuracy(self.model, self.next_sentence_set())
        return metrics


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


def next_sentence_accuracy(model, batches) -> float:
    """The share of held-out pairs whose next-sentence guess (follows, or random) is right (no dropout, no graph)."""
    model.eval()
    correct = total = 0
    with no_grad():
        for batch in batches:
            hidden = model.bert(batch["input_ids"], token_type_ids=batch["token_type_ids"])
            guesses = model.next_sentence_logits(hidden).data.argmax(axis=-1)
            correct += int((guesses == batch["next_sentence_labels"]).sum())
            total += len(guesses)
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
    run = (build or build_run)(config, tokenizer, corpus, log)
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


def restore_run(out_dir, changes: dict, log, config_class=BERTTrainConfig, fixed_on_resume=FIXED_ON_RESUME_BERT,
                build=None) -> BERTRun:
    """Rebuild the masked-LM run saved in ``out_dir``, with the allowed ``changes`` applied.

    A recipe built on this one (distilling a BERT) passes its own
    ``config_class``, the settings it fixes, and ``build(config, tokenizer,
    text, log, param_groups, checkpoint)`` for its own run (default: ``build_run``).
    """
    fixed = {key: value for key, value in changes.items() if key in fixed_on_resume}
    checkpoint = load_checkpoint(out_dir, require_config=fixed)
    loop.require_loop_state(checkpoint)
    state = checkpoint.train_state
    if any(key not in state for key in RECIPE_STATE_KEYS) or "mask_rate" not in state["config"] \
            or checkpoint.tokenizer_path is None:
        raise CheckpointError(f"{checkpoint.folder}: not a checkpoint written by npllm train --model bert")
    try:
        config = with_workers_fixed(config_class(**{**state["config"], **changes, "out_dir": str(out_dir)}))
    except TypeError as error:  # settings this recipe does not have: the run is another recipe's
        raise CheckpointError(f"{checkpoint.folder}: a run of another kind ({error}); resume it with the command"
                              " that started it (npllm train --model bert, npllm distill, ...)") from None
    corpus = read_data(config, log)

    def saved_groups(model, config):
        try:
            return param_groups_by_name(model, state["optimizer"]["param_groups"])
        except (KeyError, TypeError) as error:
            raise CheckpointError(f"{checkpoint.folder}: its optimizer state does not fit this model ({error})") from error

    tokenizer = load_tokenizer_file(checkpoint.tokenizer_path)
    if build is None:
        run = build_run(config, tokenizer, corpus, log, param_groups=saved_groups)
    else:
        run = build(config, tokenizer, corpus, log, saved_groups, checkpoint)
    require_same_corpus(run, checkpoint, config)
    loop.restore(run, checkpoint)
    log(f"resumed {out_dir} at step {run.step}")
    return run


def _new_param_groups(model, config: BERTTrainConfig) -> list[dict]:
    return configure_param_groups(model, config.weight_decay)


def build_run(config: BERTTrainConfig, tokenizer, corpus, log, param_groups=_new_param_groups,
              model_config: BERTConfig = None, objective=None, run_class=None, **run_fields) -> BERTRun:
    """The run's objects; ``param_groups(model, config)`` chooses the optimizer's groups (a resume: the saved ones).

    ``model_config`` defaults to ``config``'s shape at the tokenizer's vocabulary.  Another recipe changes
    what is learned with ``objective`` (default ``MaskedLM``; evaluation always measures the plain masked-LM
    loss and accuracy, comparable across recipes) and keeps its own objects with ``run_class`` (a subclass
    of ``BERTRun``) and ``run_fields``.
    """
    tokens = corpus_tokens(config, tokenizer, corpus, log)
    train_tokens, validation_tokens = tokens.train, tokens.validation
    V = tokenizer.vocab_size
    rule = masking_rule(config, tokenizer)
    cls_id, sep_id = tokenizer.special_tokens["[CLS]"], tokenizer.special_tokens["[SEP]"]
    boundary_id = tokens.boundary_id(config)
    boundaries = None if boundary_id is None else Boundaries(boundary_id, tokenizer.special_tokens["[PAD]"])

    def evaluation_set():
        return masked_evaluation_batches(validation_tokens, config.context_length, config.batch_size,
                                         config.eval_windows, rule, cls_id, sep_id, boundaries=boundaries)

    next_sentence_set = None
    if config.next_sentence:
        if boundaries is not None:
            raise SettingError("`next_sentence` takes its pairs from one stream: it does not go with `boundaries`"
                               " respect")

        def next_sentence_set():
            return sentence_pair_evaluation_batches(validation_tokens, config.context_length, config.batch_size,
                                                    config.eval_windows, rule, cls_id, sep_id)

        batches = SentencePairs(train_tokens, config.context_length, config.batch_size, config.seed, rule, cls_id,
                                sep_id)
        next(iter(next_sentence_set()))  # too few held-out tokens for the pairs: say so now
    else:
        batches = MaskedWindows(train_tokens, config.context_length, config.batch_size, config.seed, rule, cls_id,
                                sep_id, boundaries)
    next(iter(evaluation_set()))  # too few held-out tokens for one window: say so now, not at the first evaluation
    log(f"tokens: {len(train_tokens):,} for training, {len(validation_tokens):,} for validation;"
        f" baselines on held-out tokens: unigram loss {unigram_loss(train_tokens, validation_tokens, V):.3f},"
        f" accuracy {most_frequent_accuracy(train_tokens, validation_tokens, V):.3f} (always the most frequent token)")
    model_class = BERTForPreTraining if config.next_sentence else BERTForMaskedLM
    model = model_class(model_config or config.model_config(V), seed=config.seed)
    log(f"model: {model.num_parameters():,} parameters; masking {config.mask_rate:.0%} of each window;"
        f" each batch shared by {ranks_and_threads(config.workers)}")
    if config.next_sentence:
        log("next-sentence prediction: [CLS] A [SEP] B [SEP], B the continuation of A in half the pairs;"
            " a coin's accuracy is 0.500")
    objective = objective or (MaskedLMWithNextSentence() if config.next_sentence else MaskedLM())
    return run_with_evaluation_set(run_class or BERTRun, model, objective, batches, evaluation_set, config, tokenizer,
                                   validation_tokens, tokens.fingerprint, param_groups,
                                   evaluation_objective=MaskedLM(), next_sentence_set=next_sentence_set, **run_fields)


def run_with_evaluation_set(run_class, model, objective, batches, evaluation_set, config, tokenizer,
                            validation_tokens, corpus_sha256, param_groups, **run_fields):
    """A pre-training run whose recipe measures more than the loss on ``evaluation_set`` (BERT's, BART's)."""
    return run_class(model=model, objective=objective, batches=batches, evaluation_batches=evaluation_set,
                     **optimisation(config, model, param_groups), tokenizer=tokenizer, config=config,
                     validation_tokens=validation_tokens, corpus_sha256=corpus_sha256,
                     evaluation_set=evaluation_set, **run_fields)


def most_frequent_accuracy(train_tokens, validation_tokens, vocab_size) -> float:
    """How often the training text's most frequent token is right on the held-out tokens."""
    most_frequent = token_counts(train_tokens, vocab_size).argmax()
    return float(token_counts(validation_tokens, vocab_size)[most_frequent] / len(validation_tokens))


def load_model(path):
    """The BERT and tokenizer in ``path``: a run folder of ``npllm train --model bert`` (or of distilling a
    BERT), its checkpoint folder, or a Hugging Face BERT folder (whose tokenizer may be None)."""
    if (Path(path) / CONFIG_FILE).is_file():
        return load_pretrained(path)
    checkpoint = load_checkpoint(path, with_optimizer=False)
    if checkpoint.tokenizer_path is None or "model_config" not in checkpoint.train_state \
            or "n_inner" not in checkpoint.train_state["model_config"]:
        raise CheckpointError(f"{checkpoint.folder}: not a checkpoint written by npllm train --model bert")
    with_next_sentence = "cls.seq_relationship.weight" in checkpoint.model_state
    model = (BERTForPreTraining if with_next_sentence else BERTForMaskedLM)(
        BERTConfig(**checkpoint.train_state["model_config"]))
    try:
        model.load_state_dict(checkpoint.model_state)
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{checkpoint.folder}: weights do not fit the saved config ({error})") from error
    return model.eval(), load_tokenizer_file(checkpoint.tokenizer_path)


def load_encoder(path):
    """``load_model``'s (model, tokenizer), the tokenizer required: what a user of an encoder needs to feed it.

    Which model it is (a BERT, with or without its heads) is the caller's to check.
    """
    model, tokenizer = load_model(path)
    if tokenizer is None:
        raise NpllmError(f"{path}: has no tokenizer (vocab.txt or tokenizer.json)")
    return model, tokenizer
