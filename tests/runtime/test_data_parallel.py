"""DataParallel: shards on threads give the gradient of the whole batch, reproducibly.

The weighted sum of the shards' gradients must equal the single-model gradient
(float64, to rounding), for even and uneven shards and for more workers than
examples; replicas must keep sharing the model's weights when the optimizer
gives them new arrays; dropout masks must differ between replicas yet repeat
run to run; BLAS and map_rows must go back to using every core afterwards,
even when a shard fails, and the failure must reach the caller.
"""

import threading
import time

import numpy as np
import pytest

import npllm.functional as F
from npllm.runtime.blas import blas_thread_control, blas_threads_limited
from npllm.models import GPT, GPTConfig
from npllm.runtime.data_parallel import DataParallel
from npllm.runtime.pool import CHUNK_ELEMENTS, map_rows, working_alone
from npllm.optim import AdamW
from npllm.training.objectives import NextToken

CONFIG = dict(vocab_size=31, context_length=8, n_layer=2, n_head=2, n_embd=16)
NEXT_TOKEN = NextToken()


def batch_of(inputs, targets):
    return {"input_ids": inputs, "targets": targets}


def model_and_batch(batch=5, dtype=np.float64, dropout=0.0, seed=0):
    model = GPT(GPTConfig(**CONFIG, dtype=dtype, dropout=dropout), seed=seed)
    tokens = np.random.default_rng(1).integers(0, CONFIG["vocab_size"], size=(batch, CONFIG["context_length"] + 1))
    return model, tokens[:, :-1], tokens[:, 1:]


def single_model_gradients(model, inputs, targets, scale=1.0):
    loss = F.cross_entropy(model(inputs), targets)
    (loss * scale).backward()
    grads = {name: param.grad for name, param in model.named_parameters()}
    for param in model.parameters():
        param.grad = None
    return loss.item(), grads


@pytest.mark.parametrize("batch, workers", [(4, 2), (5, 3), (5, 2), (1, 2), (3, 1)])
def test_sharded_gradient_equals_the_whole_batch_gradient(batch, workers):
    model, inputs, targets = model_and_batch(batch)
    expected_loss, expected = single_model_gradients(model, inputs, targets, scale=0.5)
    loss = DataParallel(model, workers).forward_backward(batch_of(inputs, targets), NEXT_TOKEN, scale=0.5)
    assert loss == pytest.approx(expected_loss, rel=1e-13)
    for name, param in model.named_parameters():
        np.testing.assert_allclose(param.grad, expected[name], rtol=1e-11, atol=1e-14, err_msg=name)


@pytest.mark.parametrize("workers", [2, 3])
def test_the_join_on_every_core_adds_the_same_bits_as_on_one(workers, monkeypatch):
    from npllm.runtime import data_parallel

    results = []
    for join_on_cores_from in (1 << 62, 0):  # one thread; every core (each parameter still replica by replica)
        monkeypatch.setattr(data_parallel, "JOIN_ON_CORES_FROM", join_on_cores_from)
        model, inputs, targets = model_and_batch(5)
        DataParallel(model, workers).forward_backward(batch_of(inputs, targets), NEXT_TOKEN)
        results.append({name: param.grad.copy() for name, param in model.named_parameters()})
    for name, grad in results[0].items():
        np.testing.assert_array_equal(results[1][name], grad, err_msg=name)


def test_gradients_accumulate_over_calls_like_backward():
    model, inputs, targets = model_and_batch(4)
    _, once = single_model_gradients(model, inputs, targets)
    parallel = DataParallel(model, 2)
    parallel.forward_backward(batch_of(inputs, targets), NEXT_TOKEN, scale=0.5)
    parallel.forward_backward(batch_of(inputs, targets), NEXT_TOKEN, scale=0.5)  # two half-weighted micro-batches = one whole
    for name, param in model.named_parameters():
        np.testing.assert_allclose(param.grad, once[name], rtol=1e-11, atol=1e-14, err_msg=name)


def test_replicas_follow_the_weights_through_optimizer_steps_and_loading():
    model, inputs, targets = model_and_batch(4)
    parallel = DataParallel(model, 2)
    optimizer = AdamW(model.parameters(), lr=1e-2)  # gives the parameters new arrays: views of its flat buffers
    twin, _, _ = model_and_batch(4)
    twin_optimizer = AdamW(twin.parameters(), lr=1e-2)
    for _ in range(3):
        for opt, step in ((optimizer, lambda: parallel.forward_backward(batch_of(inputs, targets), NEXT_TOKEN)),
                          (twin_optimizer, lambda: F.cross_entropy(twin(inputs), targets).backward())):
            opt.zero_grad()
            step()
            opt.step()
    for name, param in model.named_parameters():  # the shards sum in another order: equal to rounding
        np.testing.assert_allclose(param.data, dict(twin.named_parameters())[name].data, rtol=1e-9, atol=1e-12)
    model.load_state_dict(twin.state_dict())
    assert parallel.forward_backward(batch_of(inputs, targets), NEXT_TOKEN) == pytest.approx(F.cross_entropy(twin(inputs), targets).item(),
                                                                       rel=1e-12)
    for param, copy in zip(model.parameters(), parallel.replicas[1].parameters()):
        assert copy.data is param.data


def test_replicas_draw_their_own_dropout_masks_reproducibly():
    def losses():
        model, inputs, targets = model_and_batch(4, dropout=0.5)
        parallel = DataParallel(model, 2)
        return [parallel.forward_backward(batch_of(inputs, targets), NEXT_TOKEN) for _ in range(3)]

    first = losses()
    assert first == losses()
    model, inputs, targets = model_and_batch(4, dropout=0.5)
    replica = DataParallel(model, 2).replicas[1]
    same_rows = np.concatenate([inputs[:2], inputs[:2]])  # both shards see the same examples
    shard_logits = [m(same_rows[:2]).data for m in (model, replica)]
    assert not np.allclose(*shard_logits)  # different masks


@pytest.mark.skipif(blas_thread_control() is None, reason="the BLAS NumPy uses cannot be told its thread count")
def test_blas_thread_limit_is_restored_even_after_a_failing_shard():
    get, _ = blas_thread_control()
    before = get()
    with blas_threads_limited(1):
        assert get() == 1
    assert get() == before
    model, inputs, targets = model_and_batch(4)
    inputs = inputs.copy()
    inputs[3, 0] = 99  # not a token id of this vocabulary: the second shard fails
    with pytest.raises(ValueError, match="99"):
        DataParallel(model, 2).forward_backward(batch_of(inputs, targets), NEXT_TOKEN)
    assert get() == before
    inputs[0, 0] = 98  # now the first shard (the calling thread's) fails as well
    with pytest.raises(ValueError, match="98"):
        DataParallel(model, 2).forward_backward(batch_of(inputs, targets), NEXT_TOKEN)
    assert get() == before


@pytest.mark.parametrize("batch, workers", [(5, 2), (2, 3)])
def test_parallel_evaluation_equals_the_single_model_loss(batch, workers):
    model, inputs, targets = model_and_batch(batch, dropout=0.5)
    parallel = DataParallel(model, workers)
    model.eval()  # the replicas must follow: with their dropout still on, the losses would differ
    assert parallel.loss(batch_of(inputs, targets), NEXT_TOKEN) == pytest.approx(F.cross_entropy(model(inputs), targets).item(), rel=1e-13)
    assert all(param.grad is None for param in model.parameters())  # no graph, no gradient


def test_shards_run_with_single_threaded_blas_and_without_helpers():
    control = blas_thread_control()
    seen = []

    class Recording(NextToken):
        def loss(self, model, batch):
            seen.append((control[0]() if control else 1, working_alone_now()))
            return super().loss(model, batch)

    model, inputs, targets = model_and_batch(4)
    DataParallel(model, 2).forward_backward(batch_of(inputs, targets), Recording())
    assert seen == [(1, True), (1, True)]


def working_alone_now():
    """Whether map_rows in this thread would work alone (it records the thread that runs each piece)."""
    threads = set()
    map_rows(lambda piece: threads.add(threading.get_ident()), np.zeros(4 * CHUNK_ELEMENTS, dtype=np.float32))
    return threads == {threading.get_ident()}


def test_working_alone_keeps_map_rows_on_the_calling_thread():
    threads = set()

    def note_thread(piece):
        time.sleep(0.002)  # slow pieces: without working_alone, the helper thread surely takes some
        threads.add(threading.get_ident())

    with working_alone():
        map_rows(note_thread, np.zeros(8 * CHUNK_ELEMENTS, dtype=np.float32))
    assert threads == {threading.get_ident()}


def test_bad_settings_are_refused():
    model, inputs, targets = model_and_batch(4)
    with pytest.raises(ValueError, match="workers must be at least 1"):
        DataParallel(model, 0)
    with pytest.raises(ValueError, match=r"the same number of examples, got \{'input_ids': 4, 'targets': 3\}"):
        DataParallel(model, 2).forward_backward(batch_of(inputs, targets[:3]), NEXT_TOKEN)
    with pytest.raises(ValueError, match="the batch is empty"):
        DataParallel(model, 2).forward_backward(batch_of(inputs[:0], targets[:0]), NEXT_TOKEN)


@pytest.mark.parametrize("ignored_rows", [[0], [0, 1], [0, 1, 2, 3]], ids=["uneven", "a whole shard", "everything"])
def test_ignored_targets_weigh_nothing_as_in_the_loss(ignored_rows):
    model, inputs, targets = model_and_batch(4)
    targets = targets.copy()
    targets[ignored_rows, 2:] = F.IGNORE_INDEX  # padding at the end of some rows
    expected_loss, expected = single_model_gradients(model, inputs, targets)
    loss = DataParallel(model, 2).forward_backward(batch_of(inputs, targets), NEXT_TOKEN)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-13)
    for name, param in model.named_parameters():
        np.testing.assert_allclose(param.grad, expected[name], rtol=1e-11, atol=1e-14, err_msg=name)


def test_every_target_ignored_gives_what_the_model_gives():
    model, inputs, targets = model_and_batch(4)
    ignored = np.full_like(targets, F.IGNORE_INDEX)
    with np.errstate(all="ignore"):
        expected = F.cross_entropy(model(inputs), ignored).item()
        got = DataParallel(model, 2).loss(batch_of(inputs, ignored), NEXT_TOKEN)
    np.testing.assert_equal(got, expected)


def test_another_ignore_index_is_told_to_both_the_loss_and_the_weights():
    model, inputs, targets = model_and_batch(4)
    targets = targets.copy()
    targets[0, 1:] = -1
    expected = F.cross_entropy(model(inputs), targets, ignore_index=-1).item()
    assert DataParallel(model, 2).loss(batch_of(inputs, targets), NextToken(ignore_index=-1)) == pytest.approx(
        expected, rel=1e-13)


def test_parameters_frozen_after_the_replicas_were_made_stay_frozen_in_every_shard():
    model, inputs, targets = model_and_batch(4)
    parallel = DataParallel(model, 2)
    model.h[1].requires_grad_(False)
    parallel.forward_backward(batch_of(inputs, targets), NEXT_TOKEN)
    for name, param in model.named_parameters():
        assert (param.grad is None) == name.startswith("h.1."), name
    assert all(not twin.requires_grad for name, twin in parallel.replicas[1].named_parameters() if name.startswith("h.1."))


def test_validation_records_no_graph_on_any_shards_thread():
    recorded = []

    class Recording(NextToken):
        def loss(self, model, batch):
            loss = super().loss(model, batch)
            recorded.append(loss.requires_grad)
            return loss

    model, inputs, targets = model_and_batch(4)
    DataParallel(model, 2).loss(batch_of(inputs, targets), Recording())
    assert recorded == [False, False]
