"""Running the split pattern fast: the same chunks, found by Python's built-in ``re``.

The split patterns need Unicode classes such as ``\\p{L}`` (any letter), which only the
third-party ``regex`` package understands. But ``regex`` is slow at this job: cutting
5 MB of source code into chunks takes it about a second, more than everything else
encoding does, while the standard library's ``re`` runs an equivalent pattern about
three times as fast.

So we translate. A class like ``\\p{L}`` is only a set of code points, and ``regex`` can
tell us which: run ``[\\p{L}]+`` over a string holding every code point, and the matches
are the ranges of letters. Written out as ``[\\u0041-\\u005a\\u0061-...]``, that set means
to ``re`` what ``\\p{L}`` means to ``regex``, in the same Unicode version. ``\\s``, ``\\d``
and ``\\w`` are translated the same way, since the two engines disagree on a few
characters (``re`` counts U+001C..U+001F as whitespace, ``regex`` does not).

One catch: ``re`` tests a character against a class's ranges above U+FFFF one by one,
and letters alone have hundreds of those, which makes every failed test slow. So the
translation lists only the ranges up to U+FFFF (the Basic Multilingual Plane), and a
text holding any character beyond it (an emoji, say) is split by ``regex`` instead.
Checking is cheap: such a character takes two UTF-16 code units instead of one.

The translator reads the pattern piece by piece and gives up, leaving ``regex`` to do
all the work, on anything it does not know to mean the same to both engines (``\\b``,
``\\X``, nested sets, inline flags, a class inside a case-insensitive group, ...), and
whenever ``re`` refuses the result (possessive quantifiers such as ``++`` need Python
3.11). The tests compare both splitters on text holding every code point.

Left out on purpose: a hand-written scanner for the two built-in patterns. It would be
faster still, but it would be a second definition of the patterns to keep in step.
"""

import functools
import re
from collections.abc import Callable

import regex

SET_ESCAPE = re.compile(r"\\([pP])\{([^}]*)\}|\\([sSdDwW])")
PLAIN_ESCAPES = set("rntfv\\'\"-.[](){}|?*+^$/ #&~:=!<>,")  # escapes meaning the same literal to both engines
GROUP_OPENINGS = ("(?:", "(?i:", "(?!", "(?=", "(?<!", "(?<=", "(?>")
LAST_BMP_CODE_POINT = 0xFFFF


@functools.cache
def bmp_ranges(escape: str) -> str:
    r"""The code points up to U+FFFF that ``regex`` puts in a class escape such as ``\p{L}``, as ``re`` ranges."""
    every_code_point = "".join(map(chr, range(LAST_BMP_CODE_POINT + 1)))
    spans = (match.span() for match in regex.finditer(f"[{escape}]+", every_code_point))
    return "".join(f"\\u{start:04x}-\\u{end - 1:04x}" for start, end in spans)


def translate_set_escape(match: re.Match, inside_class: bool) -> str:
    r"""``\p{L}``, ``\s`` and the like as explicit ranges; ``\P{..}``, ``\S`` and the like as their complement."""
    if match.group(3):
        letter = match.group(3)
        escape = "\\" + letter.lower()
        negated = letter.isupper()
    else:
        escape = f"\\p{{{match.group(2)}}}"
        negated = match.group(1) == "P"
    ranges = bmp_ranges("^" + escape if negated else escape)
    return ranges if inside_class else f"[{ranges}]"


def translate(pattern: str) -> str | None:
    """The pattern for ``re``, valid on text without characters beyond U+FFFF; None if unsure."""
    pieces, i = [], 0
    inside_class = False
    case_insensitive = [False]  # one entry per open group: is it inside (?i: ... )?
    while i < len(pattern):
        char = pattern[i]
        set_escape = SET_ESCAPE.match(pattern, i)
        if set_escape:
            if case_insensitive[-1]:
                return None
            pieces.append(translate_set_escape(set_escape, inside_class))
            i = set_escape.end()
            continue
        if char == "\\":
            if pattern[i + 1 : i + 2] not in PLAIN_ESCAPES:
                return None
            pieces.append(pattern[i : i + 2])
            i += 2
            continue
        if inside_class:
            if char == "[" or pattern.startswith(("--", "&&", "||", "~~"), i):
                return None  # nested sets and set operations are regex-only
            inside_class = char != "]"
        elif char == "[":
            if pattern.startswith(("[]", "[^]"), i):
                return None  # a "]" right after "[" is read differently by the two engines
            inside_class = True
        elif char == "(":
            if pattern.startswith("(?", i) and not pattern.startswith(GROUP_OPENINGS, i):
                return None
            case_insensitive.append(case_insensitive[-1] or pattern.startswith("(?i:", i))
        elif char == ")" and len(case_insensitive) > 1:
            case_insensitive.pop()
        pieces.append(char)
        i += 1
    return None if inside_class else "".join(pieces)


def beyond_bmp(text: str) -> bool:
    """Does the text hold a character above U+FFFF? Such a character needs two UTF-16 code units."""
    return not text.isascii() and len(text.encode("utf-16-le", errors="surrogatepass")) != 2 * len(text)


@functools.cache
def compile_splitter(pattern: str) -> Callable[[str], list[str]]:
    """A function text -> chunks, equal to ``regex.findall(pattern, text)``, using ``re`` where it can."""
    regex_findall = regex.compile(pattern).findall
    translated = translate(pattern)
    try:
        re_findall = re.compile(translated).findall if translated is not None else None
    except re.error:
        re_findall = None  # e.g. possessive quantifiers before Python 3.11
    if re_findall is None:
        return regex_findall

    def split(text: str) -> list[str]:
        return regex_findall(text) if beyond_bmp(text) else re_findall(text)

    return split
