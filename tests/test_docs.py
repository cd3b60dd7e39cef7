"""The documentation cannot rot: its Python blocks run, the site builds in strict mode, and
the API reference generated from the docstrings covers every public name."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests import redis_support

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = sorted(
    [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")], key=lambda p: str(p.relative_to(ROOT))
)
NO_RUN = "<!-- no-run -->"

# Blocks in colleagues' documents that cannot run as they stand (they need hosts that do
# not exist, or bind a fixed port); each wants a `<!-- no-run -->` line before it. Keyed by
# (document, the block's first line).
NOT_RUNNABLE: dict[tuple[str, str], str] = {}

# Whole documents still being written whose blocks are fragments (names defined nowhere);
# each entry is reported as an expected failure until its blocks run or are marked.
IN_PROGRESS: dict[str, str] = {}

# Documents whose blocks read the storage URI from $QUOTAGUARD_STORAGE, as a deployed
# service does: their blocks run against a real redis-server of the test session.
ON_REDIS = ("docs/index.md", "docs/guides/")

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
    if name.startswith(ON_REDIS):
        if not redis_support.available():  # pragma: no cover - CI installs redis-server
            pytest.skip("redis-server is not installed")
        url = f"{redis_support.standalone().url}?prefix={redis_support.fresh_prefix()}"
        monkeypatch.setenv("QUOTAGUARD_STORAGE", url)
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


# Every module whose ``__all__`` is public API; the reference must cover each name.
REFERENCED_MODULES = [
    "quotaguard",
    "quotaguard.backends",
    "quotaguard.backends.redis",
    "quotaguard.cli",
    "quotaguard.integrations",
    "quotaguard.integrations.fastapi",
    "quotaguard.metrics",
    "quotaguard.testing",
]


def build_site(target: Path) -> None:
    """``mkdocs build --strict`` of the documentation into ``target``."""
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet"]
    built = subprocess.run(
        [*command, "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(target)],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert built.returncode == 0, f"mkdocs build --strict failed:\n{built.stdout}{built.stderr}"


def test_the_site_builds_strictly_with_every_public_name(tmp_path: Path) -> None:
    """A broken link, anchor or reference, or a page left out of the nav, fails the build;
    mkdocstrings renders every name of every public module's ``__all__``.

    One test, so that the site is built once per run even with pytest-xdist.
    """
    build_site(tmp_path)
    assert (tmp_path / "index.html").is_file()
    anchors: set[str] = set()
    for page in (tmp_path / "reference").rglob("*.html"):
        anchors |= set(re.findall(r'id="(quotaguard[\w.]*)"', page.read_text("utf-8")))
    missing = [
        f"{module}.{name}"
        for module in REFERENCED_MODULES
        for name in importlib.import_module(module).__all__
        if f"{module}.{name}" not in anchors
    ]
    assert not missing, f"the API reference lacks {missing}"
    pages = [page for page, _ in _published_links() if page is not None]
    unbuilt = [page for page in pages if not (tmp_path / page / "index.html").is_file()]
    assert pages and not unbuilt, f"README.md links to pages the site does not have: {unbuilt}"


def _nav_pages(entries: list[object]) -> set[str]:
    pages: set[str] = set()
    for entry in entries:
        if isinstance(entry, str):
            pages.add(entry)
        elif isinstance(entry, dict):
            for value in entry.values():
                pages |= _nav_pages(value) if isinstance(value, list) else {value}
    return pages


def test_every_document_is_in_the_site_navigation() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    in_nav = _nav_pages(config["nav"])
    documents = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    left_out, missing = sorted(documents - in_nav), sorted(in_nav - documents)
    assert not left_out, f"add these pages to the nav of mkdocs.yml: {left_out}"
    assert not missing, f"the nav of mkdocs.yml names pages that do not exist: {missing}"


def _published_links() -> list[tuple[str | None, str | None]]:
    """README.md's links as (site page, repository file); a relative link fails here.

    PyPI shows README.md as the project's description, where a relative link leads
    nowhere: every link must point at the published site or at the repository.
    """
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    site, repository = config["site_url"], config["repo_url"].rstrip("/") + "/blob/main/"
    found: list[tuple[str | None, str | None]] = []
    for target in re.findall(r"\]\(([^)\s]+)\)", (ROOT / "README.md").read_text("utf-8")):
        if target.startswith(site):
            found.append((target[len(site) :].strip("/"), None))
        elif target.startswith(repository):
            found.append((None, target[len(repository) :]))
        else:
            raise AssertionError(f"README.md links to {target!r}: not the site or repository")
    return found


def test_the_readme_links_work_where_the_package_is_published() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    assert f'Documentation = "{config["site_url"]}"' in pyproject
    assert f'Source = "{config["repo_url"]}"' in pyproject
    links = _published_links()
    files = [path for _, path in links if path is not None]
    assert files and all((ROOT / path).exists() for path in files), files
    for page, _ in links:
        if page:  # the built site is checked by the strict build test; here, the source
            stem = ROOT / "docs" / page
            assert stem.with_suffix(".md").is_file() or (stem / "index.md").is_file(), page
