"""Hugging Face's tokenizer files: tokenizer.json and vocab.json + merges.txt, written and read back, and against ``tokenizers``."""

import json

import pytest
from test_tokenizer_corpus import VARIED_TEXTS

from npllm.tokenizer import BPETokenizer, TokenizerFileError
from npllm.tokenizer.files import read_gpt2_files, write_gpt2_files
from npllm.tokenizer.huggingface import read_tokenizer_json, write_tokenizer_json

CUSTOM_PATTERN = r"""\p{L}+|\p{N}|\s+|[^\s\p{L}\p{N}]+"""


@pytest.fixture(scope="module", params=["gpt4", "gpt2", CUSTOM_PATTERN], ids=["gpt4", "gpt2", "custom"])
def tokenizer(request):
    return BPETokenizer.train(VARIED_TEXTS * 3, vocab_size=400, pattern=request.param, special_tokens=["<|endoftext|>"])


def test_tokenizer_json_and_the_file_pair_read_back_as_written(tokenizer, tmp_path):
    write_tokenizer_json(tmp_path / "tokenizer.json", tokenizer.pattern, tokenizer.mergeable_ranks,
                         tokenizer.special_tokens)
    assert read_tokenizer_json(tmp_path / "tokenizer.json") == \
        (tokenizer.pattern, tokenizer.mergeable_ranks, tokenizer.special_tokens)
    write_gpt2_files(tmp_path / "vocab.json", tmp_path / "merges.txt", tokenizer.mergeable_ranks,
                     tokenizer.special_tokens)
    assert read_gpt2_files(tmp_path / "vocab.json", tmp_path / "merges.txt") == \
        (tokenizer.mergeable_ranks, tokenizer.special_tokens)


@pytest.mark.parity
def test_hugging_faces_tokenizers_library_gives_our_ids(tokenizer, tmp_path):
    tokenizers = pytest.importorskip("tokenizers", reason="the oracle is Hugging Face's tokenizers library")
    write_tokenizer_json(tmp_path / "tokenizer.json", tokenizer.pattern, tokenizer.mergeable_ranks,
                         tokenizer.special_tokens)
    theirs = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    for text in [*VARIED_TEXTS, "digits 1234567 in threes", "trailing   \n\n", "<|endoftext|>!"]:
        assert theirs.encode(text).ids == tokenizer.encode(text, allowed_special="all"), text


def test_a_possessive_repeat_hugging_face_would_misread_is_refused(tmp_path):
    tokenizer = BPETokenizer.train(VARIED_TEXTS, vocab_size=280, pattern=r"\p{N}{1,3}+|\D+")
    with pytest.raises(ValueError, match=r"possessive \{m,n\}\+"):
        write_tokenizer_json(tmp_path / "tokenizer.json", tokenizer.pattern, tokenizer.mergeable_ranks, {})


@pytest.mark.parametrize("change, message", [
    (lambda doc: doc.update(pre_tokenizer={"type": "Whitespace"}), "is not plain byte-level BPE"),
    (lambda doc: doc.update(pre_tokenizer={"type": "ByteLevel", "add_prefix_space": True}), "is not plain byte-level BPE"),
    (lambda doc: doc.update(normalizer={"type": "NFC"}), r"has a normalizer \(NFC\)"),
    (lambda doc: doc["model"].update(type="WordPiece"), "expected a BPE \"model\", found 'WordPiece'"),
    (lambda doc: doc["model"]["vocab"].update(x="seven"), "non-negative integer ids"),
    (lambda doc: doc.update(added_tokens=[{"id": "x"}]), "an added token needs"),
    (lambda doc: doc["model"]["merges"].append(["q", "z"]), r"model.merges: entry numbers\), line \d+: merge 'q z'"),
], ids=["other pre-tokenizer", "prefix space", "normalizer", "WordPiece", "bad id", "bad added token", "bad merge"])
def test_a_tokenizer_json_npllm_cannot_run_is_one_line(tmp_path, change, message):
    tokenizer = BPETokenizer.train(VARIED_TEXTS, vocab_size=300, pattern="gpt2")
    path = tmp_path / "tokenizer.json"
    write_tokenizer_json(path, tokenizer.pattern, tokenizer.mergeable_ranks, tokenizer.special_tokens)
    document = json.loads(path.read_text(encoding="utf-8"))
    change(document)
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(TokenizerFileError, match=message):
        read_tokenizer_json(path)
