"""Attention maps: for one prompt, the weights each query gives each key, one heat map per layer and head.

Row i of a map is query position i's softmax over the positions it reads
(``npllm.nn.recording_attention`` hands them over without touching the
fused op), so every row sums to 1.  A GPT's maps are lower triangles (a
position sees only the past); a BERT's are full squares.  Patterns worth
looking for: a diagonal just below the main one (a head that reads the
previous token), a bright first column (a head parking its weight on the
first token when nothing else is relevant), a head that follows brackets or
repeated words.

Any model of the project's works: a run of ``npllm train`` (GPT or
``--model bert``) or a Hugging Face GPT-2 or BERT folder.
"""

from pathlib import Path

import numpy as np

from npllm.errors import SettingError
from npllm.generation.encoder import bert_input_ids
from npllm.models import BERT, BERTForMaskedLM
from npllm.nn import recording_attention
from npllm.plot import PlotError, new_figure, save
from npllm.pretrained import load_pretrained
from npllm.pretrained.folder import CONFIG_FILE
from npllm.tensor import no_grad
from npllm.tokenizer import WordPieceTokenizer
from npllm.training import pretrain, pretrain_bert
from npllm.training.checkpoint import CheckpointError

MAP_INCHES = 2.4  # each heat map's side; the figure grows with layers x heads
LABELLED_TOKENS = 32  # up to this many tokens every one is written on the axes; beyond, every n-th


def load_model(path):
    """(model, tokenizer) of a Hugging Face GPT-2 or BERT folder, or of an npllm GPT or BERT run folder."""
    folder = Path(path)
    if (folder / CONFIG_FILE).is_file():
        model, tokenizer = load_pretrained(folder)
        if tokenizer is None:
            raise PlotError(f"{folder}: the Hugging Face folder has no tokenizer files to read the prompt with")
        return model, tokenizer
    try:
        return pretrain.load_model(folder)
    except CheckpointError as gpt_error:  # a BERT run's config is not a GPT's
        try:
            return pretrain_bert.load_model(folder)
        except CheckpointError:
            raise gpt_error from None


def prompt_ids(model, tokenizer, prompt: str) -> list[int]:
    """The prompt's token ids as the model reads them: plain for a GPT, ``[CLS] ... [SEP]`` for a BERT."""
    ids = bert_input_ids(tokenizer, prompt) if isinstance(model, (BERT, BERTForMaskedLM)) \
        else tokenizer.encode(prompt, allowed_special="all")
    if not ids:
        raise SettingError("attention: `prompt` is empty; give some text to look at")
    if len(ids) > model.config.context_length:
        raise SettingError(f"attention: `prompt` is {len(ids)} tokens, more than the model's context of"
                           f" {model.config.context_length}")
    return ids


def attention_weights(model, ids) -> dict:
    """Layer name -> (H, T, T) attention weights of the model reading ``ids`` (dropout off, no graph)."""
    model.eval()
    with no_grad(), recording_attention(model) as weights:
        model(np.array([ids]))
    return {name: layer_weights[0] for name, layer_weights in weights.items()}


def token_labels(tokenizer, ids) -> list[str]:
    """Each token as a short readable label (spaces shown as ·, newlines as ⏎)."""
    if isinstance(tokenizer, WordPieceTokenizer):
        pieces = [tokenizer.decode([i], skip_special_tokens=False) for i in ids]
    else:  # a byte-level token may be part of a character: its bytes shown as \xNN
        pieces = [tokenizer.decode_bytes([i]).decode("utf-8", "backslashreplace") for i in ids]
    return [piece.replace(" ", "·").replace("\n", "⏎").replace("\t", "⇥") or "∅" for piece in pieces]


def plot_attention(weights: dict, labels: list[str], out=None, title=""):
    """One heat map per layer (rows) and head (columns) of ``weights`` (name -> (H, T, T)); saved to ``out``."""
    names = list(weights)
    n_layer, n_head = len(names), weights[names[0]].shape[0]
    figure = new_figure(MAP_INCHES * n_head + 1.2, MAP_INCHES * n_layer + 0.8)
    grid = np.atleast_2d(figure.subplots(n_layer, n_head, squeeze=False))
    every = max(1, -(-len(labels) // LABELLED_TOKENS))
    ticks = np.arange(0, len(labels), every)
    image = None
    for row, name in enumerate(names):
        for head in range(n_head):
            axes = grid[row, head]
            image = axes.imshow(weights[name][head], vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest")
            axes.set_title(f"{name} head {head}", fontsize="small")
            axes.set_xticks(ticks, [labels[t] for t in ticks], rotation=90, fontsize="x-small")
            axes.set_yticks(ticks, [labels[t] for t in ticks], fontsize="x-small")
    figure.colorbar(image, ax=grid, shrink=0.6, label="attention weight (rows: queries, columns: keys)")
    if title:
        figure.suptitle(title)
    if out is not None:
        save(figure, out)
    return figure


def plot_prompt_attention(checkpoint, prompt: str, out=None, layers=None):
    """Load ``checkpoint``, read ``prompt`` and draw its attention (``layers``: indices to keep, default all)."""
    model, tokenizer = load_model(checkpoint)
    ids = prompt_ids(model, tokenizer, prompt)
    weights = attention_weights(model, ids)
    if layers is not None:
        names = list(weights)
        wrong = [layer for layer in layers if not 0 <= layer < len(names)]
        if wrong:
            raise SettingError(f"attention: `layer` {wrong[0]} is not one of the model's {len(names)} layers"
                               f" (0 to {len(names) - 1})")
        weights = {names[layer]: weights[names[layer]] for layer in layers}
    return plot_attention(weights, token_labels(tokenizer, ids), out, title=f"{checkpoint}: {prompt!r}"), weights
