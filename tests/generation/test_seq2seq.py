"""Encoder–decoder decoding: cached == uncached for every strategy, beam 1 == greedy, one batch, the rules; and
beam search, greedy and the returned hypotheses equal transformers' ``generate`` on a tiny random BART."""

import numpy as np
import pytest

import npllm
import npllm.functional as F
from npllm import no_grad
from npllm.errors import SettingError
from npllm.generation.seq2seq import beam_search, generate, pad_sources, repeated_ngram_ends, sample
from npllm.models import BARTConfig, BARTForConditionalGeneration

# a tiny random BART whose outputs vary and end at various lengths: wide initial weights (a random post-LN
# stack at std 0.02 writes one token forever), </s> a little favoured, and <s> (not </s>) as the start token
SHAPE = dict(vocab_size=40, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
             decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=24, max_position_embeddings=32,
             dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, init_std=0.3, decoder_start_token_id=0)
EOS_BIAS = 1.5


def tiny_model(dtype="float64", **overrides):
    model = BARTForConditionalGeneration(BARTConfig(**{**SHAPE, **overrides}, dtype=dtype), seed=1)
    model.final_logits_bias.data[0, 2] += EOS_BIAS
    return model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def sources(B=4, S=6, seed=0):
    """Source ids (B, S) with some rows padded (id 1) behind their mask."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 40, size=(B, S))
    mask = np.ones_like(ids)
    mask[1, 4:], mask[3, 2:] = 0, 0
    ids[mask == 0] = 1
    return ids, mask


STRATEGIES = {
    "greedy": dict(),
    "greedy, no repeated bigram": dict(no_repeat_ngram_size=2),
    "sampling": dict(temperature=1.0, seed=5),
    "sampling top-k top-p": dict(temperature=0.7, top_k=5, top_p=0.9, seed=6, min_new_tokens=3),
    "beam 3": dict(num_beams=3),
    "beam 4, length penalty 2, no repeated trigram": dict(num_beams=4, length_penalty=2.0, no_repeat_ngram_size=3),
    "beam 3, no early stopping, penalty 0.5": dict(num_beams=3, length_penalty=0.5, early_stopping=False),
    "beam 2, early stopping never": dict(num_beams=2, length_penalty=1.5, early_stopping="never"),
}


@pytest.mark.parametrize("settings", STRATEGIES.values(), ids=STRATEGIES.keys())
def test_cached_and_uncached_decoding_write_the_same_tokens(model, settings):
    ids, mask = sources()
    cached = generate(model, ids, mask, max_new_tokens=12, **settings)
    uncached = generate(model, ids, mask, max_new_tokens=12, use_cache=False, **settings)
    assert cached == uncached


def test_the_tiny_models_outputs_vary_in_length_so_the_comparisons_mean_something(model):
    for settings in (dict(), dict(num_beams=3)):
        assert len({len(tokens) for tokens in generate(model, *sources(), 12, **settings)}) >= 3


def test_float32_cached_and_uncached_agree_too():
    model = tiny_model("float32")
    ids, mask = sources()
    for settings in (dict(), dict(num_beams=3)):
        assert generate(model, ids, mask, 12, **settings) == generate(model, ids, mask, 12, use_cache=False, **settings)


@pytest.mark.parametrize("no_repeat_ngram_size", [0, 2])
def test_beam_width_1_is_greedy(model, no_repeat_ngram_size):
    ids, mask = sources()
    beams = beam_search(model, ids, mask, 12, num_beams=1, no_repeat_ngram_size=no_repeat_ngram_size)
    greedy = sample(model, ids, mask, 12, no_repeat_ngram_size=no_repeat_ngram_size)
    assert [hypotheses[0].tokens for hypotheses in beams] == greedy


def test_a_batch_decodes_as_one_batch_and_each_source_as_if_alone(model, monkeypatch):
    ids, mask = sources()
    calls, context_rows = [], []
    decode, context_kv = model.decode, model.model.decoder.context_kv
    monkeypatch.setattr(model, "decode", lambda tokens, *rest, **options: calls.append(tokens.shape) or
                        decode(tokens, *rest, **options))
    monkeypatch.setattr(model.model.decoder, "context_kv", lambda memory: context_rows.append(memory.shape[0]) or
                        context_kv(memory))
    together = beam_search(model, ids, mask, 12, num_beams=3)
    assert context_rows == [4]  # the cross-attention's keys and values: once, one row per source
    assert all(shape == (4 * 3, 1) for shape in calls[1:]) and calls[0] == (12, 1)  # one token per beam and step
    monkeypatch.undo()
    for row in range(4):
        length = mask[row].sum()
        alone = beam_search(model, ids[row:row + 1, :length], None, 12, num_beams=3)
        assert [h.tokens for h in alone[0]] == [h.tokens for h in together[row]]
        np.testing.assert_allclose([h.score for h in alone[0]], [h.score for h in together[row]], rtol=1e-10)


def test_hypotheses_are_sorted_and_scored_by_their_length_penalised_log_probability():
    model = tiny_model(forced_eos_token_id=None)  # (a forced </s> would be scored 0, not its probability)
    ids, mask = sources()
    for length_penalty in (1.0, 0.0, 2.0):
        best = beam_search(model, ids, mask, 12, num_beams=4, length_penalty=length_penalty, num_return_sequences=3)
        for row, hypotheses in enumerate(best):
            scores = [h.score for h in hypotheses]
            assert scores == sorted(scores, reverse=True) and len(hypotheses) == 3
            for hypothesis in hypotheses:
                tokens = hypothesis.tokens
                decoder_input = np.array([[0, *tokens[:-1]]])
                with no_grad():
                    logits = model(ids[row:row + 1], decoder_input, mask[row:row + 1]).data[0].astype(np.float64)
                log_probs = F.log_softmax(logits, axis=-1).data[np.arange(len(tokens)), tokens]
                assert hypothesis.score == pytest.approx(log_probs.sum() / len(tokens) ** length_penalty, rel=1e-9)


def test_the_rules_hold_in_every_output(model):
    ids, mask = sources()
    for settings in (dict(num_beams=3), dict(), dict(temperature=1.0, seed=2)):
        outputs = generate(model, ids, mask, 10, no_repeat_ngram_size=2, min_new_tokens=4, **settings)
        for tokens in outputs:
            sequence = [0, *tokens]
            bigrams = list(zip(sequence, sequence[1:]))
            assert len(bigrams) == len(set(bigrams))
            assert len(tokens) >= 4 and (tokens[-1] == 2 or len(tokens) == 10)
            assert 2 not in tokens[:-1]
    forced = tiny_model(forced_bos_token_id=7)
    assert all(tokens[0] == 7 for tokens in generate(forced, ids, mask, 6, num_beams=2))
    reaching = generate(tiny_model(), ids, mask, 3)  # forced_eos_token_id = 2: the last token at the limit
    assert all(tokens[-1] == 2 for tokens in reaching)


def test_repeated_ngram_ends():
    rows = np.array([[0, 5, 6, 5, 6, 5], [0, 1, 2, 3, 4, 5]])
    assert repeated_ngram_ends(rows, 2) == [[6, 6], []]
    assert repeated_ngram_ends(rows, 3) == [[6], []]  # after (6, 5): (6, 5, 6) is there
    assert repeated_ngram_ends(rows[:, :2], 3) == [[], []]


def test_sampling_is_seeded(model):
    ids, mask = sources()
    first = sample(model, ids, mask, 8, temperature=1.0, seed=4)
    assert sample(model, ids, mask, 8, temperature=1.0, seed=4) == first
    assert any(sample(model, ids, mask, 8, temperature=1.0, seed=s) != first for s in range(5, 8))


def test_decoding_leaves_the_model_in_its_mode(model):
    model.train()
    generate(model, *sources(), 3)
    assert model.training
    model.eval()


@pytest.mark.parametrize("settings, message", [
    (dict(num_beams=0), "`num_beams` must be at least 1, got 0"),
    (dict(num_beams=-2), "`num_beams` must be at least 1"),
    (dict(num_beams=3, temperature=0.8), "beam search keeps the most probable beams and samples nothing"),
    (dict(max_new_tokens=32), "`max_new_tokens` must be between 1 and 31"),
    (dict(max_new_tokens=0), "`max_new_tokens` must be between 1"),
    (dict(min_new_tokens=9), "`min_new_tokens` must be between 0 and `max_new_tokens` (8)"),
    (dict(no_repeat_ngram_size=-1), "`no_repeat_ngram_size` must be at least 0"),
    (dict(temperature=-1.0), "`temperature` must be a number >= 0"),
    (dict(top_p=0.0), "`top_p` must be in (0, 1]"),
    (dict(num_beams=2, length_penalty=float("nan")), "`length_penalty` must be a finite number"),
    (dict(num_beams=2, early_stopping="sometimes"), "`early_stopping` must be True, False or 'never'"),
])
def test_bad_settings_are_refused_before_any_work(model, settings, message, monkeypatch):
    monkeypatch.setattr(model, "encode", lambda *a, **k: pytest.fail("worked before refusing"))
    settings = {"max_new_tokens": 8, **settings}
    with pytest.raises(SettingError) as error:
        generate(model, *sources(), **settings)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_num_return_sequences_is_checked(model):
    with pytest.raises(SettingError, match=r"`num_return_sequences` must be between 1 and `num_beams` \(2\)"):
        beam_search(model, *sources(), 4, num_beams=2, num_return_sequences=3)


def test_pad_sources():
    ids, mask = pad_sources([[5, 6, 7], [8]], pad_token_id=1)
    np.testing.assert_array_equal(ids, [[5, 6, 7], [8, 1, 1]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 0, 0]])
    with pytest.raises(SettingError, match="at least one token"):
        pad_sources([[5], []], 1)


# --- parity with transformers' generate -----------------------------------------------------
@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The same tiny random BART in transformers and, through its saved folder, in npllm."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    model = tiny_model()
    folder = tmp_path_factory.mktemp("tiny-bart")
    npllm.save_pretrained(model, None, folder)
    reference = transformers.BartForConditionalGeneration.from_pretrained(folder, dtype=torch.float64).eval()
    return torch, reference, npllm.load_pretrained(folder)[0]


def their_tokens(torch, reference, ids, mask, **settings):
    """transformers' outputs as our lists: the start token dropped, the padding after </s> too."""
    with torch.no_grad():
        out = reference.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), do_sample=False, **settings)
    rows = []
    for row in out.tolist():
        tokens = row[1:]
        rows.append(tokens[:tokens.index(2) + 1] if 2 in tokens else tokens)
    return rows


BEAM_SETTINGS = [
    dict(num_beams=3, length_penalty=1.0, early_stopping=True),
    dict(num_beams=4, length_penalty=2.0, early_stopping=True, no_repeat_ngram_size=2, min_new_tokens=4),
    dict(num_beams=3, length_penalty=-1.0, early_stopping=False, no_repeat_ngram_size=3),
    dict(num_beams=2, length_penalty=1.5, early_stopping="never"),
]


@pytest.mark.parity
@pytest.mark.parametrize("settings", BEAM_SETTINGS, ids=lambda s: ", ".join(f"{k}={v}" for k, v in s.items()))
def test_beam_search_equals_transformers_generate(both, settings):
    torch, reference, model = both
    ids, mask = sources(B=5, seed=1)
    ours = beam_search(model, ids, mask, max_new_tokens=14, num_return_sequences=2, **settings)
    hf = dict(settings)
    if "min_new_tokens" in hf:
        hf["min_length"] = hf.pop("min_new_tokens") + 1  # transformers counts the start token
    with torch.no_grad():
        out = reference.generate(torch.tensor(ids), attention_mask=torch.tensor(mask), max_length=15,
                                 do_sample=False, num_return_sequences=2, output_scores=True,
                                 return_dict_in_generate=True, **hf)
    theirs = out.sequences.tolist()
    for row, hypotheses in enumerate(ours):
        for k, hypothesis in enumerate(hypotheses):
            tokens = theirs[2 * row + k][1:]
            assert hypothesis.tokens == tokens[:len(hypothesis.tokens)]
            assert all(t == 1 for t in tokens[len(hypothesis.tokens):])  # padding after the end
            # transformers keeps its scores in float32
            assert hypothesis.score == pytest.approx(out.sequences_scores[2 * row + k].item(), rel=1e-5)


@pytest.mark.parity
def test_greedy_equals_transformers_generate(both):
    torch, reference, model = both
    ids, mask = sources(B=5, seed=2)
    assert sample(model, ids, mask, 14, no_repeat_ngram_size=2) == their_tokens(
        torch, reference, ids, mask, max_length=15, num_beams=1, no_repeat_ngram_size=2)
