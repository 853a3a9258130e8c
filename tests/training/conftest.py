"""Fixtures of the fine-tuning tests: a tiny pre-trained GPT to start from."""

import pytest

from npllm.training.pretrain import TrainConfig, train


@pytest.fixture
def base(tiny_corpus, tmp_path):
    """The run folder of a 2-block, 16-wide GPT trained for two steps on the tiny corpus."""
    run = train(TrainConfig(vocab_size=300, n_layer=2, n_head=2, n_embd=16, context_length=16, batch_size=4,
                            eval_windows=4, max_steps=2, data=str(tiny_corpus), out_dir=str(tmp_path / "base")),
                progress=False, log=lambda *_: None)
    return run.config.out_dir


@pytest.fixture
def instruct_base(tiny_corpus, tmp_path):
    """A tiny GPT whose context (160) holds the instruction template and a short record."""
    run = train(TrainConfig(vocab_size=300, n_layer=2, n_head=2, n_embd=16, context_length=160, batch_size=4,
                            eval_windows=2, validation_fraction=0.15, max_steps=2, data=str(tiny_corpus),
                            out_dir=str(tmp_path / "instruct-base")), progress=False, log=lambda *_: None)
    return run.config.out_dir
