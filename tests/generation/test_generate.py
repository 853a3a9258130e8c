"""Generation writes what it promises.

The KV cache changes the cost, never the tokens: cached and uncached generation
agree token for token, greedy and sampled, also after the text outgrows the
context and the window slides. A seed fixes a sample; the stop token stops; a
long prompt is cropped from the left with a warning. top-k and top-p keep exactly
the tokens they should on hand-made logits, temperature reshapes the distribution
(0 is argmax), and impossible settings are refused when generation is asked for.
"""

import warnings

import numpy as np
import pytest

from npllm.errors import NpllmError
from npllm.generation import decoding
from npllm.generation.decoding import generate_tokens
from npllm.generation.sampling import filter_logits, sample_token, softmax_1d
from npllm.models import GPT, GPTConfig

CONTEXT = 16
SAMPLINGS = {
    "greedy": dict(temperature=0),
    "temperature 1": dict(temperature=1.0, seed=0),
    "temperature 0.7, top-k 5": dict(temperature=0.7, top_k=5, seed=1),
    "top-p 0.9": dict(top_p=0.9, seed=2),
    "top-k 10 and top-p 0.8": dict(top_k=10, top_p=0.8, seed=3),
}


@pytest.fixture(scope="module")
def model():
    return GPT(GPTConfig(vocab_size=64, context_length=CONTEXT, n_layer=2, n_head=2, n_embd=16), seed=0)


def generate(model, prompt, max_new_tokens, **sampling):
    return list(generate_tokens(model, prompt, max_new_tokens, **sampling))


@pytest.mark.parametrize("sampling", SAMPLINGS.values(), ids=SAMPLINGS.keys())
@pytest.mark.parametrize("prompt_length, max_new_tokens", [(1, 8), (5, 30), (CONTEXT, 4)],
                         ids=["short", "window slides", "prompt fills the context"])
def test_kv_cache_writes_the_same_tokens_as_no_cache(model, sampling, prompt_length, max_new_tokens):
    prompt = np.arange(prompt_length) % 64
    cached = generate(model, prompt, max_new_tokens, use_cache=True, **sampling)
    uncached = generate(model, prompt, max_new_tokens, use_cache=False, **sampling)
    assert cached == uncached and len(cached) == max_new_tokens


def test_same_seed_same_sample_and_other_seeds_differ(model):
    first, again, *others = (generate(model, [1, 2, 3], 20, seed=seed) for seed in (0, 0, 1, 2))
    assert first == again
    assert len({tuple(sample) for sample in (first, *others)}) == 3


def test_stop_token_ends_generation_after_yielding_it(model):
    unstopped = generate(model, [5], 20, seed=4)
    stop = unstopped[7]
    first = unstopped.index(stop)
    assert generate(model, [5], 20, seed=4, stop_token=stop) == unstopped[: first + 1]


def test_long_prompt_is_cropped_from_the_left_with_a_warning(model):
    prompt = np.arange(CONTEXT + 4)
    with pytest.warns(UserWarning, match=f"prompt has {CONTEXT + 4} tokens, more than the context of {CONTEXT};"
                                         f" using its last {CONTEXT}"):
        cropped_run = generate(model, prompt, 6, temperature=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a prompt that fits warns about nothing
        assert cropped_run == generate(model, prompt[-CONTEXT:], 6, temperature=0)


def test_generate_returns_the_cropped_prompt_then_the_new_tokens_and_keeps_training_mode(model):
    prompt = np.arange(CONTEXT + 2)
    model.train()
    with pytest.warns(UserWarning, match="using its last"):
        ids = decoding.generate(model, prompt[None, :], 5, top_k=3, seed=7)
    assert model.training
    with pytest.warns(UserWarning, match="using its last"):
        assert ids.tolist() == prompt[-CONTEXT:].tolist() + generate(model, prompt, 5, top_k=3, seed=7)


# Probabilities placed out of order, so a filter that ignores positions would fail.
PROBS = np.array([0.10, 0.50, 0.05, 0.20, 0.15])  # descending: ids 1, 3, 4, 0, 2


@pytest.mark.parametrize("top_k, top_p, kept", [
    (1, None, {1}),
    (3, None, {1, 3, 4}),
    (5, None, {0, 1, 2, 3, 4}),
    (50, None, {0, 1, 2, 3, 4}),    # more than the vocabulary: nothing to drop
    (None, 0.45, {1}),              # 0.5 alone already reaches 0.45
    (None, 0.69, {1, 3}),           # 0.5 + 0.2
    (None, 0.80, {1, 3, 4}),        # 0.5 + 0.2 + 0.15
    (None, 1.0, {0, 1, 2, 3, 4}),
    (2, 0.9, {1, 3}),               # top-p sees the top-2 renormalised: 0.714, 0.286
    (2, 0.7, {1}),                  # 0.714 alone reaches 0.7 once renormalised
])
def test_filter_logits_keeps_exactly_the_top_k_and_nucleus(top_k, top_p, kept):
    logits = np.log(PROBS) + 3.0  # softmax is shift-invariant
    filtered = filter_logits(logits, top_k=top_k, top_p=top_p)
    kept_mask = np.isin(np.arange(len(PROBS)), sorted(kept))
    assert np.array_equal(filtered[kept_mask], logits[kept_mask])
    assert np.all(filtered[~kept_mask] == -np.inf)


def test_temperature_zero_is_argmax():
    rng = np.random.default_rng(0)
    for logits in rng.standard_normal((20, 30)):
        assert sample_token(logits, rng, temperature=0, top_k=3) == int(np.argmax(logits))


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_sampling_frequencies_follow_softmax_of_logits_over_temperature(temperature):
    logits = np.log(PROBS)
    rng = np.random.default_rng(0)
    draws = [sample_token(logits, rng, temperature=temperature) for _ in range(4000)]
    frequencies = np.bincount(draws, minlength=len(PROBS)) / len(draws)
    # 4000 draws: the standard error of each frequency is below 0.008
    np.testing.assert_allclose(frequencies, softmax_1d(logits / temperature), atol=0.03)


@pytest.mark.parametrize("arguments, message", [
    (dict(top_p=0.0), r"`top_p` must be in \(0, 1\], got 0.0"),
    (dict(top_p=1.5), r"`top_p` must be in \(0, 1\], got 1.5"),
    (dict(top_k=0), "`top_k` must be at least 1, got 0"),
    (dict(top_k=0, temperature=0), "`top_k` must be at least 1, got 0"),
    (dict(temperature=-1.0), r"`temperature` must be a number >= 0 \(0: greedy\), got -1.0"),
    (dict(temperature=float("nan")), "`temperature` must be a number >= 0 .*, got nan"),
    (dict(temperature=float("inf")), "`temperature` must be a number >= 0 .*, got inf"),
    (dict(max_new_tokens=-1), "`max_new_tokens` must be at least 0, got -1"),
    (dict(seed=-1), "`seed` must be at least 0, got -1"),
    (dict(prompt_ids=[]), "the prompt must hold at least one token id"),
])
def test_bad_arguments_are_refused_when_generation_is_asked_for(model, arguments, message):
    arguments = {"prompt_ids": [1, 2], "max_new_tokens": 5, **arguments}
    with pytest.raises(NpllmError, match=message):
        generate_tokens(model, **arguments)  # no token drawn yet: the call itself refuses


def test_a_greedy_batch_writes_what_greedy_writes_prompt_by_prompt():
    """Prompts of several lengths (and a stop token some reach): each row as generate_tokens writes it alone."""
    model = GPT(GPTConfig(vocab_size=64, context_length=CONTEXT, n_layer=2, n_head=2, n_embd=16, dtype="float64"),
                seed=3)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, 64, size=n).tolist() for n in (3, 5, 3, 5, 5, 14, 20)]
    alone = [generate(model, p[-CONTEXT:], 6, temperature=0) for p in prompts]
    stop = alone[1][2]  # a token one row writes: that row stops there
    alone = [generate(model, p[-CONTEXT:], min(6, CONTEXT - len(p[-CONTEXT:]) + 1), temperature=0, stop_token=stop)
             for p in prompts]
    assert decoding.greedy_batch(model, prompts, 6, stop_token=stop, batch_size=2) == alone
    assert alone[1][-1] == stop and len(alone[1]) <= 3  # stopped early
    assert len(alone[5]) == 3 and len(alone[6]) == 1  # at the context's end the batch stops, never slides
    with pytest.raises(NpllmError, match="every prompt must hold at least one token"):
        decoding.greedy_batch(model, [[1], []], 2)


def test_banned_tokens_are_never_written_greedy_sampled_or_batched(model):
    favourite = generate(model, [1, 2, 3], 1, temperature=0)[0]  # the argmax after this prompt
    banned = [favourite, *range(32, 64)]  # half the vocabulary, and the token greedy decoding would choose first
    for sampling in SAMPLINGS.values():
        assert not set(generate(model, [1, 2, 3], 20, banned_tokens=banned, **sampling)) & set(banned)
    for row in decoding.greedy_batch(model, [[1, 2, 3], [4, 5, 6]], 20, banned_tokens=banned):
        assert row and not set(row) & set(banned)
    assert sample_token(np.array([5.0, 1.0, 0.0]), np.random.default_rng(0), temperature=0, banned=[0]) == 1


def test_a_tokenizer_that_ran_out_of_merges_names_its_unused_ids_and_generation_skips_them(tmp_path):
    from npllm.tokenizer import BPETokenizer

    tokenizer = BPETokenizer.train("abab abab", vocab_size=300, special_tokens={"<|endoftext|>": 299})
    unused = tokenizer.unused_ids()
    assert tokenizer.vocab_size == 300 and unused and unused[-1] == 298  # merges ran out: a gap below the special
    assert not set(unused) & set(tokenizer.encode("abab abab ab a b"))
    gpt = GPT(GPTConfig(vocab_size=300, context_length=8, n_layer=1, n_head=1, n_embd=8), seed=0)  # untrained
    free = list(generate_tokens(gpt, [97, 98], 6, temperature=1.0, seed=0))
    assert set(free) & set(unused)  # what the ban is for: such an id has no text, so decoding it is refused
    written = list(generate_tokens(gpt, [97, 98], 6, temperature=1.0, seed=0, banned_tokens=unused))
    assert not set(written) & set(unused) and isinstance(tokenizer.decode(written), str)
