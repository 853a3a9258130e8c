"""Token shards: documents ended, split by document, the same on any number of processes, resumable, checked."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from npllm.data import shards as shards_module
from npllm.data.batches import RandomWindows
from npllm.data.shards import (INDEX_FILE, ShardedTokens, ShardError, in_validation, open_shards, shard_dtype,
                               tokenize_to_shards)
from npllm.data.streams import DocumentSource
from npllm.errors import SettingError
from npllm.tokenizer import BPETokenizer

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A JSONL file of 300 documents of varied lengths."""
    path = tmp_path_factory.mktemp("corpus") / "documents.jsonl"
    lines = [json.dumps({"text": f"Document {i}: " + "the cat sat on the mat. " * (1 + i % 13)}) for i in range(300)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def tokenizer(corpus):
    return BPETokenizer.train(corpus.read_text()[:5000], vocab_size=300, special_tokens={EOT: 299})


def tokenize(corpus, tokenizer, folder, **settings):
    settings = {"shard_tokens": 3000, "validation_fraction": 0.1, "workers": 1, "log": lambda line: None, **settings}
    return open_shards(tokenize_to_shards(DocumentSource(corpus), tokenizer, folder, **settings))


def all_ids(tokens: ShardedTokens) -> np.ndarray:
    return np.concatenate(tokens.arrays)


def test_each_document_ends_with_end_of_text_and_the_split_is_by_document(corpus, tokenizer, tmp_path):
    shards = tokenize(corpus, tokenizer, tmp_path / "s")
    assert len(shards.index["shards"]) > 4 and shards.train.dtype == np.uint16
    held_out = [i for i in range(300) if in_validation(i, 0.1)]
    assert 10 < len(held_out) < 50
    documents = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
    expected = {"train": [], "validation": []}
    for i, text in enumerate(documents):
        expected["validation" if i in held_out else "train"] += tokenizer.encode_ordinary(text) + [299]
    assert all_ids(shards.train).tolist() == expected["train"]
    assert all_ids(shards.validation).tolist() == expected["validation"]
    assert sum(record["documents"] for record in shards.index["shards"]) == 300
    for record in shards.index["shards"]:
        assert record["tokens"] < 2 * 3000


def test_two_processes_write_the_very_same_shards_as_one(corpus, tokenizer, tmp_path):
    one = tokenize(corpus, tokenizer, tmp_path / "one")
    two = tokenize(corpus, tokenizer, tmp_path / "two", workers=2)
    assert [r["sha256"] for r in one.index["shards"]] == [r["sha256"] for r in two.index["shards"]]


def test_a_killed_tokenization_resumes_from_its_last_complete_shard(corpus, tokenizer, tmp_path, monkeypatch):
    whole = tokenize(corpus, tokenizer, tmp_path / "whole", shard_tokens=800)
    written = shards_module.write_batch
    calls = []

    def killed_on_the_sixth_batch(*args):
        calls.append(1)
        if len(calls) == 6:
            raise KeyboardInterrupt
        written(*args)

    monkeypatch.setattr(shards_module, "write_batch", killed_on_the_sixth_batch)
    with pytest.raises(KeyboardInterrupt):
        tokenize(corpus, tokenizer, tmp_path / "killed", shard_tokens=800)
    index = json.loads((tmp_path / "killed" / INDEX_FILE).read_text())
    assert not index["complete"] and index["shards"] and any((tmp_path / "killed").glob("*.partial"))
    monkeypatch.setattr(shards_module, "write_batch", written)
    lines = []
    resumed = tokenize(corpus, tokenizer, tmp_path / "killed", shard_tokens=800, log=lines.append)
    assert lines[0].startswith(f"tokenize: resuming after {index['pieces_read']} pieces")
    assert [r["sha256"] for r in resumed.index["shards"]] == [r["sha256"] for r in whole.index["shards"]]
    assert not any((tmp_path / "killed").glob("*.partial"))


def test_a_truncated_shard_is_refused_by_training_and_rebuilt_by_tokenizing_again(corpus, tokenizer, tmp_path):
    folder = tmp_path / "s"
    first = tokenize(corpus, tokenizer, folder)
    damaged = folder / first.index["shards"][2]["file"]
    damaged.write_bytes(damaged.read_bytes()[:-6])
    with pytest.raises(ShardError, match=rf"{damaged.name} has [\d,]+ bytes, the index says [\d,]+ \(truncated"
                                         rf".*npllm tokenize --data .*documents.jsonl --out"):
        open_shards(folder)
    lines = []
    rebuilt = tokenize(corpus, tokenizer, folder, log=lines.append)
    assert any("rebuilding from that shard on" in line for line in lines)
    assert [r["sha256"] for r in rebuilt.index["shards"]] == [r["sha256"] for r in first.index["shards"]]


def test_a_shard_changed_in_place_is_found_by_its_hash_and_rebuilt(corpus, tokenizer, tmp_path):
    folder = tmp_path / "s"
    first = tokenize(corpus, tokenizer, folder)
    damaged = folder / first.index["shards"][-1]["file"]
    data = bytearray(damaged.read_bytes())
    data[0] ^= 1
    damaged.write_bytes(bytes(data))
    lines = []
    rebuilt = tokenize(corpus, tokenizer, folder, log=lines.append)
    assert any("does not match its SHA-256" in line for line in lines)
    assert rebuilt.index["shards"] == first.index["shards"]


def test_an_index_that_disagrees_with_its_shards_is_one_line(corpus, tokenizer, tmp_path):
    folder = tmp_path / "s"
    tokenize(corpus, tokenizer, folder)
    (folder / "train-00099.bin").write_bytes(b"\0\0")
    with pytest.raises(ShardError, match=r"the index disagrees with its shards \(train-00099.bin is not in"):
        open_shards(folder)
    (folder / "train-00099.bin").unlink()
    (folder / INDEX_FILE).write_text("{broken")
    with pytest.raises(ShardError, match=r"index.json: not a shard index"):
        open_shards(folder)


def test_another_corpus_or_tokenizer_in_the_folder_is_refused(corpus, tokenizer, tmp_path):
    folder = tmp_path / "s"
    tokenize(corpus, tokenizer, folder)
    other = BPETokenizer.train("something else entirely", vocab_size=280, special_tokens={EOT: 279})
    with pytest.raises(ShardError, match=r"holds shards of another corpus or tokenizer \(tokenizer_sha256"):
        tokenize(corpus, other, folder)


def test_a_vocabulary_too_large_for_the_dtype_is_refused():
    assert shard_dtype(65_536) == np.uint16 and shard_dtype(65_537) == np.uint32
    with pytest.raises(SettingError, match=r"the vocabulary of 100,000 ids is too large for `dtype` uint16"):
        shard_dtype(100_000, "uint16")


def test_windows_drawn_across_shards_are_those_of_one_array(corpus, tokenizer, tmp_path):
    shards = tokenize(corpus, tokenizer, tmp_path / "s", shard_tokens=500)
    assert len(shards.train.arrays) > 5
    whole = all_ids(shards.train)
    sharded, single = (RandomWindows(tokens, 24, 32, seed=5) for tokens in (shards.train, whole))
    for _ in range(5):
        a, b = sharded.next_batch(), single.next_batch()
        np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
        np.testing.assert_array_equal(a["targets"], b["targets"])


@pytest.mark.slow
def test_a_tokenization_killed_by_sigkill_resumes_to_the_same_shards(tmp_path):
    """A real kill: ``npllm tokenize`` in its own process, SIGKILLed once its first shards are in the index."""
    corpus = tmp_path / "big.jsonl"
    corpus.write_text("".join(json.dumps({"text": f"Record {i}. " + "a tortoise walks. " * (i % 17 + 1)}) + "\n"
                              for i in range(1500)))
    tokenizer = tmp_path / "tokenizer.txt"
    trained = BPETokenizer.train(corpus.read_text()[:5000], vocab_size=300, special_tokens={EOT: 299})
    trained.save(tokenizer)

    def command(out):
        return [sys.executable, "-m", "npllm.cli", "tokenize", "--data", str(corpus), "--tokenizer", str(tokenizer),
                "--out", str(out), "--shard-tokens", "3000", "--workers", "1"]

    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen(command(tmp_path / "killed"), env=environment, stdout=subprocess.DEVNULL)
    index = tmp_path / "killed" / INDEX_FILE
    def checkpoints_written():  # the index is replaced atomically: it reads whole or not at all
        return index.exists() and json.loads(index.read_text())["shards"]

    while not checkpoints_written() and process.poll() is None:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = json.loads(index.read_text())
    finished = subprocess.run(command(tmp_path / "killed"), env=environment, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    if not killed["complete"]:  # (on a very fast machine the first run may finish before the kill lands)
        assert "resuming after" in finished.stdout
    whole = tokenize(corpus, trained, tmp_path / "whole", shard_tokens=3000, validation_fraction=0.05)
    assert json.loads(index.read_text())["shards"] == whole.index["shards"]
