"""The import layers of docs/DESIGN.md: each package imports only from the layers below it (and
from itself), so a layer can be changed, or read, without the ones above it. Lazy imports
inside functions count too: a dependency is a dependency wherever it is written."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "iclab"

# Bottom to top; a package may import any package of a lower layer, and its own modules.
LAYERS: list[set[str]] = [
    {"__init__", "errors", "seeding", "episode", "progress"},
    {"io", "registry", "devices", "learner", "optim"},
    {"specs"},
    {"kinds"},
    {"tasks", "models"},
    {"algorithms", "metrics"},
    {"evaluation"},
    {"config"},
    {"training"},
    {"report"},
    {"run"},
    {"probes", "sweeps", "predictor", "sklearn"},
    {"reproductions"},
    {"listing"},
    {"cli"},
    {"__main__"},
]
LEVEL = {package: level for level, packages in enumerate(LAYERS) for package in packages}


def package_of(module: str) -> str:
    """``iclab.run.catalog`` → ``run``; ``iclab`` → ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def is_module(name: str) -> bool:
    return (SOURCE / name).is_dir() or (SOURCE / f"{name}.py").exists()


def imports() -> dict[str, set[tuple[str, str]]]:
    """Package → {(imported package, file:line)} for every iclab import in the source tree."""
    found: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for path in SOURCE.rglob("*.py"):
        relative = path.relative_to(SOURCE)
        importer = relative.parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
                if node.module == "iclab":  # from iclab import catalog: the submodule counts
                    names = [
                        f"iclab.{alias.name}" if is_module(alias.name) else "iclab"
                        for alias in node.names
                    ]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name == "iclab" or name.startswith("iclab."):
                    found[importer].add((package_of(name), f"{relative}:{node.lineno}"))
    return found


def test_every_package_has_a_layer():
    packages = {
        path.name.removesuffix(".py")
        for path in SOURCE.iterdir()
        if path.suffix == ".py" or (path.is_dir() and (path / "__init__.py").exists())
    }
    assert packages <= set(LEVEL), f"place {sorted(packages - set(LEVEL))} in LAYERS"


def test_packages_import_only_from_lower_layers():
    upward = [
        f"{where}: {importer} (layer {LEVEL[importer]}) imports {imported} "
        f"(layer {LEVEL[imported]})"
        for importer, edges in imports().items()
        for imported, where in edges
        if imported != importer and LEVEL[imported] >= LEVEL[importer] and imported != "__init__"
    ]
    assert not upward, "imports against the layering:\n" + "\n".join(sorted(upward))


@pytest.mark.parametrize(
    ("low", "high"),
    [("models", "config"), ("models", "tasks"), ("tasks", "models"), ("training", "run")],
)
def test_the_layers_the_design_names_stay_apart(low, high):
    assert all(imported != high for imported, _ in imports().get(low, set()))
