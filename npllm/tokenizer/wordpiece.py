"""WordPiece: BERT's tokenizer, read from a checkpoint's ``vocab.txt`` or ``tokenizer.json``.

Where byte-level BPE (the rest of this package) learns merges of bytes and
can spell any text, WordPiece starts from words and a fixed vocabulary of
words and word pieces; what it cannot spell becomes ``[UNK]``.  Encoding a
text takes four steps, each as Hugging Face ``tokenizers`` does it for BERT
(whose ids these equal):

1. **Normalise** (``normalize``): drop NUL, U+FFFD and control characters
   (Unicode category C*, except tab, newline and return); turn every white
   space character into a plain space; put spaces around each CJK
   ideograph (Chinese and Japanese kanji carry meaning one character at a
   time, and are written without spaces); if the checkpoint is *uncased*,
   strip accents (decompose, NFD, and drop the combining marks: "é" ->
   "e") and lower-case each character.
2. **Split into words** (``pre_tokenize``): at white space (dropped) and
   around every punctuation character (kept, each a word of its own: "a,b!"
   -> "a" "," "b" "!").
3. **Cut each word into pieces**, greedily, longest match first: the
   longest prefix of the word in the vocabulary, then the longest prefix of
   the rest among the pieces marked ``##`` (a piece that continues a word),
   and so on: "unaffable" -> "un" "##aff" "##able".  A word with a part that
   matches nothing, or longer than 100 characters, is one ``[UNK]``.
4. **Add the special tokens**: ``[CLS] text [SEP]``, or for a pair of texts
   ``[CLS] first [SEP] second [SEP]`` with token type 0 up to the first
   [SEP] and 1 after it (BERT's ``token_type_ids``).

Special tokens written in the text ("[MASK]") are found before normalising
and become their ids, as in Hugging Face, which is what fill-mask needs.

Batches (``encode_batch``) are truncated to ``max_length`` (for a pair, the
longer text gives up its last tokens first) and padded on the right with
``[PAD]`` to the longest row; ``attention_mask`` is 1 on real tokens and 0
on padding, the arrays the model reads.

Left out: training a WordPiece vocabulary (from-scratch BERT in npllm uses
the byte-level BPE), offsets, and left padding.
"""

import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npllm.io.atomic import atomic_write_text
from npllm.tokenizer.files import TokenizerFileError

VOCAB_FILE = "vocab.txt"
TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MAX_WORD_CHARS = 100  # a longer word is [UNK] without trying (Hugging Face's max_input_chars_per_word)

# White space characters that are not control characters (those are dropped first): Unicode's White_Space
WHITESPACE = frozenset(" \t\n\r\u00a0\u1680\u2028\u2029\u202f\u205f\u3000") | frozenset(map(chr, range(0x2000, 0x200B)))

# The CJK ideograph blocks BERT splits character by character (the "Chinese characters" of its code)
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def is_cjk(character: str) -> bool:
    code = ord(character)
    return any(low <= code <= high for low, high in CJK_RANGES)


def is_control(character: str) -> bool:
    """A control or format character (category C*), except tab, newline and return (which are white space)."""
    return character not in "\t\n\r" and unicodedata.category(character).startswith("C")


def is_punctuation(character: str) -> bool:
    """ASCII's punctuation and symbols ($, +, <, ^, ...) and every Unicode punctuation character (category P*)."""
    code = ord(character)
    return 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126 \
        or unicodedata.category(character).startswith("P")


@dataclass
class Normalizer:
    """BERT's text clean-up (step 1 of the module docstring); the checkpoint decides each option."""

    lowercase: bool = True
    strip_accents: bool | None = None  # None: strip when lower-casing (uncased checkpoints)
    clean_text: bool = True
    handle_chinese_chars: bool = True

    def __call__(self, text: str) -> str:
        if self.clean_text:
            text = "".join(" " if c in WHITESPACE else c for c in text
                           if c != "\0" and c != "\ufffd" and not is_control(c))
        if self.handle_chinese_chars:
            text = "".join(f" {c} " if is_cjk(c) else c for c in text)
        if self.lowercase if self.strip_accents is None else self.strip_accents:
            text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        if self.lowercase:
            text = "".join(c.lower() for c in text)  # character by character: no final-sigma rule, as BERT
        return text


def pre_tokenize(text: str) -> list[str]:
    """Words: split at white space (dropped) and around each punctuation character (kept alone)."""
    words, current = [], []
    for character in text:
        if character.isspace() or is_punctuation(character):
            if current:
                words.append("".join(current))
                current = []
            if not character.isspace():
                words.append(character)
        else:
            current.append(character)
    if current:
        words.append("".join(current))
    return words


class WordPieceTokenizer:
    """BERT's tokenizer: ``encode(text, pair)`` -> ids and token types; ``encode_batch`` -> padded model inputs."""

    def __init__(self, vocab: list[str], normalizer: Normalizer | None = None, prefix: str = "##",
                 max_word_chars: int = MAX_WORD_CHARS, source="vocab"):
        self.vocab = {token: i for i, token in enumerate(vocab)}
        self.tokens = list(vocab)
        missing = [token for token in SPECIAL_TOKENS if token not in self.vocab]
        if missing:
            raise TokenizerFileError(source, f"the vocabulary has no {', '.join(missing)} token")
        self.normalizer = normalizer or Normalizer()
        self.prefix, self.max_word_chars = prefix, max_word_chars
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (self.vocab[t] for t in SPECIAL_TOKENS)
        self.special_ids = frozenset((self.pad_id, self.cls_id, self.sep_id, self.mask_id, self.unk_id))
        self._word_cache = {}

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def special_tokens(self) -> dict[str, int]:
        """[PAD], [UNK], [CLS], [SEP], [MASK] -> their ids (as ``BPETokenizer.special_tokens`` names its own)."""
        return {token: self.vocab[token] for token in SPECIAL_TOKENS}

    def __repr__(self):
        n = self.normalizer
        return f"WordPieceTokenizer(vocab_size={self.vocab_size}, lowercase={n.lowercase})"

    # ---- reading a checkpoint's files ----

    @classmethod
    def from_folder(cls, folder) -> "WordPieceTokenizer":
        """The tokenizer of a Hugging Face folder: ``tokenizer.json`` if present, else ``vocab.txt``."""
        folder = Path(folder)
        if (folder / TOKENIZER_JSON).is_file():
            return cls.from_tokenizer_json(folder / TOKENIZER_JSON)
        return cls.from_vocab_file(folder / VOCAB_FILE, _config_normalizer(folder / TOKENIZER_CONFIG))

    @classmethod
    def from_vocab_file(cls, path, normalizer: Normalizer | None = None) -> "WordPieceTokenizer":
        """``vocab.txt``: one token per line, its line number (from 0) its id."""
        try:
            lines = Path(path).read_text(encoding="utf-8").split("\n")
        except UnicodeDecodeError as error:
            raise TokenizerFileError(path, f"not a UTF-8 vocabulary file ({error.reason})") from error
        if lines and lines[-1] == "":
            lines.pop()  # the newline that ends the last line
        return cls([line.rstrip("\r") for line in lines], normalizer, source=path)

    @classmethod
    def from_tokenizer_json(cls, path) -> "WordPieceTokenizer":
        """``tokenizer.json`` (Hugging Face ``tokenizers``' file) of a WordPiece model with a BERT normaliser."""
        try:
            spec = json.loads(Path(path).read_text(encoding="utf-8"))
            model = spec["model"]
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
            raise TokenizerFileError(path, f"not a tokenizers JSON file ({error})") from error
        if not isinstance(model, dict) or model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
            raise TokenizerFileError(path, f"not a WordPiece tokenizer (model type {_type_of(model)!r})")
        settings = spec.get("normalizer") or {}
        if settings.get("type") != "BertNormalizer":
            raise TokenizerFileError(path, f"expected a BertNormalizer, got {_type_of(settings)!r}")
        normalizer = Normalizer(lowercase=settings.get("lowercase", True), strip_accents=settings.get("strip_accents"),
                                clean_text=settings.get("clean_text", True),
                                handle_chinese_chars=settings.get("handle_chinese_chars", True))
        by_id = sorted(model["vocab"].items(), key=lambda item: item[1])
        if [i for _, i in by_id] != list(range(len(by_id))):
            raise TokenizerFileError(path, "the vocabulary's ids are not 0, 1, 2, ... without gaps")
        return cls([token for token, _ in by_id], normalizer, prefix=model.get("continuing_subword_prefix", "##"),
                   max_word_chars=model.get("max_input_chars_per_word", MAX_WORD_CHARS), source=path)

    def save(self, folder) -> None:
        """Write ``vocab.txt`` and ``tokenizer_config.json`` (what ``transformers``' BertTokenizer reads) into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / VOCAB_FILE).write_text("".join(token + "\n" for token in self.tokens), encoding="utf-8")
        n = self.normalizer
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": n.lowercase, "strip_accents": n.strip_accents,
                  "tokenize_chinese_chars": n.handle_chinese_chars, "unk_token": "[UNK]", "sep_token": "[SEP]",
                  "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}
        (folder / TOKENIZER_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    def save_json(self, path) -> None:
        """Write the whole tokenizer as one ``tokenizer.json`` file (Hugging Face ``tokenizers``' format), at ``path``.

        What a run folder keeps beside its weights (a student distilled from a
        Hugging Face BERT); ``from_tokenizer_json`` reads it back.
        """
        n = self.normalizer
        spec = {"version": "1.0",
                "normalizer": {"type": "BertNormalizer", "clean_text": n.clean_text,
                               "handle_chinese_chars": n.handle_chinese_chars, "strip_accents": n.strip_accents,
                               "lowercase": n.lowercase},
                "pre_tokenizer": {"type": "BertPreTokenizer"},
                "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": self.prefix,
                          "max_input_chars_per_word": self.max_word_chars, "vocab": self.vocab}}
        atomic_write_text(path, json.dumps(spec, ensure_ascii=False) + "\n")

    # ---- encoding ----

    def tokenize(self, text: str) -> list[str]:
        """The word pieces of ``text`` (no [CLS] or [SEP]); special tokens written in it stay whole."""
        return [self.tokens[i] for i in self.encode_ordinary(text)]

    def encode_ordinary(self, text: str) -> list[int]:
        """The ids of ``text``'s word pieces, without [CLS] and [SEP]."""
        ids = []
        for segment, is_special in _special_segments(text):
            if is_special:
                ids.append(self.vocab[segment])
                continue
            for word in pre_tokenize(self.normalizer(segment)):
                ids.extend(self._word_ids(word))
        return ids

    def _word_ids(self, word: str) -> list[int]:
        """Greedy longest-match-first pieces of one word, or [UNK] for all of it."""
        if word not in self._word_cache:
            self._word_cache[word] = self._pieces(word)
        return self._word_cache[word]

    def _pieces(self, word: str) -> list[int]:
        if len(word) > self.max_word_chars:
            return [self.unk_id]
        pieces, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else self.prefix + word[start:end]
                if piece in self.vocab:
                    pieces.append(self.vocab[piece])
                    start = end
                    break
            else:  # no piece of the vocabulary starts here: the word cannot be spelled
                return [self.unk_id]
        return pieces

    def encode(self, text: str, pair: str | None = None, max_length: int | None = None) -> tuple[list[int], list[int]]:
        """``([CLS] text [SEP] (pair [SEP])`` ids, their token types), cut to ``max_length`` ids if given."""
        first = self.encode_ordinary(text)
        second = None if pair is None else self.encode_ordinary(pair)
        if max_length is not None:
            first, second = _truncated(first, second, max_length - (2 if second is None else 3))
        ids = [self.cls_id, *first, self.sep_id]
        types = [0] * len(ids)
        if second is not None:
            ids += [*second, self.sep_id]
            types += [1] * (len(second) + 1)
        return ids, types

    def encode_batch(self, texts: list[str], pairs: list[str] | None = None, max_length: int | None = None) -> dict:
        """Model inputs for a batch: ``input_ids``, ``token_type_ids``, ``attention_mask``, each (B, T) int64.

        Rows are cut to ``max_length`` and padded with [PAD] on the right to the longest row.
        """
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"encode_batch: {len(texts)} texts but {len(pairs)} pairs")
        rows = [self.encode(text, None if pairs is None else pairs[i], max_length) for i, text in enumerate(texts)]
        T = max((len(ids) for ids, _ in rows), default=0)
        batch = {"input_ids": np.full((len(rows), T), self.pad_id, dtype=np.int64),
                 "token_type_ids": np.zeros((len(rows), T), dtype=np.int64),
                 "attention_mask": np.zeros((len(rows), T), dtype=np.int64)}
        for b, (ids, types) in enumerate(rows):
            batch["input_ids"][b, :len(ids)] = ids
            batch["token_type_ids"][b, :len(ids)] = types
            batch["attention_mask"][b, :len(ids)] = 1
        return batch

    # ---- decoding ----

    def decode(self, ids, skip_special_tokens=True) -> str:
        """The text of ``ids``: pieces joined ("un ##aff" -> "unaff"), words by spaces; [PAD] etc. left out."""
        words = []
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"decode: token id {i} is outside the vocabulary of {self.vocab_size} ids")
            if skip_special_tokens and i in self.special_ids and i != self.unk_id:
                continue
            token = self.tokens[i]
            if token.startswith(self.prefix) and words:
                words[-1] += token[len(self.prefix):]
            else:
                words.append(token)
        return " ".join(words)


def _special_segments(text: str):
    """(segment, is_special) pairs: ``text`` cut around each special token written in it ("[MASK]")."""
    start = 0
    while start < len(text):
        found = [(text.find(token, start), token) for token in SPECIAL_TOKENS]
        found = [(at, token) for at, token in found if at >= 0]
        if not found:
            break
        at, token = min(found)
        if at > start:
            yield text[start:at], False
        yield token, True
        start = at + len(token)
    if start < len(text):
        yield text[start:], False


def _truncated(first: list[int], second: list[int] | None, budget: int):
    """Cut ``first`` (and ``second``) to ``budget`` ids in all, as Hugging Face's "longest first" does.

    The shorter text keeps up to half the budget (the first text counts as
    the shorter when they are equally long) and the longer text the rest.
    """
    if budget < 0:
        raise ValueError(f"max_length leaves no room for the text beside [CLS] and [SEP] ({budget} ids)")
    if second is None:
        return first[:budget], None
    if len(first) + len(second) <= budget:
        return first, second
    if len(first) <= len(second):
        keep = min(len(first), budget // 2)
        return first[:keep], second[:budget - keep]
    keep = min(len(second), budget // 2)
    return first[:budget - keep], second[:keep]


def _config_normalizer(path: Path) -> Normalizer:
    """The normaliser ``tokenizer_config.json`` describes (BertTokenizer's flags); an uncased BERT if absent."""
    if not path.is_file():
        return Normalizer()
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TokenizerFileError(path, f"not a JSON file ({error})") from error
    return Normalizer(lowercase=config.get("do_lower_case", True), strip_accents=config.get("strip_accents"),
                      handle_chinese_chars=config.get("tokenize_chinese_chars", True))


def _type_of(section) -> str | None:
    return section.get("type") if isinstance(section, dict) else None
