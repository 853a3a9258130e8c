"""Text for training: the default corpus that ships with Python (see ``corpus.py``).

A corpus is read whole (``sources.py``) and its ids cached (``tokens.py``), or,
when it is too large for that, streamed (``streams.py``, ``wikitext.py``) and
tokenized into token shards on every core (``shards.py``).  ``batches.py`` and
``masking.py`` cut either into training windows.
"""

from npllm.data.corpus import docs_text, iter_stdlib_files, stdlib_text

__all__ = ["docs_text", "iter_stdlib_files", "stdlib_text"]
