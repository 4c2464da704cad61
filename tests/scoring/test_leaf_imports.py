"""scoring/ is a leaf (DESIGN.md §3, issue 9): its modules import nothing from the dictionary readers,
results, pipeline, models, reports, demo or CLI. Checked on the source (every import statement,
also the ones inside functions), so a late import cannot sneak a dependency back in."""

from __future__ import annotations

import ast
from pathlib import Path

import hnd_jax.scoring

FORBIDDEN = ("dictionary", "results", "pipeline", "models", "reports", "demo", "cli")


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_scoring_imports_no_higher_layer():
    folder = Path(hnd_jax.scoring.__file__).parent
    files = sorted(folder.glob("*.py"))
    assert len(files) > 5
    bad = {
        f"{path.name}: {name}"
        for path in files
        for name in imported_modules(path)
        if name.startswith("hnd_jax.") and name.split(".")[1] in FORBIDDEN
    }
    assert not bad, sorted(bad)


def test_the_check_catches_a_forbidden_import(tmp_path):
    path = tmp_path / "x.py"
    path.write_text("def f():\n    from hnd_jax.pipeline.dissect import dissect_model\n")
    assert "hnd_jax.pipeline.dissect" in imported_modules(path)
