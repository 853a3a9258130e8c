"""Chapter 2. Byte-level BPE in six steps: how text becomes the integers a GPT reads.

Run:  python examples/02_tokenizer.py                         (Python's reference prose, 1024 tokens, ~20 s)
      python examples/02_tokenizer.py --data my_notes.txt --vocab-size 400

Source: npllm/tokenizer/ (train.py, encode.py, patterns.py).

1. Every text is UTF-8 bytes, so 256 byte tokens can spell anything.
2. Training repeats one move: merge the most frequent adjacent pair into a new token.
   The first merges are the commonest pieces of the text.
3. Encoding applies the merges, decoding joins the bytes: a round trip, exact for any
   text, including characters the training text never held.
4. The split pattern cuts text into chunks (words, numbers, spaces) first, so no merge
   ever joins the end of one word with the start of the next.
5. Special tokens such as <|endoftext|> are ids of their own, produced only when the
   caller allows them: ordinary text cannot forge one.
6. How long the tokens are, in bytes: the vocabulary's, and those that spell the text
   (a picture, token_lengths.png, with matplotlib: pip install 'npllm[plot]').
"""

import argparse

import regex  # the split patterns use classes like \p{L} (any letter), which only `regex` knows

from npllm.data.sources import load_corpus
from npllm.plot import picture
from npllm.plot.charts import histogram
from npllm.tokenizer import BPETokenizer

END_OF_TEXT = "<|endoftext|>"

def show_pieces(tokenizer, ids):
    """The bytes each id stands for, between bars (a byte that is part of a character shown as \\xNN)."""
    return "|".join(tokenizer.decode_bytes([token]).decode("utf-8", "backslashreplace") for token in ids)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="docs", help="docs, stdlib, shakespeare, or a text file or folder")
    parser.add_argument("--vocab-size", type=int, default=1024, help="256 bytes + merges + 1 special token")
    parser.add_argument("--out", default="runs/textbook/02-tokenizer", help="folder for the chapter's picture")
    args = parser.parse_args(argv)
    text = load_corpus(args.data).text

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

    vocabulary = [len(tokenizer.decode_bytes([token])) for token in range(tokenizer.vocab_size)
                  if token not in tokenizer.special_tokens.values()]
    spelled = [len(tokenizer.decode_bytes([token])) for token in tokenizer.encode_ordinary(text)]
    print(f"6. bytes per token: {sum(vocabulary) / len(vocabulary):.2f} over the vocabulary,"
          f" {sum(spelled) / len(spelled):.2f} over the text ({len(spelled):,} tokens); the longest: {max(vocabulary)}")
    picture(f"{args.out}/token_lengths.png", histogram, {"vocabulary": vocabulary, "tokens of the text": spelled},
            "bytes per token", title=f"token lengths, a {tokenizer.vocab_size}-token BPE")
    return tokenizer


if __name__ == "__main__":
    main()
