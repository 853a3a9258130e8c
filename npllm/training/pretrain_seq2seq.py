"""Pre-training an encoder–decoder by denoising: the recipe behind ``npllm train --model seq2seq``.

BART's pre-training, in miniature: the encoder reads a damaged window of the
corpus, the decoder writes the window as it was.  The same shape as the
other pre-training recipes (``pretrain.py``, ``pretrain_bert.py``), whose
settings, checks, run folder and resume it shares; what differs:

    tokenizer    the byte-level BPE with BART's five special tokens last: <s>, <pad>, </s>, <unk>, <mask>
                 (<unk> is never produced: every byte has a token; BART's tokenizer has it)
    model        ``BARTForConditionalGeneration`` in miniature: ``n_layer`` encoder blocks and as many
                 decoder blocks, ``n_embd`` wide, GELU, the LM head tied to the embeddings
    examples     windows of T - 2 tokens, damaged by text infilling (Poisson(3) spans over 30%
                 of the tokens, one <mask> each; optionally the lines shuffled first:
                 ``npllm.data.denoising``), starts and damage from one seeded generator
    objective    ``Seq2SeqLM``: the decoder, fed the original shifted right behind <s>, predicts
                 every original token and the closing </s> (teacher forcing)
    evaluation   the same held-out windows damaged the same way every time: the reconstruction
                 loss, ``val_accuracy`` (the share of target tokens the model's top guess gets
                 right) and ``val_masked_accuracy`` (the same, on the tokens that were hidden)

The baseline printed at the start is **copying the corrupted input**: a
reader that reproduces every token that survived (it is certain of them, so
they cost nothing) and guesses each hidden one from the token frequencies.
Its loss is the masked share times the unigram loss of the hidden tokens, its
accuracy the share of tokens that survived; a model that has learned
anything beyond copying beats both.  (With ``permute_sentences`` no token is
where a copy would put it, and no copy baseline is printed.)

The model's settings follow Hugging Face's ``BartConfig`` (``d_model``,
``encoder_layers``, ...), so a run exports as a BART folder; the run folder
itself loads back with ``load_model`` for ``npllm generate`` and
``npllm finetune seq2seq``.

Left out: BART's other corruptions (token deletion, document rotation).
"""

from dataclasses import dataclass

import numpy as np

from npllm.data.denoising import DenoisingWindows, InfillingRule, denoising_evaluation_batches
from npllm.data.pairs import Framing, padding_fraction
from npllm.errors import SettingError
from npllm.io.safetensors import CheckpointError
from npllm.models import BARTConfig, BARTForConditionalGeneration
from npllm.optim import configure_param_groups
from npllm.runtime.memory import keep_freed_memory
from npllm.runtime.mpi import ranks_and_threads
from npllm.tensor import no_grad
from npllm.tokenizer import BPETokenizer
from npllm.training import loop, pretrain, pretrain_bert
from npllm.training.objectives import Seq2SeqLM
from npllm.training.pretrain import FIXED_ON_RESUME, Run, TrainConfig

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # BART's five, in its order, as the last ids
RECIPE = "seq2seq"  # state.json's "recipe": what wrote the run


@dataclass
class Seq2SeqTrainConfig(TrainConfig):
    """``TrainConfig``'s settings for an encoder–decoder, and denoising's; ``n_layer`` blocks on each side."""

    n_inner: int | None = None              # MLP width (default 4 n_embd)
    mask_ratio: float = 0.3                 # share of each window's tokens inside masked spans (BART: 30%)
    poisson_lambda: float = 3.0             # mean length of a masked span (BART: 3)
    permute_sentences: bool = False         # shuffle each window's lines before infilling
    n_layer: int = 2
    max_steps: int = 200                    # about ten minutes on two cores shared with other work
    eval_interval: int = 50
    lr: float = 1.5e-3
    min_lr: float = 1.5e-4
    warmup_steps: int = 30                  # a short run cannot spend half its steps warming up
    batch_size: int = 16
    out_dir: str = "runs/seq2seq"

    def __post_init__(self):
        if self.init:
            raise SettingError("`init` starts a GPT from another model's weights; a seq2seq run starts from random ones")
        if not self.vocab_size >= 256 + len(SPECIAL_TOKENS):
            raise SettingError(f"`vocab_size` must be at least {256 + len(SPECIAL_TOKENS)} (the 256 bytes and"
                               f" {', '.join(SPECIAL_TOKENS)}), got {self.vocab_size}")
        self.infilling_rule(self.vocab_size, ())  # checks `mask_ratio` and `poisson_lambda`
        super().__post_init__()  # the shared checks, and BARTConfig's (model_config)

    def model_config(self, vocab_size) -> BARTConfig:
        pad, bos, eos, _ = special_ids(vocab_size)
        return BARTConfig(vocab_size=vocab_size, max_position_embeddings=self.context_length, d_model=self.n_embd,
                          encoder_layers=self.n_layer, decoder_layers=self.n_layer,
                          encoder_attention_heads=self.n_head, decoder_attention_heads=self.n_head,
                          encoder_ffn_dim=self.n_inner or 4 * self.n_embd, decoder_ffn_dim=self.n_inner or 4 * self.n_embd,
                          dropout=self.dropout, attention_dropout=self.dropout, activation_dropout=self.dropout,
                          pad_token_id=pad, bos_token_id=bos,
                          eos_token_id=eos, decoder_start_token_id=bos, forced_eos_token_id=eos)

    def infilling_rule(self, vocab_size, sentence_end_ids) -> InfillingRule:
        return InfillingRule(mask_id=special_ids(vocab_size)[3], mask_ratio=self.mask_ratio,
                             poisson_lambda=self.poisson_lambda, permute_sentences=self.permute_sentences,
                             sentence_end_ids=tuple(sentence_end_ids))


def special_ids(vocab_size) -> tuple[int, int, int, int]:
    """The ids of <pad>, <s>, </s> and <mask>, among the last five."""
    first = vocab_size - len(SPECIAL_TOKENS)
    ids = {token: first + i for i, token in enumerate(SPECIAL_TOKENS)}
    return ids["<pad>"], ids["<s>"], ids["</s>"], ids["<mask>"]


def framing_of(config: BARTConfig) -> Framing:
    return Framing(pad_id=config.pad_token_id, bos_id=config.bos_token_id, eos_id=config.eos_token_id)


FIXED_ON_RESUME_SEQ2SEQ = FIXED_ON_RESUME + ("n_inner", "mask_ratio", "poisson_lambda", "permute_sentences")


@dataclass
class Seq2SeqRun(Run):
    """A denoising run: the GPT recipe's ``Run`` (config, corpus fingerprint), and reconstruction accuracy."""

    evaluation_set: object = None  # () -> the held-out damaged batches

    def recipe_state(self) -> dict:
        return {**super().recipe_state(), "recipe": RECIPE}

    def evaluation_metrics(self) -> dict:
        accuracy, masked = reconstruction_accuracy(self.model, self.evaluation_set())
        return {"val_accuracy": accuracy, "val_masked_accuracy": masked}


def reconstruction_accuracy(model, batches) -> tuple[float, float]:
    """The share of target tokens the top guess gets right (teacher forced), overall and on the hidden ones."""
    model.eval()
    correct = total = hidden_correct = hidden = 0
    with no_grad():
        for batch in batches:
            real = batch["targets"] != -100
            right = (Seq2SeqLM.logits(model, batch).data.argmax(axis=-1) == batch["targets"]) & real
            was_hidden = real & (batch["kept"] == 0)
            correct, total = correct + int(right.sum()), total + int(real.sum())
            hidden_correct, hidden = hidden_correct + int((right & was_hidden).sum()), hidden + int(was_hidden.sum())
    model.train()
    return correct / max(total, 1), hidden_correct / max(hidden, 1)


def copy_baseline(batches, train_tokens, vocab_size) -> tuple[float, float]:
    """(loss, accuracy) of copying the corrupted input: surviving tokens for free, hidden ones from frequencies."""
    log_probs = np.log((np.bincount(train_tokens, minlength=vocab_size) + 1.0)
                       / (len(train_tokens) + vocab_size))  # add-one smoothing, as pretrain.unigram_loss
    cost = kept = total = 0.0
    for batch in batches:
        real = batch["targets"] != -100
        hidden = real & (batch["kept"] == 0)
        cost -= log_probs[batch["targets"][hidden]].sum()
        kept, total = kept + (real & (batch["kept"] == 1)).sum(), total + real.sum()
    return float(cost / total), float(kept / total)


def train(config: Seq2SeqTrainConfig, progress=True, log=print) -> Seq2SeqRun:
    """Start a new denoising run in ``config.out_dir`` and train it for ``config.max_steps`` steps."""
    keep_freed_memory()
    return loop.train(pretrain_bert.start_run(config, log, SPECIAL_TOKENS, _build_run), progress, log)


def resume(out_dir, changes=None, progress=True, log=print) -> Seq2SeqRun:
    """Continue the denoising run saved in ``out_dir``, exactly where it stopped (see ``pretrain.resume``)."""
    keep_freed_memory()
    run = pretrain.restore_run(out_dir, changes or {}, log, config_class=Seq2SeqTrainConfig,
                               fixed_on_resume=FIXED_ON_RESUME_SEQ2SEQ, build=_rebuild)
    return loop.train(run, progress, log)


def _rebuild(config, tokenizer, corpus, log, param_groups, checkpoint) -> Seq2SeqRun:
    if checkpoint.train_state.get("recipe") != RECIPE:
        raise CheckpointError(f"{checkpoint.folder}: not a run of npllm train --model seq2seq; resume it with the"
                              " command that started it")
    return _build_run(config, tokenizer, corpus, log, param_groups)


def sentence_end_ids(tokenizer) -> list[int]:
    """The ordinary tokens whose text ends a line: where a sentence ends in code and in wrapped prose."""
    return [i for i in range(tokenizer.vocab_size - len(SPECIAL_TOKENS)) if tokenizer.decode_bytes([i]).endswith(b"\n")]


def _build_run(config: Seq2SeqTrainConfig, tokenizer: BPETokenizer, corpus, log,
               param_groups=lambda model, config: configure_param_groups(model, config.weight_decay)) -> Seq2SeqRun:
    tokens = pretrain.corpus_tokens(config, tokenizer, corpus, log)
    if tokens.boundary_id(config) is not None:
        raise SettingError("`boundaries` respect is not built for --model seq2seq: its windows cross documents")
    train_tokens, validation_tokens = tokens.train, tokens.validation
    V = tokenizer.vocab_size
    model_config = config.model_config(V)
    framing = framing_of(model_config)
    rule = config.infilling_rule(V, sentence_end_ids(tokenizer) if config.permute_sentences else ())

    def evaluation_set():
        return denoising_evaluation_batches(validation_tokens, config.context_length, config.batch_size,
                                            config.eval_windows, rule, framing)

    batches = DenoisingWindows(train_tokens, config.context_length, config.batch_size, config.seed, rule, framing)
    held_out = list(evaluation_set())  # too few held-out tokens for one window: said now, not at the first evaluation
    source_padding, _ = padding_fraction(held_out)
    baseline = "" if config.permute_sentences else (
        "; copying the corrupted input: loss {:.3f}, accuracy {:.3f}".format(*copy_baseline(held_out, train_tokens, V)))
    log(f"tokens: {len(train_tokens):,} for training, {len(validation_tokens):,} for validation;"
        f" baselines on held-out windows: unigram loss"
        f" {pretrain.unigram_loss(train_tokens, validation_tokens, V):.3f}{baseline}")
    model = BARTForConditionalGeneration(model_config, seed=config.seed)
    log(f"model: {model.num_parameters():,} parameters, {config.n_layer} encoder and {config.n_layer} decoder blocks;"
        f" infilling {config.mask_ratio:.0%} of each window in Poisson({config.poisson_lambda:g}) spans"
        f"{', lines shuffled' if config.permute_sentences else ''} ({source_padding:.1%} of the sources is padding);"
        f" each batch shared by {ranks_and_threads(config.workers)}")
    return pretrain_bert.run_with_evaluation_set(Seq2SeqRun, model, Seq2SeqLM(), batches, evaluation_set, config,
                                                 tokenizer, validation_tokens, tokens.fingerprint, param_groups)


def load_model(run_dir, log=print) -> tuple[BARTForConditionalGeneration, BPETokenizer]:
    """The encoder–decoder and tokenizer in ``run_dir``: a run of ``npllm train --model seq2seq`` or
    ``npllm finetune seq2seq``, its checkpoint folder, or a Hugging Face BART folder (see ``pretrain.load_model``)."""
    return pretrain.load_model(run_dir, log, BARTForConditionalGeneration, BARTConfig, kind="an encoder–decoder")

