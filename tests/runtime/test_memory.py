"""keep_freed_memory: a training step's arrays reuse freed memory instead of fresh pages, in every thread.

Checked by counting minor page faults (each one a fresh page the kernel had to find and
zero), thread by thread, over data-parallel steps of the tiny benchmark preset, in a
fresh interpreter (the setting is process-wide and must come before the threads
allocate).  Without the settings a step takes some 17,000 faults; with the thresholds
but each thread in its own malloc arena, the second thread still takes ~1,800 (its
arena gives emptied heaps back); with all of them, next to none.  A few hundred in the
main thread are allowed: Python's own small-object arenas come and go the same way.
"""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

PROGRAM = """
import json, os, sys
from npllm.runtime.memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "on" else False
from npllm.bench.train import PRESETS, npllm_step_function
step, _ = npllm_step_function(PRESETS["tiny"])

def faults_by_thread():
    faults = {}
    for thread in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{thread}/stat") as stat:
            faults[thread] = int(stat.read().rsplit(")", 1)[1].split()[7])  # minflt
    return faults

for _ in range(3):
    step()
before = faults_by_thread()
for _ in range(3):
    step()
after = faults_by_thread()
new = {thread: (count - before.get(thread, 0)) / 3 for thread, count in after.items()}
main = new.pop(str(os.getpid()))
print(json.dumps({"applied": applied, "main": main, "others": sum(new.values())}))
"""


def faults_per_step(setting):
    completed = subprocess.run([sys.executable, "-c", PROGRAM, setting], capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_steps_reuse_freed_memory_in_every_thread():
    on = faults_per_step("on")
    if not on["applied"]:
        pytest.skip("not glibc: mallopt is not available")
    off = faults_per_step("off")
    assert on["others"] < 500 and on["main"] < 1000, on  # without one arena: others ~1,800
    assert off["main"] + off["others"] > 1000, off  # (the count does see fresh pages)
