"""The documentation cannot rot: its Python blocks run, and the API reference lists
every public name."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = sorted(
    [ROOT / "README.md", *(ROOT / "docs").glob("*.md")], key=lambda p: str(p.relative_to(ROOT))
)
NO_RUN = "<!-- no-run -->"

# Blocks in colleagues' documents that cannot run as they stand (they need hosts that do
# not exist, or bind a fixed port); each wants a `<!-- no-run -->` line before it. Keyed by
# (document, the block's first line).
NOT_RUNNABLE: dict[tuple[str, str], str] = {}

# Whole documents still being written whose blocks are fragments (names defined nowhere);
# each entry is reported as an expected failure until its blocks run or are marked.
IN_PROGRESS: dict[str, str] = {}

# Names the fragments of a document may use without defining them.
PRELUDE = """
import logging
import redis
from quotaguard import AsyncGuard, Guard, Plan, RollingWindow, TokenBucket
plans = [Plan("free", [TokenBucket("burst", 10, "1/second")]), Plan("pro", [])]
log = logging.getLogger("docs")
"""


def python_blocks(path: Path) -> list[tuple[int, str, bool]]:
    """(line, code, runnable) for every ```python block of ``path``."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        line = text.count("\n", 0, match.start()) + 1
        blocks.append((line, match.group(1), before.strip() != NO_RUN))
    return blocks


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_python_blocks_run(document: Path, tmp_path: Path, monkeypatch) -> None:
    """Blocks run in order in one namespace per document, in an empty directory."""
    name = str(document.relative_to(ROOT))
    if name in IN_PROGRESS:
        pytest.xfail(f"{name}: {IN_PROGRESS[name]}")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "docs"}
    exec(PRELUDE, namespace)
    for line, code, runnable in python_blocks(document):
        first = code.strip().splitlines()[0] if code.strip() else ""
        if not runnable or (name, first) in NOT_RUNNABLE:
            continue
        exec(compile(code, f"{name}:{line}", "exec"), namespace)
    if not python_blocks(document):
        pytest.skip(f"{name} has no python blocks")


def test_no_run_markers_stay_rare() -> None:
    marked = [
        (document.name, line)
        for document in DOCUMENTS
        for line, _, runnable in python_blocks(document)
        if not runnable
    ]
    assert len(marked) <= 4, marked


def test_the_not_runnable_list_names_real_blocks() -> None:
    """An entry whose block was fixed or removed must leave the list."""
    for document, first in NOT_RUNNABLE:
        blocks = python_blocks(ROOT / document)
        firsts = {code.strip().splitlines()[0] for _, code, runnable in blocks if runnable}
        if first not in firsts:
            pytest.fail(f"{document}: {first!r} is no longer a runnable block; drop it")


REFERENCED_MODULES = [
    "quotaguard",
    "quotaguard.testing",
    "quotaguard.integrations",
    "quotaguard.metrics",
]


@pytest.mark.parametrize("module", REFERENCED_MODULES)
def test_the_reference_lists_every_public_name(module: str) -> None:
    reference = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    section = reference.split(f"## `{module}`\n", 1)
    assert len(section) == 2, f"docs/reference.md has no section for {module}"
    body = section[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^### `([^`]+)`", body, re.M))
    public = set(importlib.import_module(module).__all__)
    missing = sorted(public - documented)
    assert not missing, f"docs/reference.md lacks {module}: {missing}"
    stale = sorted(documented - public)
    assert not stale, f"docs/reference.md lists names {module} no longer exports: {stale}"


def test_every_document_is_linked_from_the_reference_or_the_readme() -> None:
    linked = (ROOT / "docs" / "reference.md").read_text() + (ROOT / "README.md").read_text()
    for document in (ROOT / "docs").glob("*.md"):
        if document.name != "reference.md":
            assert f"{document.name}" in linked, document.name
