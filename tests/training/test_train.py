"""The training loop keeps its promises.

A run stopped anywhere (a planned stop, Ctrl-C, a crash) and resumed logs the very
same losses, bit for bit, as a run that never stopped, dropout, gradient
accumulation and data-parallel workers included; a NaN stops the run with a clear message and leaves the last
checkpoint byte-identical; metrics.jsonl holds every step once; damaged or mismatched
checkpoints and an occupied run folder are refused in one line; token files are
cached per tokenizer; and a tiny model really learns (beats the unigram baseline).
"""

import json
import signal
from contextlib import nullcontext
from pathlib import Path

import pytest

import npllm.data.tokens as tokens_module
import npllm.training.loop as loop_module
import npllm.training.pretrain as train_module
from npllm.errors import SettingError
from npllm.io.safetensors import CheckpointError
from npllm.io.checksums import file_sha256
from npllm.runtime.pool import cores
from npllm.training.pretrain import METRICS_FILE, TrainConfig, TrainingError, resume, train, unigram_loss, warmup_cosine

TINY = dict(vocab_size=300, n_layer=1, n_head=2, n_embd=16, context_length=16, batch_size=4, eval_windows=4,
            warmup_steps=2, max_steps=8, decay_steps=8, eval_interval=4)
REGULARISED = dict(dropout=0.1, grad_accum=2)  # dropout draws random masks: their generators must resume too


def silent(*_):
    pass


@pytest.fixture
def tiny_config(tiny_corpus, tmp_path):
    """Build a TrainConfig for the tiny corpus in its own run folder ``tmp_path / name``."""
    def make(name="run", **changes):
        return TrainConfig(**{**TINY, "data": str(tiny_corpus), "out_dir": str(tmp_path / name), **changes})

    return make


def quiet_train(config):
    return train(config, progress=False, log=silent)


def quiet_resume(out_dir, log=silent, **changes):
    return resume(out_dir, changes, progress=False, log=log)


def reject_non_json(constant):
    raise ValueError(f"metrics.jsonl holds {constant}, which is not JSON")


def read_metrics(out_dir) -> list[dict]:
    lines = (Path(out_dir) / METRICS_FILE).read_text(encoding="utf-8").splitlines()
    return [json.loads(line, parse_constant=reject_non_json) for line in lines]


def losses(out_dir) -> list[tuple]:
    """(step, train_loss, val_loss or None) per logged step: everything but the timing."""
    return [(record["step"], record["train_loss"], record.get("val_loss")) for record in read_metrics(out_dir)]


def checkpoint_bytes(out_dir) -> dict[str, bytes]:
    """Every file of every checkpoint folder in the run, by relative path."""
    return {str(path.relative_to(out_dir)): path.read_bytes()
            for path in sorted(Path(out_dir).glob("checkpoint*/*"))}


def trained_state(out_dir) -> dict[str, bytes]:
    """The weights and optimizer files (state.json differs between runs: it names the run folder)."""
    files = checkpoint_bytes(out_dir)
    return {name: files[f"checkpoint/{name}"] for name in ("model.safetensors", "optimizer.safetensors")}


def rewrite_state(state_path, state):
    """Replace state.json, and its checksum in checksums.json, as an earlier npllm might have written it."""
    state_path.write_text(json.dumps(state))
    checksums_path = state_path.parent / "checksums.json"
    checksums = json.loads(checksums_path.read_text())
    checksums["state.json"] = file_sha256(state_path)
    checksums_path.write_text(json.dumps(checksums))


def fault_once_at_step(monkeypatch, step, fault):
    """Make ``fault()`` happen once, at the start of training step ``step`` (1-based)."""
    original, fired = loop_module.train_step, []

    def faulty_step(run, lr, stop):
        if run.step + 1 == step and not fired:
            fired.append(step)
            fault()
        return original(run, lr, stop)

    monkeypatch.setattr(loop_module, "train_step", faulty_step)


def ctrl_c():
    signal.raise_signal(signal.SIGINT)


def crash():
    raise RuntimeError("simulated crash")


@pytest.mark.parametrize("settings", [{}, REGULARISED, {**REGULARISED, "workers": 3}],
                         ids=["plain", "dropout+grad_accum", "dropout+grad_accum+3 workers"])
def test_resume_after_a_planned_stop_is_bit_identical(tiny_config, settings):
    uninterrupted = quiet_train(tiny_config("whole", **settings)).config.out_dir
    halves = tiny_config("halves", **settings, max_steps=4)
    quiet_train(halves)
    quiet_resume(halves.out_dir, max_steps=8)
    assert losses(halves.out_dir) == losses(uninterrupted)
    assert trained_state(halves.out_dir) == trained_state(uninterrupted)


def test_the_worker_count_is_recorded_and_kept_on_resume(tiny_config):
    """The shards decide the gradient's sums: a resumed run keeps its count unless told otherwise."""
    first = quiet_train(tiny_config("first", **REGULARISED, max_steps=4))  # workers: default, one per core
    state_path = Path(first.config.out_dir) / "checkpoint" / "state.json"
    state = json.loads(state_path.read_text())
    assert state["config"]["workers"] == cores()
    state["config"]["workers"] = 3  # as if this run had started on a 3-core machine
    rewrite_state(state_path, state)
    resumed = quiet_resume(first.config.out_dir, max_steps=8)
    assert resumed.config.workers == resumed.parallel.workers == 3  # (bit-identity with 3: see the test above)
    assert quiet_resume(first.config.out_dir, max_steps=9, workers=1).parallel.workers == 1  # told otherwise


def test_a_checkpoint_from_before_workers_resumes_on_one(tiny_config):
    first = quiet_train(tiny_config("first", max_steps=4, workers=1))
    state_path = Path(first.config.out_dir) / "checkpoint" / "state.json"
    state = json.loads(state_path.read_text())
    del state["config"]["workers"]
    rewrite_state(state_path, state)
    assert quiet_resume(first.config.out_dir, max_steps=5).parallel.workers == 1


@pytest.mark.parametrize("fault, outcome, saved_step", [
    (ctrl_c, nullcontext(), 6),                                       # finishes step 6, saves it, returns
    (crash, pytest.raises(RuntimeError, match="simulated"), 4),       # the checkpoint of step 4 survives
], ids=["ctrl-c", "crash"])
def test_interrupted_run_resumes_identically_without_duplicate_metrics(tiny_config, monkeypatch, fault, outcome,
                                                                       saved_step):
    uninterrupted = quiet_train(tiny_config("whole", **REGULARISED)).config.out_dir
    config = tiny_config("interrupted", **REGULARISED)
    handler_before = signal.getsignal(signal.SIGINT)
    fault_once_at_step(monkeypatch, 6, fault)
    with outcome:
        quiet_train(config)
    assert signal.getsignal(signal.SIGINT) is handler_before
    messages = []
    quiet_resume(config.out_dir, log=messages.append)
    assert f"resumed {config.out_dir} at step {saved_step}" in messages
    assert losses(config.out_dir) == losses(uninterrupted)  # steps 1..8 once each, same values


def test_ctrl_c_reports_where_it_saved(tiny_config, monkeypatch):
    config = tiny_config(**REGULARISED)
    fault_once_at_step(monkeypatch, 3, ctrl_c)
    messages = []
    run = train(config, progress=False, log=messages.append)
    assert run.step == 3
    assert messages[-1] == f"interrupted: saved step 3 in {config.out_dir}; continue it with `resume`"
    assert json.loads((Path(config.out_dir) / "checkpoint" / "state.json").read_text())["step"] == 3


def test_second_ctrl_c_aborts_at_once_and_restores_the_handler(tiny_config, monkeypatch):
    handler_before = signal.getsignal(signal.SIGINT)
    fault_once_at_step(monkeypatch, 3, lambda: (ctrl_c(), ctrl_c()))
    with pytest.raises(KeyboardInterrupt):
        quiet_train(tiny_config())
    assert signal.getsignal(signal.SIGINT) is handler_before


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow in matmul is the point of this test
@pytest.mark.parametrize("eval_interval, what", [(100, "loss"), (1, "validation loss")])
def test_nan_stops_the_run_and_leaves_the_last_checkpoint_intact(tiny_config, eval_interval, what):
    config = tiny_config(max_steps=4)
    quiet_train(config)
    before = checkpoint_bytes(config.out_dir)
    promised = (rf"^{what} became (nan|inf|-inf) at step \d+; stopped without saving,"
                rf" so the last good checkpoint in {config.out_dir} is intact \(try a lower `lr`\)$")
    with pytest.raises(TrainingError, match=promised):
        quiet_resume(config.out_dir, max_steps=8, lr=1e30, eval_interval=eval_interval)
    assert checkpoint_bytes(config.out_dir) == before
    records = read_metrics(config.out_dir)  # strict JSON: a NaN written to the log would raise here
    assert [record["step"] for record in records] == list(range(1, len(records) + 1))


def test_metrics_log_every_step_and_validation_at_evaluations(tiny_config):
    config = tiny_config(max_steps=6, eval_interval=3)
    quiet_train(config)
    first_leg = read_metrics(config.out_dir)
    quiet_resume(config.out_dir, max_steps=8)
    records = read_metrics(config.out_dir)
    assert records[:6] == first_leg  # appended, not rewritten
    assert [record["step"] for record in records] == list(range(1, 9))
    for record in records:
        evaluated = record["step"] in (3, 6, 8)  # every eval_interval, and the last step
        assert set(record) == ({"step", "train_loss", "lr", "grad_norm", "tokens", "tokens_per_s"}
                               | ({"val_loss"} if evaluated else set()))
        assert record["train_loss"] > 0 and record["lr"] > 0 and record["tokens_per_s"] > 0 and record["grad_norm"] > 0
        assert record["tokens"] == config.batch_size * config.context_length * config.grad_accum


def test_resume_drops_a_metrics_line_cut_short_by_a_kill(tiny_config):
    config = tiny_config(max_steps=6, eval_interval=3)
    quiet_train(config)
    with open(Path(config.out_dir) / METRICS_FILE, "a", encoding="utf-8") as file:
        file.write('{"step": 7, "train_lo')  # the process died in the middle of this write
    quiet_resume(config.out_dir, max_steps=8)
    assert [record["step"] for record in read_metrics(config.out_dir)] == list(range(1, 9))


CORRUPTIONS = {
    "truncated weights": lambda folder: (folder / "model.safetensors").write_bytes(
        (folder / "model.safetensors").read_bytes()[:100]),
    "optimizer state of zeros": lambda folder: (folder / "optimizer.safetensors").write_bytes(bytes(16)),
    "state.json not JSON": lambda folder: (folder / "state.json").write_text("{\"step\": "),
    "state.json without training state": lambda folder: (folder / "state.json").write_text("{}"),
    "tokenizer missing": lambda folder: (folder / "tokenizer.txt").unlink(),
}


@pytest.mark.parametrize("damage", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_corrupt_checkpoint_is_one_line_checkpoint_error(tiny_config, damage):
    config = tiny_config(max_steps=2)
    quiet_train(config)
    folder = Path(config.out_dir) / "checkpoint"
    damage(folder)
    with pytest.raises(CheckpointError) as error:
        quiet_resume(config.out_dir)
    assert str(folder) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("key, value", [("n_embd", 32), ("context_length", 8), ("weight_decay", 0.5),
                                        ("validation_fraction", 0.2)])
def test_resume_refuses_a_conflicting_setting_naming_it(tiny_config, key, value):
    config = tiny_config(max_steps=2)
    quiet_train(config)
    with pytest.raises(CheckpointError, match=f"another configuration: {key}={getattr(config, key)}"):
        quiet_resume(config.out_dir, **{key: value})


def test_resume_refuses_a_changed_corpus(tiny_config, tiny_corpus):
    config = tiny_config(max_steps=2)
    quiet_train(config)
    tiny_corpus.write_text(tiny_corpus.read_text(encoding="utf-8") + "one more line.\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match="is not the text this run was trained on"):
        quiet_resume(config.out_dir, max_steps=4)


@pytest.mark.parametrize("crashed_mid_save", [False, True], ids=["checkpoint", "only checkpoint.old"])
def test_new_run_over_an_existing_one_is_refused_and_changes_nothing(tiny_config, crashed_mid_save):
    config = tiny_config(max_steps=2)
    quiet_train(config)
    if crashed_mid_save:  # the first of save_checkpoint's two renames happened, the second did not
        (Path(config.out_dir) / "checkpoint").rename(Path(config.out_dir) / "checkpoint.old")
    before = checkpoint_bytes(config.out_dir), read_metrics(config.out_dir)
    with pytest.raises(TrainingError, match="already holds a run: continue it with `resume`"):
        quiet_train(config)
    assert (checkpoint_bytes(config.out_dir), read_metrics(config.out_dir)) == before


def test_too_few_validation_tokens_are_refused_before_training(tiny_config):
    config = tiny_config(validation_fraction=0.001)  # a handful of tokens, fewer than one window of 17
    with pytest.raises(ValueError, match="the validation tokens .* are too few for one window"):
        quiet_train(config)
    assert not Path(config.out_dir).exists()  # refused before a single step, not at the first evaluation


def test_token_cache_is_reused_for_the_same_tokenizer_and_rebuilt_for_another(tiny_config, isolated_cache,
                                                                               monkeypatch):
    encoded_with = []  # the vocabulary size of each tokenizer that actually encoded the corpus
    original = tokens_module.encode_to_array

    def counting_encode(text, tokenizer):
        encoded_with.append(tokenizer.vocab_size)
        return original(text, tokenizer)

    monkeypatch.setattr(tokens_module, "encode_to_array", counting_encode)
    quiet_train(tiny_config("first", max_steps=1))
    quiet_train(tiny_config("same tokenizer", max_steps=1))
    quiet_resume(tiny_config("first").out_dir, max_steps=2)
    quiet_train(tiny_config("other tokenizer", max_steps=1, vocab_size=280))
    assert encoded_with == [300, 280]
    assert len(list((isolated_cache / "tokens").glob("*.npy"))) == 2


def test_validation_loss_falls_below_the_unigram_baseline(tiny_config):
    run = quiet_train(tiny_config(max_steps=100, decay_steps=None, warmup_steps=10, eval_interval=100, lr=1e-2))
    baseline = unigram_loss(run.batches.tokens, run.validation_tokens, run.tokenizer.vocab_size)
    assert read_metrics(run.config.out_dir)[-1]["val_loss"] < baseline


def test_resume_from_a_damaged_checkpoint_falls_back_one_step_and_says_so(tiny_config):
    config = tiny_config(max_steps=8, eval_interval=2)
    quiet_train(tiny_config(max_steps=4, eval_interval=2))  # checkpoints at steps 2 (checkpoint.old) and 4
    newest = Path(config.out_dir) / "checkpoint" / "model.safetensors"
    newest.write_bytes(newest.read_bytes()[:-8] + b"\0" * 8)
    messages = []
    run = quiet_resume(config.out_dir, log=messages.append, max_steps=8)
    assert messages[0].startswith(f"{newest}: damaged") and messages[0].endswith("(step 2)")
    assert f"resumed {config.out_dir} at step 2" in messages
    assert run.step == 8 and [record["step"] for record in read_metrics(config.out_dir)] == list(range(1, 9))


def test_an_out_dir_where_nothing_can_be_written_is_refused_before_the_corpus_is_read(tiny_config, monkeypatch):
    def read_only(*args, **kwargs):
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(train_module.tempfile, "TemporaryFile", read_only)
    monkeypatch.setattr(train_module, "load_corpus", lambda data: pytest.fail("the corpus was read"))
    config = tiny_config("new/run")
    with pytest.raises(SettingError, match=r"^`out_dir` .*new/run: cannot write in .* \(Read-only file system\)$"):
        quiet_train(config)
    assert not Path(config.out_dir).parent.exists()  # the check left nothing behind


def test_a_warm_up_longer_than_the_schedule_is_cut_with_a_warning(tiny_config):
    config = tiny_config(max_steps=4, warmup_steps=10)
    with pytest.warns(UserWarning, match="`warmup_steps` 10 is more than the 4 steps the schedule lasts"):
        schedule = warmup_cosine(config, config.max_steps)
    assert schedule(3) == pytest.approx(config.lr)  # the peak, reached at the last step of the cut warm-up


def test_model_kind_reads_a_folder_from_its_json_alone(tmp_path):
    from npllm.training.pretrain import model_kind

    for model_type, kind in (("bert", "bert"), ("bart", "bart"), ("gpt2", "gpt")):
        (tmp_path / model_type).mkdir()
        (tmp_path / model_type / "config.json").write_text(json.dumps({"model_type": model_type}))
        assert model_kind(tmp_path / model_type) == kind
    checkpoint = tmp_path / "run" / "checkpoint"
    checkpoint.mkdir(parents=True)
    for model_config, kind in (({"n_inner": 64}, "bert"), ({"encoder_layers": 1}, "bart"), ({"n_embd": 16}, "gpt")):
        (checkpoint / "state.json").write_text(json.dumps({"model_config": model_config}))
        assert model_kind(tmp_path / "run") == kind and model_kind(checkpoint) == kind
    (checkpoint / "state.json").write_text("not JSON")
    assert model_kind(tmp_path / "run") == "gpt" and model_kind(tmp_path / "nowhere") == "gpt"  # the loader says why
