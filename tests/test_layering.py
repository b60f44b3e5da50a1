"""The layering that import-linter cannot see: who may talk to other processes, and who may branch on a task.

``make test`` runs the import-linter contracts of pyproject.toml (``lint-imports``); these
checks add the two rules of docs/architecture.md that are about names, not module imports.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "deepstrata"
TASK_NAMES = ("image-classification", "text-classification", "recommendation")


def modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), path.read_text(encoding="utf-8")


def imported(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_only_engine_distributed_imports_torch_distributed():
    offenders = [name for name, source in modules() if name != "engine/distributed.py"
                 and any(module.startswith(("torch.distributed", "torch.nn.parallel")) for module in imported(source))]
    assert offenders == []


def test_no_task_name_branches_outside_the_families():
    """A task's name appears only in its family's folder (and the config default); verbs ask the family."""
    pattern = re.compile("|".join(rf'["\']{re.escape(name)}["\']' for name in TASK_NAMES))
    allowed = ("families/", "config.py")
    offenders = [name for name, source in modules() if not name.startswith(allowed) and pattern.search(source)]
    assert offenders == []


def test_private_names_stay_in_their_module():
    """A leading underscore means "this module only": no module imports another's private name."""
    offenders = []
    for name, source in modules():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("deepstrata"):
                offenders += [f"{name}: {node.module}.{alias.name}" for alias in node.names
                              if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert offenders == []


def test_the_cli_imports_no_family_engine_or_model_code():
    """The CLI is a door: it parses and calls the API (``deepstrata.api``, ``Run``); the work is below."""
    below = ("deepstrata.families", "deepstrata.engine", "deepstrata.models", "deepstrata.inspect.",
             "deepstrata.pipeline", "deepstrata.baselines")
    offenders = [f"{name}: {module}" for name, source in modules() if name.startswith("cli")
                 for module in imported(source) if module.startswith(below)]
    assert offenders == []


def test_every_module_sits_in_a_layer():
    """lint-imports checks only the modules its layers name: a new module must be placed in one."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    pyproject = tomllib.loads((PACKAGE.parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    contract = pyproject["tool"]["importlinter"]["contracts"][0]
    layers = [part.strip() for layer in contract["layers"] for part in re.split(r"[:|]", layer)]
    unplaced = []
    for name, _ in modules():
        dotted = "deepstrata." + name.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
        if dotted in ("deepstrata.__init__", "deepstrata.__main__", "deepstrata.inspect", "deepstrata.families"):
            continue  # the package faces: public names, loaded lazily or re-exported
        if not any(dotted == layer or dotted.startswith(layer + ".") for layer in layers):
            unplaced.append(dotted)
    assert unplaced == []
