"""The integrations stay on their floor: they call the guard's public API only.

No import of the engine's speed machinery or of a backend, no code generation, no
import circle among their modules, no module much over 400 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "quotaguard"
INTEGRATIONS = sorted((PACKAGE / "integrations").rglob("*.py"))
CORE = sorted((PACKAGE / "core").rglob("*.py"))

BELOW_THE_GUARD = ("quotaguard.backends", "quotaguard.core.engine", "quotaguard.core.compiled")
BELOW_THE_GUARD += ("quotaguard.core.kinds",)
ALLOWED: set[tuple[str, str]] = set()
"""(file, module) pairs allowed below the guard: none."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth (outside ``if TYPE_CHECKING:``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if _type_checking_only(child):
                continue
            if isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = package
                for _ in range(child.level - 1):
                    base = base.rpartition(".")[0]
                target = child.module or ""
                if child.level:
                    target = f"{base}.{target}" if target else base
                modules = [f"{target}.{alias.name}" for alias in child.names]
                modules = [module for module in modules if is_module(module)]
                if not modules or child.module is not None:  # ``from . import _setup``
                    found.add(target)  # is the module, not the package's __init__
                found.update(modules)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def test_the_layer_test_sees_imports() -> None:
    imported = imports_of(PACKAGE / "integrations" / "asgi.py")
    assert "quotaguard.guard" in imported
    assert "quotaguard.integrations._setup" in imported  # ``from . import _setup``
    assert "quotaguard.integrations.headers" in imported


@pytest.mark.parametrize("path", INTEGRATIONS, ids=lambda path: path.name)
def test_integrations_import_nothing_below_the_guard(path: Path) -> None:
    below = [
        name
        for name in imports_of(path)
        if name.startswith(BELOW_THE_GUARD) and (path.name, name) not in ALLOWED
    ]
    assert not below, f"{path.name} imports {below}: use the guard's public API"


@pytest.mark.parametrize("path", INTEGRATIONS, ids=lambda path: path.name)
def test_integrations_generate_no_code(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    calls = [
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in {"exec", "eval", "compile"}
    ]
    assert not calls, f"{path.name} calls {calls}"


@pytest.mark.parametrize("path", INTEGRATIONS, ids=lambda path: path.name)
def test_integrations_read_no_private_attribute_of_another_object(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    private = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"})
    ]
    assert not private, f"{path.name} reads {private}"


def test_no_import_circle_among_the_integrations() -> None:
    names = {module_name(path): path for path in INTEGRATIONS}
    graph = {name: imports_of(path) & names.keys() for name, path in names.items()}

    def circle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        seen: set[str] = set()
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return [*trail, nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
        return None

    # a package's __init__ re-exports its modules: importing one of them runs the
    # __init__ first, which Python handles; an edge back into the __init__ is a circle
    circles = [circle for name in graph if (circle := circle_from(name))]
    assert not circles, circles[0]


@pytest.mark.parametrize("path", INTEGRATIONS + CORE, ids=lambda path: path.name)
def test_no_module_much_over_400_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= 420, f"{path.name} has {lines} lines"
