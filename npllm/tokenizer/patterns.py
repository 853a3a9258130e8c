"""The split patterns: how text is cut into chunks before byte-pair encoding sees it.

Byte-pair encoding on its own would happily learn a token for "dog." or "e the",
gluing punctuation to words and words to each other, and the vocabulary would fill up
with near-duplicates ("dog", "dog.", "dog!", "dog?"). GPT-2 fixed this by first
cutting text into chunks with a regular expression and running BPE inside each chunk
only: merges never cross a chunk boundary.

Each pattern below is a list of alternatives tried left to right at each position.
The pieces read:

* ``'(?:[sdmt]|ll|ve|re)`` English contractions: 's, 't, 'll, 've, 're, ...
* `` ?\\p{L}++`` a run of letters with at most one leading space, so " dog" is one chunk
  and the space that separates words travels with the word after it.
* ``\\p{N}`` digits; GPT-4 takes at most three at a time so numbers tokenize evenly.
* ``[^\\s\\p{L}\\p{N}]++`` a run of punctuation and symbols.
* ``\\s++$`` / ``\\s+(?!\\S)`` / ``\\s`` whitespace: a run at the very end of the text, a run
  that leaves its last space for the next word, and any single leftover.

GPT-4's pattern ("cl100k") differs in four ways: contractions match any case, a letter
run may start with one punctuation character instead of a space (so "(word" or ".append"
is a chunk), digits come in groups of at most three, and newlines stick to the
punctuation or whitespace before them.

The ``++`` and ``?+`` are possessive quantifiers: they never give back what they matched.
They do not change which chunks come out, only how fast the regex engine finds them.
The strings are written so that tiktoken (whose engine is Rust's fancy-regex) and
Python's ``regex`` package cut every text identically; the tests check that.

Left out on purpose: the later, larger pattern families (o200k and friends); any regex
string can be passed instead of a name.
"""

import regex

from npllm.errors import SettingError

GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)

PATTERNS = {"gpt2": GPT2_PATTERN, "gpt4": GPT4_PATTERN}


def resolve_pattern(pattern: str) -> str:
    """The regex for a pattern name ("gpt2", "gpt4"), or the string itself if it is already a regex.

    A custom regex is compiled once here so that a typo fails now, with the regex named,
    rather than on the first encode.
    """
    if not isinstance(pattern, str) or not pattern:
        raise SettingError(f"`pattern` must be one of {sorted(PATTERNS)} or a non-empty regex string, got {pattern!r}")
    if pattern in PATTERNS:
        return PATTERNS[pattern]
    try:
        regex.compile(pattern)
    except regex.error as error:
        raise SettingError(f"`pattern` {pattern!r} is not a valid regex: {error}") from error
    return pattern
