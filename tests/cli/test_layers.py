"""The CLI stands on the guard's public API: no Redis, no backend internals, no engine."""

from __future__ import annotations

import ast
from pathlib import Path

import quotaguard.cli

PACKAGE = Path(quotaguard.cli.__file__).parent
FORBIDDEN = ("redis", "quotaguard.backends", "quotaguard.core.engine", "quotaguard.guard")


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_the_cli_imports_only_public_quotaguard_and_core_checks() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) >= 8
    for path in modules:
        for name in imported(path):
            assert not name.startswith(FORBIDDEN), f"{path.relative_to(PACKAGE)} imports {name}"


def test_the_demo_is_not_installed_code() -> None:
    package = PACKAGE.parent
    assert not (package / "demo.py").exists() and not (package / "demo").exists()
