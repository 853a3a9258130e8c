"""Training over MPI: ``mpiexec -n 2 npllm train`` against one process, bit for bit where it must be, and its failures.

Every run here is a real MPI job: ``mpiexec`` (MPICH's, from the ``mpi``
extra) starts the command line on two ranks in subprocesses.  Without
mpi4py these tests skip, saying so; the refusal that a user without it sees
is tested in-process and never skips.
"""

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from npllm.cli import main
from npllm.io.safetensors import load_safetensors
from npllm.runtime import mpi

MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")
needs_mpi = pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None or MPIEXEC is None,
                               reason="needs mpi4py and mpiexec: pip install 'npllm[mpi]'")
pytestmark = [pytest.mark.slow]

TINY = ["--vocab-size", "300", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--context-length", "16",
        "--batch-size", "4", "--grad-accum", "2", "--eval-windows", "6", "--warmup-steps", "2", "--eval-interval", "3",
        "--workers", "1", "--quiet"]
REGULARISED = ["--dropout", "0.1"]  # per-rank dropout streams: saved and restored for every rank
TOLERANCE = dict(rtol=2e-5, atol=1e-6)  # float32: the ranks' gradients are summed in another order than one process's


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tiny_text):
    folder = tmp_path_factory.mktemp("mpi")
    (folder / "tiny.txt").write_text(tiny_text, encoding="utf-8")
    return folder


def environment(corpus) -> dict:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "NPLLM_CACHE": str(corpus / "cache"),
            "HF_HUB_OFFLINE": "1"}


def launch(corpus, ranks, *arguments, wait=True):
    """``mpiexec -n ranks python -m npllm.cli arguments...`` (arguments may hold ':'-separated per-rank parts)."""
    command = [MPIEXEC, "-n", str(ranks), sys.executable, "-m", "npllm.cli", *arguments]
    process = subprocess.Popen(command, cwd=corpus, env=environment(corpus), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    if not wait:
        return process
    stdout, stderr = process.communicate(timeout=180)
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def train(corpus, ranks, out, steps=6, *extra, resume=False):
    arguments = ["train", "--data", "tiny.txt", *TINY, "--max-steps", str(steps), "--out", out, *extra]
    arguments += ["--resume"] if resume else []
    done = launch(corpus, ranks, *arguments)
    assert done.returncode == 0, done.stderr
    return corpus / out


def train_alone(corpus, out, monkeypatch, steps=6, *extra):
    """The same command in this process: one rank."""
    monkeypatch.chdir(corpus)
    monkeypatch.setenv("NPLLM_CACHE", str(corpus / "cache"))
    assert main(["train", "--data", "tiny.txt", *TINY, "--max-steps", str(steps), "--out", out, *extra]) == 0
    return corpus / out


def losses(run, key="train_loss"):
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [record[key] for record in records if key in record]


def weights(run):
    return load_safetensors(run / "checkpoint" / "model.safetensors")


def checkpoint_bytes(run):
    folder = run / "checkpoint"
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.suffix == ".safetensors"}


@needs_mpi
def test_two_ranks_follow_one_process_on_the_same_global_batch(corpus, monkeypatch):
    alone = train_alone(corpus, "alone", monkeypatch)
    pair = train(corpus, 2, "pair")
    assert len(losses(pair)) == 6  # one writer: each step recorded once
    np.testing.assert_allclose(losses(pair), losses(alone), **TOLERANCE)
    np.testing.assert_allclose(losses(pair, "val_loss"), losses(alone, "val_loss"), **TOLERANCE)
    for name, value in weights(alone).items():
        np.testing.assert_allclose(weights(pair)[name], value, **TOLERANCE, err_msg=name)


@needs_mpi
def test_same_ranks_are_bit_identical_and_resume_bit_exactly(corpus):
    first = train(corpus, 2, "first", 6, *REGULARISED)
    again = train(corpus, 2, "again", 6, *REGULARISED)
    assert checkpoint_bytes(first) == checkpoint_bytes(again)
    assert losses(first) == losses(again)
    halves = train(corpus, 2, "halves", 3, *REGULARISED)
    state = json.loads((halves / "checkpoint" / "state.json").read_text())
    assert any(name.startswith("rank1.") for name in state["dropout_rngs"])  # rank 1's masks are its own, and kept
    train(corpus, 2, "halves", 6, resume=True)
    assert checkpoint_bytes(halves) == checkpoint_bytes(first)
    assert losses(halves) == losses(first)


@needs_mpi
def test_a_run_resumes_on_another_number_of_ranks(corpus, monkeypatch):
    whole = train_alone(corpus, "whole", monkeypatch, 6)
    moved = train_alone(corpus, "moved", monkeypatch, 3)
    train(corpus, 2, "moved", 6, resume=True)  # the sampler and the global batch do not depend on the ranks
    np.testing.assert_allclose(losses(moved), losses(whole), **TOLERANCE)
    train(corpus, 1, "moved", 8, resume=True)  # and back to one
    assert len(losses(moved)) == 8


@needs_mpi
def test_bert_trains_on_two_ranks(corpus):
    done = launch(corpus, 2, "train", "--model", "bert", "--data", "tiny.txt", "--vocab-size", "300", "--n-layer", "1",
                  "--n-embd", "16", "--context-length", "16", "--batch-size", "4", "--max-steps", "2", "--eval-windows",
                  "4", "--workers", "1", "--quiet", "--out", "bert")
    assert done.returncode == 0, done.stderr
    assert "each batch shared by 2 ranks × 1 thread" in done.stdout
    assert done.stdout.count("done: step 2") == 1  # rank 0 speaks for the job
    assert len(losses(corpus / "bert", "val_accuracy")) == 1


def one_error_line(done) -> str:
    lines = [line for line in done.stderr.splitlines() if "error" in line]
    assert done.returncode != 0
    assert len(lines) == 1, done.stderr
    return lines[0]


@needs_mpi
def test_more_ranks_than_windows_in_a_batch_is_one_line(corpus):
    done = launch(corpus, 3, "train", "--data", "tiny.txt", *TINY, "--batch-size", "2", "--out", "too-many")
    assert "--batch-size 2 is fewer examples than the 3 ranks" in one_error_line(done)
    assert not (corpus / "too-many").exists()


@needs_mpi
def test_ranks_given_different_settings_are_refused_naming_the_setting(corpus):
    command = [sys.executable, "-m", "npllm.cli", "train", "--data", "tiny.txt", *TINY, "--out", "disagree"]
    done = launch(corpus, 1, *command[3:], "--lr", "0.001", ":", "-n", "1", *command, "--lr", "0.002")
    line = one_error_line(done)
    assert "the ranks disagree on the flag --lr: rank 0 has 0.001, rank 1 has 0.002" in line
    assert not (corpus / "disagree").exists()


@needs_mpi
def test_an_output_folder_that_one_rank_cannot_write_stops_every_rank(corpus):
    (corpus / "elsewhere").mkdir()
    (corpus / "elsewhere" / "runs").write_text("a file where rank 1 would make its folder")
    shutil.copy(corpus / "tiny.txt", corpus / "elsewhere" / "tiny.txt")
    command = [sys.executable, "-m", "npllm.cli", "train", "--data", "tiny.txt", *TINY, "--out", "runs/x"]
    done = launch(corpus, 1, *command[3:], ":", "-n", "1", "-wdir", str(corpus / "elsewhere"), *command)
    line = one_error_line(done)
    assert "rank 1 of 2: --out runs/x" in line and "is a file, not a folder" in line, line
    assert not (corpus / "runs").exists()  # refused before any work


@needs_mpi
def test_an_error_on_one_rank_alone_aborts_the_job_in_bounded_time(corpus):
    (corpus / "no-corpus-here").mkdir()
    command = [sys.executable, "-m", "npllm.cli", "train", "--data", "tiny.txt", *TINY, "--out", "alone-fails"]
    started = time.monotonic()
    done = launch(corpus, 1, *command[3:], ":", "-n", "1", "-wdir", str(corpus / "no-corpus-here"), *command)
    assert time.monotonic() - started < mpi.AGREEMENT_SECONDS + 30
    assert done.returncode == 2
    assert "no such file or folder: tiny.txt" in done.stderr and "(rank 1 of 2 alone: stopping the job)" in done.stderr


def rank_process(marker, rank):
    """The pid of rank ``rank`` of the job whose environment carries ``marker``."""
    for _ in range(600):
        for entry in Path("/proc").iterdir():
            try:
                variables = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"NPLLM_TEST_JOB={marker}".encode() in variables and f"PMI_RANK={rank}".encode() in variables:
                return int(entry.name)
        time.sleep(0.05)
    raise AssertionError("the rank never started")


def start_long_run(corpus, out, marker, monkeypatch):
    monkeypatch.setenv("NPLLM_TEST_JOB", marker)
    process = launch(corpus, 2, "train", "--data", "tiny.txt", *TINY, "--max-steps", "100000", "--eval-interval",
                     "100000", "--out", out, wait=False)
    while not (corpus / out / "metrics.jsonl").exists():  # training has begun
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    return process


@needs_mpi
def test_a_signal_to_one_rank_saves_the_same_step_on_every_rank(corpus, monkeypatch):
    process = start_long_run(corpus, "stopped", "signal", monkeypatch)
    os.kill(rank_process("signal", 1), signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr  # stopped early, as after Ctrl-C: saved, and says how to go on
    step = json.loads((corpus / "stopped" / "checkpoint" / "state.json").read_text())["step"]
    assert f"interrupted: saved step {step}" in stdout and f"stopped at step {step} of" in stdout
    assert len(losses(corpus / "stopped")) == step


@needs_mpi
def test_a_rank_that_dies_ends_the_job_in_bounded_time(corpus, monkeypatch):
    process = start_long_run(corpus, "killed", "kill", monkeypatch)
    os.kill(rank_process("kill", 1), signal.SIGKILL)
    started = time.monotonic()
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode != 0
    assert time.monotonic() - started < 30
    # Whoever notices first says it: Hydra (the dead rank's signal) or rank 0, in one line, waiting for it in vain.
    assert "Killed (signal 9)" in stdout or "another rank of the job stopped during a collective" in stderr, stderr
    assert "Traceback" not in stderr


def test_without_mpi4py_a_run_under_mpiexec_says_how_to_install_it(monkeypatch, capsys, tiny_corpus, tmp_path):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # (import mpi4py then raises ImportError)
    monkeypatch.setattr(mpi, "_WORLD", None)
    monkeypatch.setenv("PMI_RANK", "0")
    assert main(["train", "--data", str(tiny_corpus), "--out", str(tmp_path / "run")]) == 2
    assert "needs mpi4py: pip install 'npllm[mpi]'" in capsys.readouterr().err
    monkeypatch.delenv("PMI_RANK")
    monkeypatch.setattr(mpi, "_WORLD", None)
    assert main(["train", "--mpi", "--data", str(tiny_corpus), "--out", str(tmp_path / "run")]) == 2
    assert "needs mpi4py" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(mpi, "_WORLD", None)


def test_importing_npllm_never_loads_mpi4py():
    code = "import sys, npllm, npllm.training.pretrain, npllm.cli; assert 'mpi4py' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env=environment(Path.cwd()))


@needs_mpi
@pytest.mark.bench
def test_bench_mpi_prints_every_layout_with_the_same_first_loss(capsys):
    from npllm.bench.mpi import main as bench_mpi

    assert bench_mpi(["--steps", "1", "--warmup", "1", "--check-ranks", "3", "--json"]) == 0
    output = capsys.readouterr().out
    for layout in ("1 rank × 1 thread", "1 rank × 2 threads", "2 ranks × 1 thread", "3 ranks × 1 thread"):
        assert layout in output
    summary = json.loads(output.strip().splitlines()[-1])
    losses = [figures["first_loss"] for figures in [*summary["layouts"].values(), summary["check"]]]
    np.testing.assert_allclose(losses, losses[0], rtol=1e-5)
    assert 0 < summary["layouts"]["2 ranks × 1 thread"]["allreduce_share"] < 1
