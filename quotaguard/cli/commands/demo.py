"""``demo``: run the demo, which is an example of a source checkout, not installed code.

The demo (``examples/demo.py``) drives the example LLM API (``examples/llm_api.py``) with
simulated customers. Both live beside the package in a clone of the repository; an
editable install from the clone (what ``scripts/demo.sh`` makes) finds them there. An
installation without them exits with code 1 and says how to run the demo.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import quotaguard
from quotaguard.cli.errors import EXIT_ERROR, CLIError

__all__ = ["NO_CHECKOUT", "demo", "find_demo"]

NO_CHECKOUT = (
    "the demo is examples/demo.py of a source checkout of quotaguard, and this installation "
    "has none: in a clone of the repository, run: bash scripts/demo.sh"
)
"""The error of ``quotaguard demo`` outside a source checkout."""


def find_demo(package: Path | None = None) -> Path | None:
    """``examples/demo.py`` of the checkout the package was installed from, or None."""
    root = (package or Path(quotaguard.__file__)).resolve().parent.parent
    path = root / "examples" / "demo.py"
    return path if path.is_file() and (root / "pyproject.toml").is_file() else None


def demo(args: argparse.Namespace) -> int:
    """``demo [--no-progress] [--serve SECONDS]``: run ``examples/demo.py``'s `run_demo`."""
    path = find_demo()
    if path is None:
        raise CLIError(EXIT_ERROR, NO_CHECKOUT)
    examples = str(path.parent)
    if examples not in sys.path:
        sys.path.insert(0, examples)  # the demo imports its neighbour, llm_api
    spec = importlib.util.spec_from_file_location("quotaguard_demo", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code: int = module.run_demo(
        out=args.stdout, err=args.stderr, progress=not args.no_progress, serve=args.serve
    )
    return code
