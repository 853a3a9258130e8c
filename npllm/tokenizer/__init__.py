"""Byte-level byte-pair encoding, GPT-2 and GPT-4 style, trained from scratch and exact to tiktoken; and BERT's WordPiece.

Reading order:

1. ``patterns.py``   the split regexes: how text is cut into chunks before BPE.
2. ``splitter.py``   running the split pattern fast.
3. ``naive.py``      BPE training the obvious way, the readable reference.
4. ``train.py``      the same merges, found incrementally with a heap: fast.
5. ``encode.py``     encoding chunks: merge bytes lowest rank first, one chunk or many in lockstep.
6. ``tokenizer.py``  ``BPETokenizer``: train, encode, decode, special tokens, save and load.
7. ``files.py``      file formats: ours, tiktoken's rank files, GPT-2's encoder.json + vocab.bpe.
   ``huggingface.py`` Hugging Face's tokenizer.json (and vocab.json + merges.txt, GPT-2's pair renamed).
8. ``bench.py``      speed against Hugging Face ``tokenizers`` and tiktoken.
9. ``wordpiece.py``  BERT's WordPiece, read from a checkpoint: normalise, split words, longest-match pieces.
10. ``bart.py``      BART's tokenizer: GPT-2's merges under fairseq's ids, ``<s> text </s>``.
"""

from npllm.tokenizer.files import TokenizerFileError
from npllm.tokenizer.patterns import GPT2_PATTERN, GPT4_PATTERN, PATTERNS
from npllm.tokenizer.tokenizer import BPETokenizer
from npllm.tokenizer.wordpiece import WordPieceTokenizer
from npllm.tokenizer.bart import BARTTokenizer


def save_tokenizer_file(tokenizer, path) -> None:
    """Write either tokenizer as one file (a run folder keeps one): ours for a BPE, tokenizer.json for a WordPiece."""
    if isinstance(tokenizer, WordPieceTokenizer):
        tokenizer.save_json(path)
    else:
        tokenizer.save(path)


def load_tokenizer_file(path):
    """The tokenizer ``save_tokenizer_file`` wrote at ``path``: a WordPiece if it is JSON, else a BPE."""
    with open(path, "rb") as file:
        is_json = file.read(1) == b"{"
    return WordPieceTokenizer.from_tokenizer_json(path) if is_json else BPETokenizer.load(path)

__all__ = ["BPETokenizer", "BARTTokenizer", "GPT2_PATTERN", "GPT4_PATTERN", "PATTERNS", "TokenizerFileError", "WordPieceTokenizer",
           "load_tokenizer_file", "save_tokenizer_file"]
