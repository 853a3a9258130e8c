"""Generation: from a trained model's logits to text.

- ``sampling``: greedy, temperature, top-k and top-p choices of one token;
- ``decoding``: the token-by-token loop of a decoder-only model, with its KV cache;
- ``encoder``: what an encoder (BERT) is used for: sentence embeddings, filling [MASK]s;
- ``seq2seq``: an encoder–decoder (BART) writing a target per source: greedy, sampling, beam search.
"""

from npllm.generation.decoding import generate, generate_tokens
from npllm.generation.sampling import filter_logits, sample_token

__all__ = ["generate", "generate_tokens", "sample_token", "filter_logits"]
