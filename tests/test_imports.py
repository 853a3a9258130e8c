"""npllm runs on NumPy alone: importing it, or any of its modules, never pulls in an optional oracle.

PyTorch and tiktoken are test oracles and benchmark yardsticks, and matplotlib (the plot extra) draws
pictures: each is imported only by the code that uses it, at call time. Each check runs in a fresh interpreter,
so modules the test session already imported cannot hide an import or fake one.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
OPTIONAL = ("torch", "tiktoken", "transformers", "tokenizers", "safetensors", "matplotlib")
TORCH_YARDSTICKS = ["npllm.bench.torch_gpt", "npllm.bench.torch_bert", "npllm.bench.torch_bart"]  # the PyTorch models only --compare-torch imports

# argv: the scope ("package" or "every"), then the modules to leave out
IMPORT_SCRIPT = f"""
import importlib, json, pkgutil, sys
import npllm
modules = []
if sys.argv[1] == "every":
    modules = [info.name for info in pkgutil.walk_packages(npllm.__path__, "npllm.") if info.name not in sys.argv[2:]]
    for name in modules:
        importlib.import_module(name)
print(json.dumps({{"modules": modules, "optional": [name for name in {OPTIONAL!r} if name in sys.modules]}}))
"""


def import_in_fresh_interpreter(scope, excluded=()):
    """Run the imports in a new Python; return (modules imported, optional packages found in sys.modules)."""
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY)}
    result = subprocess.run([sys.executable, "-c", IMPORT_SCRIPT, scope, *excluded], cwd=REPOSITORY,
                            capture_output=True, text=True, check=True, env=environment)
    report = json.loads(result.stdout)
    return report["modules"], report["optional"]


@pytest.mark.slow
def test_import_npllm_needs_no_optional_package():
    assert import_in_fresh_interpreter("package") == ([], [])


@pytest.mark.slow
def test_every_module_imports_without_optional_packages():
    modules, optional = import_in_fresh_interpreter("every", excluded=TORCH_YARDSTICKS)
    assert {"npllm.training.pretrain", "npllm.generation.decoding", "npllm.cli", "npllm.bench.tokenizer"} <= set(modules)
    assert optional == []


@pytest.mark.slow
@pytest.mark.parity
def test_the_check_sees_torch_when_the_yardstick_is_imported():
    pytest.importorskip("torch")
    _, optional = import_in_fresh_interpreter("every")
    assert "torch" in optional
