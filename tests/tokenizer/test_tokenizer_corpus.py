"""The embedded default corpus, and the small varied texts the other tokenizer tests share."""

import sysconfig
from pathlib import Path

from npllm.data import docs_text, iter_stdlib_files, stdlib_text

# Prose, code, numbers, contractions, whitespace of every kind, and Unicode beyond Latin:
# emoji with skin-tone modifiers and zero-width joiners, CJK, Hangul, combining marks, RTL.
VARIED_TEXTS = [
    "Hello, world! It's a test; we'll see what they've done. I'M SHOUTING, you'RE not.",
    "The quick brown fox jumps over the lazy dog.\n\nThe end.   \n",
    "def train(self, text: str, vocab_size: int = 4096) -> None:\n    for i in range(10):\n\t\treturn {'a': [1, 2]}\r\n",
    "Numbers: 1234567890 3.14159 -42 1e-10 0x1F 12,345,678 ٣٤٥ ⅫⅣ ²³",
    "Emoji: 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️ 🤖🤖🤖",
    "中文汉字测试，日本語のテキスト、한국어 텍스트입니다。",
    "Combining: e\u0301 a\u0308 n\u0303 Z\u0335\u0321\u032a; Ελληνικά; русский текст; עִבְרִית; العربية",
    "   leading spaces, trailing tabs\t\t\n\n\n   \r\n\r\n  multiple   spaces    here  ",
    "<tag attr=\"x\">html &amp; entities</tag> `code` **bold** __dunder__ $money$ 100% #hash @at ~tilde^",
    "aaabdaaabac " * 3 + "abababab xyzxyzxyz",
    "\x00\x01\x1c\x1d\x7f control\u200b\u00a0\u2028\u3000 odd spaces",
]
VARIED_TEXT = "\n".join(VARIED_TEXTS)


def test_stdlib_files_are_sorted_python_sources_outside_tests():
    paths = list(iter_stdlib_files())
    root = Path(sysconfig.get_paths()["stdlib"])
    assert len(paths) > 100
    assert all(path.suffix == ".py" for path in paths)
    excluded = {"test", "tests", "idle_test", "site-packages", "dist-packages"}
    assert not any(excluded & set(path.relative_to(root).parts[:-1]) for path in paths)
    assert paths == list(iter_stdlib_files())


def test_stdlib_text_is_deterministic_and_cut_on_a_character_boundary():
    first = stdlib_text(max_bytes=100_000)
    assert first == stdlib_text(max_bytes=100_000)
    assert 99_996 <= len(first.encode("utf-8")) <= 100_000
    assert "def " in first and "import" in first


def test_docs_text_is_english_reference_prose():
    text = docs_text()
    assert len(text) > 100_000
    assert "assert" in text and text == docs_text()
