"""Text for training: the default corpus that ships with Python (see ``corpus.py``)."""

from npllm.data.corpus import docs_text, iter_stdlib_files, stdlib_text

__all__ = ["docs_text", "iter_stdlib_files", "stdlib_text"]
