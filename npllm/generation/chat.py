"""Answering an instruction: the prompt template applied, the response written until end-of-text.

An instruction-tuned GPT (``npllm finetune instruct``) has learned to
continue ``format_prompt(instruction, input)`` (``npllm.data.instructions``,
the one place the template is written) with a response closed by
end-of-text.  ``response_pieces`` does exactly that with the token loop of
``decoding.py``: it encodes the prompt, writes tokens until ``stop_token``
(or ``max_new_tokens``) and yields the response's text as it grows, for a
caller to stream; ``respond`` joins it.  Greedy (``temperature=0``) by
default: an answer, not a story.

A prompt longer than the model's context is cut from the left with a
warning (``generate_tokens`` does it), so the instruction's end and the
``### Response:`` line the model answers after are kept.
"""

import codecs
from typing import Iterable, Iterator

from npllm.data.instructions import format_prompt
from npllm.generation.decoding import generate_tokens


def decoded_pieces(tokenizer, tokens: Iterable[int], stop_token: int | None) -> Iterator[str]:
    """The text of ``tokens`` as it arrives, up to (not with) ``stop_token``; a character may span tokens."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for token in tokens:
        if token == stop_token:
            break
        piece = decoder.decode(tokenizer.decode_bytes([token]))
        if piece:
            yield piece
    rest = decoder.decode(b"", final=True)
    if rest:
        yield rest


def response_pieces(model, tokenizer, instruction: str, input: str = "", stop_token: int | None = None,
                    max_new_tokens=256, temperature=0.0, top_k=None, top_p=None, seed=None) -> Iterator[str]:
    """The model's response to ``instruction`` (and ``input``), piece by piece, until ``stop_token``."""
    prompt_ids = tokenizer.encode_ordinary(format_prompt(instruction, input))
    tokens = generate_tokens(model, prompt_ids, max_new_tokens, temperature, top_k, top_p, seed,  # checks every
                             stop_token=stop_token, banned_tokens=tokenizer.unused_ids())  # setting before the first token
    return decoded_pieces(tokenizer, tokens, stop_token)


def respond(model, tokenizer, instruction: str, input: str = "", stop_token: int | None = None, **settings) -> str:
    """The whole response (``response_pieces`` joined)."""
    return "".join(response_pieces(model, tokenizer, instruction, input, stop_token, **settings))
