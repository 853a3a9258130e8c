"""Every script in examples/ runs end to end with tiny settings, so the examples never rot."""

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_autograd_basics_fits_the_sine(capsys):
    example = load_example("autograd_basics")
    example.main(["--steps", "200"])
    out = capsys.readouterr().out
    assert "gradcheck of tanh(x @ w).mean(axis=0): True" in out
    assert example.fit_sine(200) < 0.05
