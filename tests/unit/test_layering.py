"""Serving code (layers/, functions/) must never import the heavy training libraries."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {"torch", "sklearn", "scipy", "pandas", "implicit", "towerlight_offline"}
SERVING_FUNCTIONS = ("recommend", "track", "ingest", "admin")


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def _serving_files() -> list[Path]:
    files = sorted((ROOT / "layers").rglob("*.py"))
    for name in SERVING_FUNCTIONS:
        files += sorted((ROOT / "functions" / name).rglob("*.py"))
    return files


def test_serving_sources_do_not_import_training_libraries() -> None:
    # GIVEN every Python file of the runtime layer and the serving functions
    files = _serving_files()
    assert files, "no serving sources found"
    # WHEN their imports are read
    offenders = {str(f.relative_to(ROOT)): sorted(_imported_roots(f) & FORBIDDEN) for f in files}
    # THEN none of them names a training library
    assert {f: mods for f, mods in offenders.items() if mods} == {}


@pytest.mark.parametrize("module", ["towerlight.api.base", "towerlight.features", "towerlight.config"])
def test_importing_runtime_modules_loads_no_training_library(module: str) -> None:
    # GIVEN a fresh interpreter  WHEN a runtime module is imported
    code = (
        f"import sys, {module}; "
        "print(','.join(sorted(m for m in ('torch','sklearn','scipy','pandas') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # THEN no training library was pulled in transitively
    assert out.stdout.strip() == ""
