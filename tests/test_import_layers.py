"""Imports only go down: chem/config -> tokenization/datasets -> hf -> evaluation -> training -> cli/demo.

Every `import` in src/molgen3D (lazy ones inside functions too, and no string imports) is read
with `ast`; a module may import modules of its own layer or a lower one, and the graph has no cycle.
Inside the training package the same holds for its own layers, so TorchTitan components never
reach up into the train spec or the runner.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "molgen3D"

# Longest matching prefix decides; a module may import only modules whose rank is <= its own.
LAYERS = {
    "molgen3D": 0,
    "molgen3D.chem": 0,
    "molgen3D.config": 0,
    "molgen3D.tokenization": 1,
    "molgen3D.datasets": 1,
    "molgen3D.hf": 2,
    "molgen3D.evaluation": 3,
    "molgen3D.training": 4,
    "molgen3D.training.pretraining.wsds": 4,
    # pure or torch-only helpers the layers above share
    "molgen3D.training.pretraining.flops": 4,
    "molgen3D.training.pretraining.document_masking": 4,
    "molgen3D.training.pretraining.checkpoint_integrity": 4,
    "molgen3D.training.pretraining.device_check": 4,
    "molgen3D.training.pretraining.hf_base": 4,
    "molgen3D.training.pretraining.probe_model": 4,
    "molgen3D.training.pretraining.config": 5,
    "molgen3D.training.pretraining.dataprocessing": 5,
    "molgen3D.training.pretraining.run_layout": 6,
    "molgen3D.training.pretraining.torchtitan_model.data": 6,
    "molgen3D.training.pretraining.components": 7,
    "molgen3D.training.pretraining.patches": 8,
    "molgen3D.training.pretraining.torchtitan_model": 9,
    "molgen3D.training.pretraining.torchtitan_runner": 10,
    "molgen3D.training.posttraining": 6,
    "molgen3D.demo": 11,
    "molgen3D.cli": 11,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _rank(module: str) -> int:
    best = max((prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")), key=len)
    return LAYERS[best]


def _imports(path: Path) -> set[str]:
    """Our modules imported by `path` (a `from pkg import name` counts as pkg.name when that is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                for alias in node.names
            ]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] == "molgen3D" and name in MODULES)
    return found


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def test_every_module_has_a_layer():
    assert "molgen3D.training.pretraining.patches" in MODULES and len(MODULES) > 50


def test_imports_only_go_down():
    upward = sorted(
        f"{module} (layer {_rank(module)}) imports {target} (layer {_rank(target)})"
        for module, targets in GRAPH.items()
        for target in targets
        if _rank(target) > _rank(module)
    )
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    state: dict[str, int] = {}
    cycles: list[str] = []

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in sorted(GRAPH[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(stack[stack.index(target) :] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    # A package's __init__ importing nothing, and parents imported implicitly, are not edges here.
    assert not cycles, "\n".join(cycles)


def test_no_string_imports():
    offenders = [
        str(path.relative_to(SRC))
        for path in MODULES.values()
        if "import_module(" in path.read_text(encoding="utf-8")
        and path.name not in ("cli.py", "patches.py", "torchtitan_runner.py")
    ]
    assert not offenders, f"importlib.import_module hides an import edge in {offenders}"
