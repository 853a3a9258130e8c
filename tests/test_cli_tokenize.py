"""``npllm tokenize`` and ``npllm bench tokenize``: shards from a dump, and every bad input as one line, status 2."""

import json

import pytest

from npllm.cli import main


def tokenize(*argv):
    return main(["tokenize", "--vocab-size", "300", "--tokenizer-chars", "20000", "--workers", "1", *argv])


def one_line_error(capsys, argv, message):
    assert tokenize(*argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("npllm tokenize: error: ") and message in err, err


def test_a_dump_becomes_shards_that_train_and_a_second_run_keeps_them(wiki_dump, tmp_path, capsys):
    out = tmp_path / "shards"
    assert tokenize("--data", str(wiki_dump), "--out", str(out), "--validation-fraction", "0.4") == 0
    assert f"train on it: npllm train --data {out}" in capsys.readouterr().out
    index = json.loads((out / "index.json").read_text())
    assert index["complete"] and sum(record["documents"] for record in index["shards"]) == 2  # the two articles
    assert tokenize("--data", str(wiki_dump), "--out", str(out), "--validation-fraction", "0.4") == 0
    assert json.loads((out / "index.json").read_text()) == index
    one_line_error(capsys, ["--data", str(out), "--out", str(tmp_path / "again")], "is a shard folder already")
    assert main(["train", "--data", str(out), "--out", str(tmp_path / "run"), "--max-steps", "1", "--n-layer", "1",
                 "--n-embd", "16", "--n-head", "2", "--context-length", "8", "--batch-size", "2", "--eval-windows",
                 "1", "--validation-fraction", "0.4", "--quiet", "--workers", "1"]) == 0


def test_bad_inputs_are_one_line_with_status_2(wiki_dump, tmp_path, capsys):
    (tmp_path / "feed.xml").write_text("<rss><channel/></rss>")
    one_line_error(capsys, ["--data", str(tmp_path / "feed.xml"), "--out", str(tmp_path / "a")],
                   "is not a MediaWiki XML dump")
    (tmp_path / "cut.xml.bz2").write_bytes(wiki_dump.read_bytes()[:-30])
    one_line_error(capsys, ["--data", str(tmp_path / "cut.xml.bz2"), "--out", str(tmp_path / "b")],
                   "cut.xml.bz2: the compressed file is truncated")
    (tmp_path / "records.jsonl").write_text('{"text": "one"}\n{"body": "two"}\n')
    one_line_error(capsys, ["--data", str(tmp_path / "records.jsonl"), "--out", str(tmp_path / "c")],
                   "records.jsonl:2: the --text-field 'text' is missing")
    one_line_error(capsys, ["--data", str(wiki_dump), "--out", str(tmp_path / "d"), "--vocab-size", "70000",
                            "--dtype", "uint16", "--tokenizer-chars", "100"],
                   "the vocabulary of 70,000 ids is too large for --dtype uint16")


def test_a_shard_index_that_disagrees_with_its_shards_stops_training_in_one_line(wiki_dump, tmp_path, capsys):
    out = tmp_path / "shards"
    assert tokenize("--data", str(wiki_dump), "--out", str(out)) == 0
    index = json.loads((out / "index.json").read_text())
    index["shards"][0]["tokens"] += 5
    (out / "index.json").write_text(json.dumps(index))
    capsys.readouterr()
    assert main(["train", "--data", str(out), "--out", str(tmp_path / "run"), "--max-steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the index says" in err and "npllm tokenize --data" in err


@pytest.mark.bench
def test_bench_tokenize_runs_with_tiny_settings(capsys):
    assert main(["bench", "tokenize", "--megabytes", "0.05", "0.1", "--vocab-size", "270", "--tokenizer-chars",
                 "20000", "--workers", "1", "--json"]) == 0
    out = capsys.readouterr().out
    assert "projected time for English Wikipedia" in out
    results = json.loads(out.splitlines()[-1])
    assert [run["workers"] for run in results["runs"]] == [1, 1]
    assert isinstance(results["huggingface"], str) or results["huggingface"]["same_ids_as_ours"]


def test_a_tokenizer_learns_from_a_sample_of_a_dump(wiki_dump, tmp_path, capsys):
    out = tmp_path / "tokenizer.txt"
    assert main(["tokenizer", "train", "--data", str(wiki_dump), "--vocab-size", "280", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert main(["tokenizer", "encode", "--tokenizer", str(out), "Tortoises are reptiles"]) == 0
    assert len(capsys.readouterr().out.split()) < len("Tortoises are reptiles")
