"""A checkpoint written by an earlier npllm still resumes, bit for bit.

``fixtures/run-before-restructure/`` is a tiny run (dropout 0.1, two
micro-batches, two workers) stopped after step 4 by the library as of commit
c8284be, before the package was reorganised; ``uninterrupted_metrics.json``
holds the losses of the same run trained to step 8 without stopping, by that
same code.  Resuming the old folder with today's code must log exactly those
losses: the layout of a checkpoint is a promise to its users.
"""

import json
import shutil
from pathlib import Path

from npllm.training.pretrain import resume

FIXTURE = Path(__file__).parent / "fixtures" / "run-before-restructure"


def test_a_checkpoint_from_before_the_restructure_resumes_bit_identically(tmp_path, monkeypatch, isolated_cache):
    run = tmp_path / "half"
    shutil.copytree(FIXTURE / "checkpoint", run / "checkpoint")
    shutil.copy(FIXTURE / "metrics.jsonl", run / "metrics.jsonl")
    shutil.copy(FIXTURE / "tiny.txt", tmp_path / "tiny.txt")
    monkeypatch.chdir(tmp_path)  # the run was trained on --data tiny.txt, a relative path

    resumed = resume("half", {"max_steps": 8}, progress=False, log=lambda *_: None)

    assert resumed.step == 8
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    expected = json.loads((FIXTURE / "uninterrupted_metrics.json").read_text())
    # the fixture's keys only: the timing varies, and the loop has learned to log more since (grad_norm, tokens)
    assert [{key: record[key] for key in wanted} for record, wanted in zip(logged, expected)] == expected
    assert len(logged) == len(expected)
