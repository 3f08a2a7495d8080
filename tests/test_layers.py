"""Imports run down the layers only (ARCHITECTURE.md): read every module's imports with `ast`, lazy ones included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: (the modules a rule covers, the import prefix they must not use, the modules exempt from it and why)
RULES = [
    # The command line is the composition root: it wires runs (hificl) to reports (analysis) and sits above both.
    ("hificl", "analysis", {"hificl/cli.py"}),
    ("hificl/data", "hificl.lightning", set()),
    ("hificl/methods", "hificl.lightning", set()),
    ("hificl/data", "hificl.experiment", set()),
    ("hificl/methods", "hificl.experiment", set()),
    ("hificl/models", "hificl.lightning", set()),
    ("hificl/metrics", "hificl.lightning", set()),
    ("hificl/results.py", "hificl.lightning", set()),
]


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, at any depth (function-level ones too)."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against the file's package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base]) if base else ".".join(parent)
            found += [(node.lineno, f"{base}.{alias.name}" if alias.name != "*" else base) for alias in node.names]
    return found


def violations(scope: str, forbidden: str, exempt: set[str], root: Path = ROOT) -> list[str]:
    target = root / scope
    files = [target] if target.suffix == ".py" else sorted(target.rglob("*.py"))
    bad = []
    for path in files:
        rel = path.relative_to(root).as_posix()
        if rel in exempt:
            continue
        for line, module in imported_modules(path, root):
            if module == forbidden or module.startswith(forbidden + "."):
                bad.append(f"{rel}:{line} imports {module}")
    return bad


@pytest.mark.parametrize(("scope", "forbidden", "exempt"), RULES, ids=[f"{s} !-> {f}" for s, f, _ in RULES])
def test_no_import_runs_back_up_a_layer(scope: str, forbidden: str, exempt: set[str]) -> None:
    assert violations(scope, forbidden, exempt) == []


def test_the_checker_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "hificl" / "data"
    pkg.mkdir(parents=True)
    (pkg / "bad.py").write_text(
        "import os\n\ndef f():\n    from analysis.tables import x\n    from ..lightning import module\n    return x\n"
    )
    assert violations("hificl", "analysis", set(), tmp_path) == ["hificl/data/bad.py:4 imports analysis.tables.x"]
    assert violations("hificl/data", "hificl.lightning", set(), tmp_path) == [
        "hificl/data/bad.py:5 imports hificl.lightning.module"
    ]
