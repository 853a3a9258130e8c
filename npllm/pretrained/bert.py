"""BERT in Hugging Face's format: a folder <-> ``npllm.models.BERT`` / ``BERTForMaskedLM`` and a ``WordPieceTokenizer``.

What ``transformers``' ``BertModel`` / ``BertForMaskedLM.save_pretrained`` writes::

    config.json          "model_type": "bert", hidden_size, num_hidden_layers, num_attention_heads,
                         intermediate_size, max_position_embeddings, type_vocab_size, layer_norm_eps, ...
    model.safetensors    embeddings.word_embeddings.weight, encoder.layer.0.attention.self.query.weight, ...
                         (under "bert." in a model with a head; the MLM head's under "cls.predictions.")
    vocab.txt, tokenizer.json, tokenizer_config.json    the WordPiece tokenizer

npllm's BERT carries the same names, so the tensors map one to one; the
differences are of layout: PyTorch's Linear stores its weight (out, in) and
npllm's (in, out), so every Linear weight is transposed on the way in and
out (embedding tables are (rows, C) in both).  Which model is built follows
from the tensors: both pre-training heads present (``cls.seq_relationship``
beside ``cls.predictions``, a ``BertForPreTraining`` file) ->
``BERTForPreTraining``; the MLM head alone -> ``BERTForMaskedLM``; otherwise
a ``BERT``, with a pooler if the file has one.  Tensors of other heads (a
classifier) are left unread; the tied decoder
(``cls.predictions.decoder.*``, the word embeddings and the head's bias
again) and the ``position_ids`` buffer are not parameters.  Very old
checkpoints name LayerNorm's gain and shift ``gamma`` and ``beta``; they are
read as ``weight`` and ``bias``.

The model takes the checkpoint's precision (a float64 file gives a float64
model; any other float type float32) and comes back in eval mode (no
dropout), as ``from_pretrained``'s does.  A missing tensor, a tensor whose
shape disagrees with config.json, or a config npllm does not build (relative
position embeddings, another activation) is one line naming the file and
the thing.
"""

import json
from pathlib import Path

from npllm.errors import SettingError
from npllm.io.atomic import atomic_write_text
from npllm.io.safetensors import save_safetensors
from npllm.models.bert import BERT, BERTConfig, BERTForMaskedLM, BERTForPreTraining
from npllm.pretrained.folder import (CONFIG_FILE, FLOAT_WIDTHS, WEIGHTS_FILE, PretrainedError, copy_into,
                                     is_linear_weight, read_weights, take_tensors)
from npllm.tokenizer.wordpiece import TOKENIZER_JSON, VOCAB_FILE, WordPieceTokenizer

ENCODER_PREFIX = "bert."  # where a model with a head keeps its encoder
MLM_HEAD = "cls.predictions.transform.dense.weight"  # present in a BertForMaskedLM (or BertForPreTraining) file
NSP_HEAD = "cls.seq_relationship.weight"  # present in a BertForPreTraining file
OLD_NAMES = {"LayerNorm.gamma": "LayerNorm.weight", "LayerNorm.beta": "LayerNorm.bias"}

# Hugging Face's config.json key -> BERTConfig's field
CONFIG_KEYS = {
    "vocab_size": "vocab_size", "max_position_embeddings": "context_length", "num_hidden_layers": "n_layer",
    "num_attention_heads": "n_head", "hidden_size": "n_embd", "intermediate_size": "n_inner",
    "type_vocab_size": "type_vocab_size", "hidden_dropout_prob": "dropout",
    "attention_probs_dropout_prob": "attention_dropout", "layer_norm_eps": "layer_norm_eps",
    "hidden_act": "hidden_act", "pad_token_id": "pad_token_id",
}


def handles(model) -> bool:
    return isinstance(model, (BERT, BERTForMaskedLM))


# ---- loading ------------------------------------------------------------------------------

def load(folder: Path, config: dict):
    """``(BERT or BERTForMaskedLM, WordPieceTokenizer or None)`` from a Hugging Face BERT folder."""
    weights = folder / WEIGHTS_FILE
    tensors = {_new_name(name): array for name, array in read_weights(folder).items()}
    with_head = MLM_HEAD in tensors
    prefix = ENCODER_PREFIX if with_head or any(name.startswith(ENCODER_PREFIX) for name in tensors) else ""
    embeddings = tensors.get(f"{prefix}embeddings.word_embeddings.weight")
    dtype = FLOAT_WIDTHS.get(embeddings.dtype, "float32") if embeddings is not None else "float32"
    bert_config = config_from_json(config, folder / CONFIG_FILE, dtype)
    if with_head:
        model = (BERTForPreTraining if NSP_HEAD in tensors else BERTForMaskedLM)(bert_config)
    else:
        model = BERT(bert_config, pooler=f"{prefix}pooler.dense.weight" in tensors)
    parameters = dict(model.named_parameters())
    file_names = {name: (name if with_head else prefix + name) for name in parameters}
    found = take_tensors(tensors, file_names.values(), weights)
    copy_into(model, found, weights, _shape_settings(bert_config), file_names.__getitem__)
    return model.eval(), read_tokenizer(folder)


def _new_name(name: str) -> str:
    for old, new in OLD_NAMES.items():
        if name.endswith(old):
            return name[: -len(old)] + new
    return name


def config_from_json(config: dict, path: Path, dtype: str) -> BERTConfig:
    """The BERTConfig config.json describes (Hugging Face's BertConfig defaults for keys it leaves out)."""
    position_type = config.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise PretrainedError(f"{path}: position_embedding_type is {position_type!r}; npllm's BERT has"
                              " absolute (learned) position embeddings only")
    given = {field: config[key] for key, field in CONFIG_KEYS.items() if config.get(key) is not None}
    try:
        return BERTConfig(**given, dtype=dtype)
    except (SettingError, TypeError) as error:
        raise PretrainedError(f"{path}: {str(error).replace('`', '')}") from error


def _shape_settings(config: BERTConfig) -> str:
    return (f"vocab_size {config.vocab_size}, hidden_size {config.n_embd}, intermediate_size {config.n_inner},"
            f" max_position_embeddings {config.context_length}, type_vocab_size {config.type_vocab_size}")


def read_tokenizer(folder: Path) -> WordPieceTokenizer | None:
    """The folder's WordPiece tokenizer (tokenizer.json, else vocab.txt), or None if it has neither."""
    if not (folder / TOKENIZER_JSON).is_file() and not (folder / VOCAB_FILE).is_file():
        return None
    return WordPieceTokenizer.from_folder(folder)


# ---- saving -------------------------------------------------------------------------------

def save(model, tokenizer: WordPieceTokenizer | None, folder: Path) -> Path:
    """Write ``model`` (and ``tokenizer``) as a folder ``transformers`` loads (BertModel / BertForMaskedLM /
    BertForPreTraining)."""
    folder.mkdir(parents=True, exist_ok=True)
    with_head = isinstance(model, BERTForMaskedLM)
    architecture = "BertForPreTraining" if isinstance(model, BERTForPreTraining) else \
        "BertForMaskedLM" if with_head else "BertModel"
    atomic_write_text(folder / CONFIG_FILE, json.dumps(config_to_json(model.config, architecture), indent=2) + "\n")
    tensors = {name: (array.T if is_linear_weight(model, name) else array)
               for name, array in model.state_dict().items()}
    save_safetensors(folder / WEIGHTS_FILE, tensors, metadata={"format": "pt"})  # transformers reads "pt" files
    if tokenizer is not None:
        tokenizer.save(folder)
    return folder


def config_to_json(config: BERTConfig, architecture: str) -> dict:
    """config.json for ``transformers``' BertConfig, naming the ``architecture`` (BertModel, BertForMaskedLM, ...)."""
    values = {key: getattr(config, field) for key, field in CONFIG_KEYS.items()}
    return {"model_type": "bert", "architectures": [architecture], **values,
            "position_embedding_type": "absolute", "initializer_range": 0.02, "tie_word_embeddings": True,
            "torch_dtype": config.dtype}
