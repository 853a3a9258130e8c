"""keep_freed_memory: a training step's arrays reuse freed memory instead of fresh pages, in every thread.

Checked by counting the process's minor page faults (each one a fresh page the kernel
had to find and zero) over data-parallel steps of the tiny benchmark preset, in a fresh
interpreter (the setting is process-wide and must come before the threads allocate).
Without the settings a step takes thousands of faults (7 MB of fresh pages, from the
second thread's arena); with them, next to none.
"""

import json
import subprocess
import sys

import pytest

PROGRAM = """
import json, resource, sys
from npllm.ops.memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "on" else False
from npllm.benchmarks.train import PRESETS, npllm_step_function
step, _ = npllm_step_function({**PRESETS["tiny"], "n_layer": 2})
for _ in range(3):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3
print(json.dumps({"applied": applied, "faults_per_step": faults}))
"""


def faults_per_step(setting):
    completed = subprocess.run([sys.executable, "-c", PROGRAM, setting], capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_steps_reuse_freed_memory_in_every_thread():
    on = faults_per_step("on")
    if not on["applied"]:
        pytest.skip("not glibc: mallopt is not available")
    off = faults_per_step("off")
    assert on["faults_per_step"] < 100 < off["faults_per_step"], (on, off)
