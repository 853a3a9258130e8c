"""Cutting text into chunks with the split pattern.

PLACEHOLDER: the plain regex findall.
"""

import regex


def compile_splitter(pattern: str):
    return regex.compile(pattern).findall
