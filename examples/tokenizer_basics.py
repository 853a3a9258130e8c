"""Byte-level BPE in five steps: how text becomes the integers a GPT reads.

Run:  python examples/tokenizer_basics.py
      python examples/tokenizer_basics.py --vocab-size 400 --data docs

1. Every text is UTF-8 bytes, so 256 byte tokens can spell anything.
2. Training repeats one move: merge the most frequent adjacent pair into a new token.
   The first merges are the commonest pieces of the text.
3. Encoding applies the merges, decoding joins the bytes: a round trip, exact for any
   text, including characters the training text never held.
4. The split pattern cuts text into chunks (words, numbers, spaces) first, so no merge
   ever joins the end of one word with the start of the next.
5. Special tokens such as <|endoftext|> are ids of their own, produced only when the
   caller allows them: ordinary text cannot forge one.
"""

import argparse

import regex  # the split patterns use classes like \p{L} (any letter), which only `regex` knows

from npllm.data.sources import load_corpus
from npllm.tokenizer import BPETokenizer

END_OF_TEXT = "<|endoftext|>"
TEXT = """\
A tokenizer turns text into tokens, and tokens into text. The tokens of a
tokenizer are learned from the text: the most frequent pairs of bytes are merged
first, then pairs of those, and so on, until the vocabulary is full. The merges
of the training text become the tokens the model reads.
""" * 20


def show_pieces(tokenizer, ids):
    """The bytes each id stands for, between bars (a byte that is part of a character shown as \\xNN)."""
    return "|".join(tokenizer.decode_bytes([token]).decode("utf-8", "backslashreplace") for token in ids)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="a corpus (docs, stdlib, a file) instead of the built-in text")
    parser.add_argument("--vocab-size", type=int, default=300, help="256 bytes + merges + 1 special token")
    args = parser.parse_args(argv)
    text = TEXT if args.data is None else load_corpus(args.data).text

    sample = "tokens of text"
    print(f"1. {sample!r} as UTF-8 bytes: {list(sample.encode('utf-8'))}")

    tokenizer = BPETokenizer.train(text, vocab_size=args.vocab_size, special_tokens={END_OF_TEXT: args.vocab_size - 1})
    merged = sorted((rank, token) for token, rank in tokenizer.mergeable_ranks.items() if rank >= 256)
    print(f"2. {len(merged)} merges learned; the first ten:")
    for rank, token in merged[:10]:
        print(f"   token {rank}: {token!r}")

    for text_in in (sample, "Tokenizers learn; ünïcödé and 🙂 fall back to bytes."):
        ids = tokenizer.encode(text_in)
        round_trip = tokenizer.decode(ids)
        print(f"3. {text_in!r}: {len(text_in.encode('utf-8'))} bytes -> {len(ids)} tokens {show_pieces(tokenizer, ids)}"
              f"  round trip exact: {round_trip == text_in}")

    print(f"4. chunks before merging: {regex.findall(tokenizer.pattern, 'The text, 2024 times.  Merged?')}")

    with_special = f"the end.{END_OF_TEXT}A new document"
    print(f"5. {END_OF_TEXT} allowed -> {tokenizer.encode(with_special, allowed_special='all')}")
    print(f"   as ordinary text   -> {tokenizer.encode_ordinary(with_special)}")
    try:
        tokenizer.encode(with_special)
    except ValueError as error:
        print(f"   by default, refused: {error}")
    return tokenizer


if __name__ == "__main__":
    main()
