"""Training on a corpus too large for one string: a Wikipedia dump streamed into shards, or a shard folder.

The recipe tokenizes a stream into ``out_dir/shards`` (the tokenizer learned
from a seeded sample of its documents), trains on the memory-mapped shards,
and resumes bit for bit; windows may respect document boundaries, for the GPT
and the BERT recipes alike.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from wiki_pages import WIKI_PAGES, write_wiki_dump
from npllm.data.shards import ShardError, tokenize_to_shards
from npllm.data.streams import DocumentSource
from npllm.errors import SettingError
from npllm.tokenizer import BPETokenizer
from npllm.training import pretrain, pretrain_bert
from npllm.training.pretrain import TrainConfig

TINY = dict(vocab_size=300, n_layer=1, n_head=2, n_embd=16, context_length=16, batch_size=4, eval_windows=4,
            warmup_steps=2, max_steps=8, decay_steps=8, eval_interval=4, shard_tokens=1500, workers=1)


def silent(*_):
    pass


@pytest.fixture(scope="module")
def dump(tmp_path_factory):
    """A dump of 80 copies of the fixture's pages (160 articles), bzip2-compressed."""
    pages = [(f"{title} {i}", ns, redirect, text) for i in range(40) for title, ns, redirect, text in WIKI_PAGES]
    return write_wiki_dump(tmp_path_factory.mktemp("wiki") / "tinywiki-pages-articles.xml.bz2", pages)


def losses(out_dir):
    lines = (Path(out_dir) / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["train_loss"], r.get("val_loss")) for r in map(json.loads, lines)]


@pytest.mark.parametrize("boundaries", ["cross", "respect"])
def test_a_dump_trains_through_shards_and_resumes_bit_identically(dump, tmp_path, boundaries):
    whole = TrainConfig(**TINY, data=str(dump), boundaries=boundaries, out_dir=str(tmp_path / "whole"))
    run = pretrain.train(whole, progress=False, log=silent)
    assert len(list((tmp_path / "whole" / "shards").glob("train-*.bin"))) > 1
    assert type(run.batches.tokens).__name__ == "ShardedTokens"
    halves = TrainConfig(**{**TINY, "max_steps": 4}, data=str(dump), boundaries=boundaries,
                         out_dir=str(tmp_path / "halves"))
    pretrain.train(halves, progress=False, log=silent)
    pretrain.resume(halves.out_dir, {"max_steps": 8}, progress=False, log=silent)
    assert losses(halves.out_dir) == losses(whole.out_dir)


def test_respected_boundaries_never_ask_for_a_token_of_the_next_document(dump, tmp_path):
    config = TrainConfig(**TINY, data=str(dump), boundaries="respect", out_dir=str(tmp_path / "run"))
    run = pretrain.start_run(config, silent)
    eot = run.tokenizer.special_tokens["<|endoftext|>"]
    for _ in range(20):
        batch = run.batches.next_batch()
        after = np.cumsum(batch["input_ids"] == eot, axis=1) > 0
        assert (batch["targets"][after] == -100).all() and (batch["targets"][~after] >= 0).all()


def test_a_shard_folder_trains_with_its_own_tokenizer(dump, tmp_path):
    tokenizer = BPETokenizer.train("the tortoise and the lighthouse " * 50, 290, special_tokens={"<|endoftext|>": 289})
    folder = tokenize_to_shards(DocumentSource(dump), tokenizer, tmp_path / "shards", 1500, 0.05, 1, log=silent)
    run = pretrain.train(TrainConfig(**TINY, data=str(folder), out_dir=str(tmp_path / "run")), progress=False,
                         log=silent)
    assert run.model.config.vocab_size == 290 and run.tokenizer.vocab_size == 290
    with pytest.raises(SettingError, match=r"`validation_fraction` 0.1 differs from the one `data`"):
        pretrain.train(TrainConfig(**TINY, data=str(folder), validation_fraction=0.1, out_dir=str(tmp_path / "b")),
                       progress=False, log=silent)
    (folder / "validation-00000.bin").write_bytes(b"")
    with pytest.raises(ShardError, match="truncated or damaged"):
        pretrain.train(TrainConfig(**TINY, data=str(folder), out_dir=str(tmp_path / "c")), progress=False, log=silent)


def test_a_bert_respects_boundaries_with_padding_and_its_attention_mask(dump, tmp_path):
    config = pretrain_bert.BERTTrainConfig(**{**TINY, "context_length": 128, "max_steps": 2}, data=str(dump),
                                           boundaries="respect", out_dir=str(tmp_path / "b"))
    run = pretrain_bert.train(config, progress=False, log=silent)
    pad = run.tokenizer.special_tokens["[PAD]"]
    batches = [run.batches.next_batch() for _ in range(20)]
    assert any((batch["attention_mask"] == 0).any() for batch in batches)
    for batch in batches:
        padded = batch["attention_mask"] == 0
        assert (batch["input_ids"][padded] == pad).all() and (batch["targets"][padded] == -100).all()


def test_respecting_boundaries_of_a_text_read_whole_is_refused(tiny_corpus, tmp_path):
    with pytest.raises(SettingError, match=r"`boundaries` respect needs documents"):
        pretrain.train(TrainConfig(**TINY, data=str(tiny_corpus), boundaries="respect", out_dir=str(tmp_path / "r")),
                       progress=False, log=silent)
