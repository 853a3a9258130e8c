"""Hugging Face's tokenizer files for byte-level BPE: vocab.json + merges.txt, and tokenizer.json.

A GPT-2 folder on the Hugging Face hub carries its tokenizer twice:

    vocab.json + merges.txt    GPT-2's own encoder.json + vocab.bpe under new names (``files.py``
                               reads and writes them): token strings in GPT-2's printable byte
                               characters -> ids, and the merges, earliest first
    tokenizer.json             one JSON object for the ``tokenizers`` library: the same vocabulary
                               and merges (under "model"), plus the pipeline around them

The pipeline is what the pair of files leaves unsaid.  Its "pre_tokenizer" cuts
text into chunks before BPE, which is our split pattern: GPT-2's is written
``{"type": "ByteLevel", "use_regex": true}`` (the library's built-in GPT-2
regex), any other pattern as a ``Split`` on that regex followed by a
``ByteLevel`` step that only maps bytes to characters.  "added_tokens" lists the
special tokens.  ``read_tokenizer_json`` accepts exactly the pipelines that mean
plain byte-level BPE (no normalizer, no prefix space) and names anything else.

Two regex dialects.  ``tokenizers`` runs its regexes with Oniguruma, where
``X{1,3}+`` means "X{1,3}, repeated", not a possessive ``X{1,3}`` as in Python's
``regex``.  GPT-4's pattern uses that form (``\\p{N}{1,3}+``: digits in threes);
its Oniguruma spelling drops the ``+``, which changes no chunk because nothing
follows it in that alternative.  ``HUGGING_FACE_SPELLINGS`` holds it; a custom
pattern with such a ``{m,n}+`` is refused rather than silently read another way.

Encoding.  Our encoder (like tiktoken) takes a chunk that is itself a token
whole, without replaying merges; ``tokenizers`` does the same when the model
says ``"ignore_merges": true``, which is what we write.

Left out: WordPiece and Unigram models (other model types in tokenizer.json),
normalizers, and byte fallback.
"""

import json
import re
from pathlib import Path

from npllm.io.atomic import atomic_write_text
from npllm.tokenizer.files import (LineCursor, TokenizerFileError, gpt2_encoder, gpt2_merges, gpt2_ranks)
from npllm.tokenizer.patterns import GPT2_PATTERN, GPT4_PATTERN

# our pattern -> the same chunks in Oniguruma's dialect (patterns not listed are written as they are)
HUGGING_FACE_SPELLINGS = {GPT4_PATTERN: GPT4_PATTERN.replace(r"\p{N}{1,3}+", r"\p{N}{1,3}")}
POSSESSIVE_REPEAT = re.compile(r"\{\d+(?:,\d*)?\}\+")  # X{3}+, X{1,3}+, X{2,}+ (not \p{L}+, a greedy run)
BYTE_LEVEL_GPT2 = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
BYTE_LEVEL_ONLY = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}


def write_tokenizer_json(path, pattern: str, ranks: dict[bytes, int], special_tokens: dict[str, int]) -> None:
    """Write a tokenizer.json that ``tokenizers`` (and so ``transformers``' AutoTokenizer) encodes as we do."""
    document = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{"id": token_id, "content": token, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True}
                         for token, token_id in sorted(special_tokens.items(), key=lambda item: item[1])],
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer(pattern),
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": gpt2_encoder(ranks, special_tokens),
                  "merges": [[left, right] for left, right in gpt2_merges(ranks)]},
    }
    atomic_write_text(path, json.dumps(document, ensure_ascii=False, indent=1) + "\n")


def pre_tokenizer(pattern: str) -> dict:
    """The "pre_tokenizer" entry that cuts text as ``pattern`` does."""
    if pattern == GPT2_PATTERN:
        return BYTE_LEVEL_GPT2
    if pattern not in HUGGING_FACE_SPELLINGS and POSSESSIVE_REPEAT.search(pattern):
        raise ValueError(f"the split pattern {pattern!r} has a possessive {{m,n}}+, which Hugging Face's regex"
                         " engine reads as a repetition: write it without the +")
    split = {"type": "Split", "pattern": {"Regex": HUGGING_FACE_SPELLINGS.get(pattern, pattern)},
             "behavior": "Isolated", "invert": False}
    return {"type": "Sequence", "pretokenizers": [split, BYTE_LEVEL_ONLY]}


def read_tokenizer_json(path) -> tuple[str, dict[bytes, int], dict[str, int]]:
    """(pattern, ranks, special tokens) of a byte-level BPE tokenizer.json; anything else is named and refused."""
    path = Path(path)
    try:
        document = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as error:
        raise TokenizerFileError(path, f"not UTF-8 text ({error.reason} at byte {error.start})") from error
    except json.JSONDecodeError as error:
        raise TokenizerFileError(path, f"not valid JSON: {error.msg} (column {error.colno})", error.lineno) from error
    model = document.get("model") if isinstance(document, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE":
        found = model.get("type") if isinstance(model, dict) else None
        raise TokenizerFileError(path, f"expected a BPE \"model\", found {found!r}")
    normalizer = document.get("normalizer")
    if normalizer is not None:
        kind = normalizer.get("type") if isinstance(normalizer, dict) else normalizer
        raise TokenizerFileError(path, f"has a normalizer ({kind}), which byte-level BPE does not use and npllm"
                                       " does not run")
    pattern = pattern_of(document.get("pre_tokenizer"), path)
    vocab, merges = model.get("vocab"), model.get("merges")
    if not isinstance(vocab, dict) or not isinstance(merges, list) \
            or not all(type(token_id) is int and token_id >= 0 for token_id in vocab.values()):
        raise TokenizerFileError(path, "the BPE model needs a \"vocab\" object of non-negative integer ids"
                                       " and a \"merges\" list")
    # merges are "left right" strings, or [left, right] pairs in newer files
    lines = [merge if isinstance(merge, str) else " ".join(map(str, merge)) for merge in merges]
    ranks, special_tokens = gpt2_ranks(vocab, LineCursor(f"{path} (model.merges: entry numbers)", lines), path)
    for added in document.get("added_tokens") or []:
        if not isinstance(added, dict) or not isinstance(added.get("content"), str) or type(added.get("id")) is not int:
            raise TokenizerFileError(path, f"an added token needs a \"content\" string and an integer \"id\","
                                           f" got {json.dumps(added)[:80]}")
        special_tokens[added["content"]] = added["id"]
    return pattern, ranks, special_tokens


def pattern_of(pre_tokenizer: dict | None, path: Path) -> str:
    """Our split pattern for a "pre_tokenizer" entry of plain byte-level BPE."""
    steps = pre_tokenizer.get("pretokenizers", []) if isinstance(pre_tokenizer, dict) else []
    if isinstance(pre_tokenizer, dict) and pre_tokenizer.get("type") == "ByteLevel":
        steps = [pre_tokenizer]
    if not isinstance(steps, list) or not all(isinstance(step, dict) for step in steps):
        steps = []
    if steps and steps[-1].get("type") == "ByteLevel" and not steps[-1].get("add_prefix_space", False):
        if len(steps) == 1 and steps[0].get("use_regex", True):
            return GPT2_PATTERN
        split = steps[0]
        if len(steps) == 2 and split.get("type") == "Split" and split.get("behavior") == "Isolated" \
                and not split.get("invert") and not steps[1].get("use_regex", True):
            regex = split.get("pattern", {}).get("Regex") if isinstance(split.get("pattern"), dict) else None
            ours = {spelling: pattern for pattern, spelling in HUGGING_FACE_SPELLINGS.items()}
            if isinstance(regex, str):
                return ours.get(regex, regex)
    raise TokenizerFileError(path, f"pre_tokenizer {json.dumps(pre_tokenizer)[:120]} is not plain byte-level BPE"
                                   " (ByteLevel without a prefix space, optionally after one isolating regex Split)")
