"""The fast splitter (the pattern translated for ``re``) must cut exactly where ``regex`` cuts."""

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st
from test_tokenizer_corpus import VARIED_TEXT

from npllm.tokenizer.patterns import GPT2_PATTERN, GPT4_PATTERN
from npllm.tokenizer.splitter import beyond_bmp, compile_splitter, translate

EVERY_BMP_CHARACTER = "".join(chr(c) for c in range(0x10000) if not 0xD800 <= c <= 0xDFFF)


@pytest.mark.parametrize("pattern", [GPT2_PATTERN, GPT4_PATTERN])
def test_built_in_patterns_are_translated(pattern):
    assert translate(pattern) is not None


@pytest.mark.parametrize("pattern", [GPT2_PATTERN, GPT4_PATTERN])
@pytest.mark.parametrize("glue", ["", " ", "  ", "'", "'l", "a", "1", "\n", "\r\n", ".", "\t"])
def test_every_bmp_character_in_context_is_cut_as_regex_cuts_it(pattern, glue):
    text = glue.join(EVERY_BMP_CHARACTER) + glue
    assert compile_splitter(pattern)(text) == regex.findall(pattern, text)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(max_codepoint=0xFFFF, exclude_categories=["Cs"]), max_size=60))
def test_arbitrary_bmp_text_is_cut_as_regex_cuts_it(text):
    for pattern in (GPT2_PATTERN, GPT4_PATTERN):
        assert compile_splitter(pattern)(text) == regex.findall(pattern, text)


def test_text_beyond_the_bmp_takes_the_regex_path_and_agrees():
    text = VARIED_TEXT + " 𝔘𝔫𝔦 𐍈 🤖"
    assert beyond_bmp(text) and not beyond_bmp("中文, é, and ASCII")
    for pattern in (GPT2_PATTERN, GPT4_PATTERN):
        assert compile_splitter(pattern)(text) == regex.findall(pattern, text)


@pytest.mark.parametrize(
    "pattern",
    [r"\b\w+", r"(?i)\p{L}+", r"(?i:\p{Lu})", r"[\p{L}--[a-z]]", r"\X", r"[]a]", r"(?V1)a"],
)
def test_patterns_it_cannot_vouch_for_fall_back_to_regex(pattern):
    assert translate(pattern) is None
    assert compile_splitter(pattern)("Hello wörld ÉCOLE") == regex.findall(pattern, "Hello wörld ÉCOLE")


def test_a_custom_pattern_with_classes_is_translated_exactly():
    pattern = r"\p{Lu}\p{Ll}*|\P{L}+|\S"
    assert translate(pattern) is not None
    assert compile_splitter(pattern)(EVERY_BMP_CHARACTER) == regex.findall(pattern, EVERY_BMP_CHARACTER)
