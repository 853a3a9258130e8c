"""Streamed sources: plain text in pieces that encode exactly as the whole, archives, JSONL, the tokenizer's sample."""

import bz2
import gzip
import json
import lzma

import pytest

from npllm.data import streams
from npllm.data.corpus import stdlib_text
from npllm.data.streams import DocumentSource, StreamError, sample_documents, wants_streaming
from npllm.tokenizer import BPETokenizer


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_pieces_of_a_long_file_encode_to_exactly_the_ids_of_the_whole(tmp_path, monkeypatch, pattern):
    text = stdlib_text(max_bytes=60_000) + "\nEnd  \n\nlast words"
    path = tmp_path / "long.txt"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setattr(streams, "PIECE_CHARS", 2_000)
    pieces = list(DocumentSource(path).pieces())
    assert len(pieces) > 10 and "".join(piece.text for piece in pieces) == text
    assert [piece.ends_document for piece in pieces] == [False] * (len(pieces) - 1) + [True]
    tokenizer = BPETokenizer.train(text[:20_000], vocab_size=400, pattern=pattern)
    pieced = [i for piece in pieces for i in tokenizer.encode_ordinary(piece.text)]
    assert pieced == tokenizer.encode_ordinary(text)


@pytest.mark.parametrize("compress, suffix", [(gzip.compress, ".gz"), (bz2.compress, ".bz2"), (lzma.compress, ".xz")])
def test_compressed_files_are_read_through_the_standard_library(tmp_path, compress, suffix):
    (tmp_path / f"notes.txt{suffix}").write_bytes(compress(b"first file"))
    (tmp_path / "more.jsonl").write_text('{"body": "a record"}\n\n{"body": "another"}\n')
    source = DocumentSource(tmp_path, text_field="body")
    assert wants_streaming(tmp_path)
    assert [piece.text for piece in source.pieces()] == ["a record", "another", "first file"]


def test_a_jsonl_line_without_the_text_field_names_the_file_and_the_line(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"title": "no text"}) + "\n")
    with pytest.raises(StreamError, match=r"data.jsonl:2: the `text_field` 'text' is missing"):
        list(DocumentSource(path).pieces())
    path.write_text("{not json\n")
    with pytest.raises(StreamError, match=r"data.jsonl:1: not a JSON object"):
        list(DocumentSource(path).pieces())


def test_the_fingerprint_follows_the_bytes_and_the_text_field(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "b": "c"}\n')
    first = DocumentSource(path).fingerprint()
    assert DocumentSource(path).fingerprint() == first
    assert DocumentSource(path, text_field="b").fingerprint() != first
    path.write_text('{"text": "A", "b": "c"}\n')
    assert DocumentSource(path).fingerprint() != first


def test_the_tokenizers_sample_is_seeded_about_the_size_asked_and_in_stream_order(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"text": f"document {i} " + "x" * (i % 50)}) + "\n" for i in range(500)))
    source = DocumentSource(path)
    sample = sample_documents(source, chars=2_000, seed=1)
    assert sample == sample_documents(source, chars=2_000, seed=1)
    assert sample != sample_documents(source, chars=2_000, seed=2)
    assert 2_000 <= sum(map(len, sample)) < 2_100
    numbers = [int(text.split()[1]) for text in sample]
    assert numbers == sorted(numbers) and numbers[-1] > 250  # drawn from the whole stream, not its start
    assert sum(map(len, sample_documents(source, chars=10**9, seed=1))) == sum(len(p.text) for p in source.pieces())


def test_a_missing_path_is_one_line(tmp_path):
    with pytest.raises(StreamError, match="no such file or folder"):
        DocumentSource(tmp_path / "absent.jsonl")


def test_a_text_without_a_safe_cut_is_cut_anyway_and_its_document_still_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(streams, "PIECE_CHARS", 100)
    monkeypatch.setattr(streams, "MAX_PIECE_CHARS", 300)
    (tmp_path / "a.txt").write_text("x" * 600)  # no line break at all: cut at 300 and at 600, the end
    (tmp_path / "b.txt").write_text("second file")
    pieces = list(DocumentSource(tmp_path).pieces())
    assert [(len(piece.text), piece.ends_document) for piece in pieces] == [(300, False), (300, True), (11, True)]
