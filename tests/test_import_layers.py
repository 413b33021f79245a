"""Imports only go down: chem/config -> tokenization/datasets -> hf -> evaluation -> training -> cli/demo.

Every `import` in src/molgen3D (lazy ones inside functions too, and no string imports) is read
with `ast`; a module may import modules of its own layer or a lower one, and the graph has no cycle.
Inside the training package the same holds for its own layers, so TorchTitan components never
reach up into the train spec or the runner.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

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
    # scoring (no torch) <- generation (the model's sampler) <- the evaluate/rescore commands
    "molgen3D.scoring": 3,
    "molgen3D.generation": 3.3,
    "molgen3D.evaluation": 3.6,
    "molgen3D.training": 4,
    "molgen3D.training.pretraining.wsds": 4,
    # pure or torch-only helpers the layers above share
    "molgen3D.training.pretraining.flops": 4,
    "molgen3D.training.pretraining.document_masking": 4,
    "molgen3D.training.pretraining.checkpoint_integrity": 4,
    "molgen3D.training.pretraining.device_check": 4,
    "molgen3D.training.pretraining.probe_weights": 4,
    "molgen3D.training.pretraining.config": 5,
    "molgen3D.training.pretraining.dataprocessing": 5,
    "molgen3D.training.pretraining.run_layout": 6,
    "molgen3D.training.pretraining.seq_len_check": 6,
    "molgen3D.training.pretraining.torchtitan_model.dataloader_builder": 6,
    "molgen3D.training.pretraining.components": 7,
    "molgen3D.training.pretraining.patches": 8,
    "molgen3D.training.pretraining.torchtitan_model": 9,
    "molgen3D.training.pretraining.trainer": 9,
    "molgen3D.training.pretraining.torchtitan_runner": 10,
    "molgen3D.training.pretraining.doctor": 10,
    "molgen3D.training.pretraining.doctor_checks": 5,
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


# Edges the reading must find (plain, `from package import module`, and lazy imports inside functions):
# if one disappears, either the code changed (update the list) or `_imports` went blind to a form.
KNOWN_EDGES = [
    ("molgen3D.training.pretraining.torchtitan_runner", "molgen3D.training.pretraining.trainer"),
    ("molgen3D.training.pretraining.trainer", "molgen3D.training.pretraining.patches"),
    ("molgen3D.training.pretraining.patches", "molgen3D.training.pretraining.components.checkpoint"),
    ("molgen3D.training.pretraining.components.checkpoint", "molgen3D.hf.checkpoint_step"),
    (
        "molgen3D.training.pretraining.torchtitan_model.qwen3_custom",
        "molgen3D.training.pretraining.torchtitan_model.model",
    ),
    ("molgen3D.training.pretraining.torchtitan_model.qwen3_custom", "molgen3D.hf.base_model"),
    ("molgen3D.hf.export", "molgen3D.hf.checkpoint_step"),
    ("molgen3D.hf.checkpoint_step", "molgen3D.files"),
]


def test_every_module_has_a_layer_of_its_own():
    """Each module is placed by an entry naming it or its package; only direct children of molgen3D (files.py,
    cli.py, ...) may fall back to the root's layer, so a new package cannot slip in unranked."""
    unplaced = [
        module
        for module in MODULES
        if max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len) == "molgen3D"
        and module.count(".") > 1
    ]
    assert not unplaced, f"add these to LAYERS: {unplaced}"
    assert all(module in MODULES for module, _ in KNOWN_EDGES), "a known edge names a module that is gone"


@pytest.mark.parametrize("module, target", KNOWN_EDGES, ids=[f"{m.rsplit('.', 1)[1]}->{t}" for m, t in KNOWN_EDGES])
def test_known_edges_are_seen(module, target):
    assert target in GRAPH[module], f"{module} imports {target}, but the import reader did not see it"


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


def test_scoring_and_the_baseline_import_no_torch():
    """Scoring (and the ETKDG baseline it runs) must work and start fast where torch is absent or heavy."""
    import subprocess
    import sys

    scoring = sorted(name for name in MODULES if name.startswith("molgen3D.scoring"))
    code = (
        "import importlib, sys\n"
        f"for name in {scoring!r}:\n"
        "    importlib.import_module(name)\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "molgen3D.scoring.baseline" in scoring
    assert result.stdout.strip() == "False", f"importing {scoring} loaded torch"


def test_a_training_run_without_the_probe_imports_no_sampler():
    """The conformer probe's sampler and scorer load only when a run samples (`sample_conformers_freq > 0`):
    what a training run imports at start (runner, Trainer, the train spec) must not pull them in."""
    import subprocess
    import sys

    training = [
        "molgen3D.training.pretraining.torchtitan_runner",
        "molgen3D.training.pretraining.trainer",
        "molgen3D.training.pretraining.torchtitan_model.qwen3_custom",
    ]
    heavy = ("molgen3D.generation", "molgen3D.scoring", "molgen3D.evaluation")
    code = (
        "import importlib, sys\n"
        f"for name in {training!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in sys.modules if m.startswith({heavy!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "molgen3D.training.pretraining.components.validate" in MODULES
    assert result.stdout.strip() == "[]", f"a training run's imports loaded {result.stdout.strip()}"
