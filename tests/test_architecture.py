"""The house's rules (docs/architecture.md), checked on the source: layers import
downwards only, speed machinery stays in core and the backends, modules stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "quotaguard"
UPPER_FLOORS = ("quotaguard.integrations", "quotaguard.metrics", "quotaguard.cli")
MACHINE_ROOMS = ("quotaguard.core", "quotaguard.backends")
MAX_LINES = 450


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, *, top_level_only: bool) -> set[str]:
    """The quotaguard modules ``module`` imports (``TYPE_CHECKING`` blocks excluded)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node):
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
            if not top_level_only or isinstance(node, ast.If | ast.Try):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    inner = getattr(node, field, None)
                    if isinstance(inner, list):
                        visit(
                            [n for n in inner if isinstance(n, ast.stmt)]
                            + [s for h in inner if isinstance(h, ast.ExceptHandler) for s in h.body]
                        )

    visit(tree.body)
    return {name for name in found if name in MODULES}


def test_the_package_has_no_import_circle() -> None:
    graph = {module: _imports(module, top_level_only=False) - {module} for module in MODULES}
    # a package's __init__ re-exporting its own modules is not a circle of the layers
    for module, targets in graph.items():
        graph[module] = {
            t
            for t in targets
            if not (module.startswith(t + ".") and MODULES[t].name == "__init__.py")
        }
    circles: list[list[str]] = []
    state: dict[str, int] = {}

    def walk(module: str, trail: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circles.append([*trail[trail.index(target) :], target])
            elif target not in state:
                walk(target, [*trail, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert not circles, f"import circles: {circles}"


@pytest.mark.parametrize("module", [m for m in MODULES if m.startswith(UPPER_FLOORS)])
def test_upper_floors_use_only_public_api(module: str) -> None:
    reached = _imports(module, top_level_only=False)
    private = sorted(
        name
        for name in reached
        if name == "quotaguard.core.engine"
        or (name.startswith("quotaguard.backends.") and name.count(".") >= 2)
        or (
            any(part.startswith("_") for part in name.split(".")[1:])
            and name != "quotaguard._version"
            and not name.startswith(".".join(module.split(".")[:2]) + ".")
        )
    )
    assert not private, f"{module} imports machinery below the guard: {private}"


@pytest.mark.parametrize("module", [m for m in MODULES if not m.startswith(MACHINE_ROOMS)])
def test_no_code_generation_above_core_and_backends(module: str) -> None:
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    calls = [
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in {"exec", "eval", "compile"}
    ]
    assert not calls, f"{module} generates code: {calls}"


@pytest.mark.parametrize("module", list(MODULES))
def test_modules_stay_small(module: str) -> None:
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines (at most {MAX_LINES})"
