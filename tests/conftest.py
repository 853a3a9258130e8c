"""Fixtures shared by the training, generation, CLI and example tests: a tiny corpus and a private cache."""

import pytest

from wiki_pages import write_wiki_dump

# Short sentences repeated: a tokenizer of ~300 ids and a 16-wide GPT learn it within a hundred steps.
TINY_TEXT = (
    "the cat sat on the mat. the dog sat on the log. a cat and a dog met on the mat.\n"
    "the bird sang in the tree. the fish swam in the sea. a bird and a fish never met.\n"
) * 40


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """Point NPLLM_CACHE at a fresh folder, so token files never touch the user's cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("NPLLM_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def tiny_text():
    return TINY_TEXT


@pytest.fixture
def tiny_corpus(tmp_path, isolated_cache, tiny_text):
    """A small repetitive text file to train on (with the cache isolated)."""
    path = tmp_path / "tiny.txt"
    path.write_text(tiny_text, encoding="utf-8")
    return path


@pytest.fixture
def wiki_dump(tmp_path):
    """A small MediaWiki dump, bzip2-compressed as Wikipedia publishes it."""
    return write_wiki_dump(tmp_path / "tinywiki-pages-articles.xml.bz2")
