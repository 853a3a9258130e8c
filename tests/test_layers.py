"""The house keeps its floors: every import points downward, and no module imports itself round a circle.

Each module of the package is parsed (not imported) and every ``import`` in
it, at the top or inside a function, is resolved to the npllm module it
names.  A module may import from its own floor or from any floor below; the
textbook floors (tensor up to models) therefore never reach the runtime,
training, generation, the benchmarks or the command line.  The one allowed
exception: ``functional/_kernels.py`` runs the fused ops' pieces on the
runtime's thread pool.  ``DESIGN.md`` at the top of the repository draws the
same map.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "npllm"

FLOORS = [  # bottom first; a module may import from its own floor or below
    ("npllm.errors", "npllm.io"),
    ("npllm.tokenizer",),                  # independent of autograd,
    ("npllm.data",),                       # ... as are these
    ("npllm.tensor",),
    ("npllm.ops",),
    ("npllm.gradcheck",),
    ("npllm.functional",),
    ("npllm.nn",),
    ("npllm.optim",),
    ("npllm.models",),                     # the top of the textbook
    ("npllm.runtime",),
    ("npllm.pretrained",),                 # Hugging Face folders <-> models and tokenizers
    ("npllm.generation",),
    ("npllm.training",),
    ("npllm.plot",),                       # pictures of runs and models (matplotlib, imported when drawing)
    ("npllm.bench",),
    ("npllm.cli",),
    ("npllm",),                            # the package's __init__, which loads runtime.blas before NumPy
]
ALLOWED_UPWARD = {("npllm.functional._kernels", "npllm.runtime.pool")}


def module_files() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


MODULES = module_files()


def imported_modules(name: str) -> set[str]:
    """The npllm modules that module ``name`` imports anywhere in its file."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
            for alias in node.names:  # "from npllm.functional import _kernels" imports a module
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in MODULES else base)
    return {module for module in found if module in MODULES}


GRAPH = {name: imported_modules(name) for name in MODULES}


def floor(module: str) -> int:
    """The index in FLOORS of the longest prefix naming ``module``'s floor."""
    best = max((prefix for entry in FLOORS for prefix in entry if module == prefix or module.startswith(prefix + ".")),
               key=len)
    return next(index for index, entry in enumerate(FLOORS) if best in entry)


def test_every_module_has_a_floor_of_its_own():
    assert [name for name in MODULES if floor(name) == len(FLOORS) - 1] == ["npllm"]  # only __init__ is the top
    assert {"npllm.tensor", "npllm.functional._kernels", "npllm.training.loop", "npllm.runtime.pool"} <= set(MODULES)


def test_imports_point_downward_only():
    upward = sorted(f"{module} (floor {floor(module)}) imports {target} (floor {floor(target)})"
                    for module, targets in GRAPH.items() for target in targets
                    if floor(target) > floor(module) and (module, target) not in ALLOWED_UPWARD)
    assert upward == []


def test_no_module_imports_itself_round_a_circle():
    assert find_circle(GRAPH) is None


def find_circle(graph: dict[str, set[str]]):
    """One circle of imports as a list of modules (first == last), or None: depth-first search, colouring nodes."""
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (circle := visit(target)):
                return circle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (circle := visit(node)):
            return circle
    return None


@pytest.mark.parametrize("graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"a"}}, ["a", "a"]),
], ids=["three", "a chain", "itself"])
def test_the_circle_finder_finds_circles(graph, expected):
    assert find_circle(graph) == expected


def test_the_floor_check_sees_an_upward_import():
    assert floor("npllm.training.loop") > floor("npllm.models.gpt") > floor("npllm.tensor")
    assert "npllm.runtime.pool" in GRAPH["npllm.functional._kernels"]  # the exception is real, so the check reads it
