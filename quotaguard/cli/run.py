"""`main`: parse the arguments, run the command, turn every error into its exit code.

Backend failures arrive as `quotaguard.BackendUnavailable` (the backends translate their
client library's errors), so the CLI knows nothing of Redis.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import TextIO

from quotaguard import (
    Backend,
    BackendUnavailable,
    ConfigurationError,
    InvalidRequestError,
    QuotaguardError,
)
from quotaguard.cli.errors import (
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_USAGE,
    CLIError,
)
from quotaguard.cli.parser import build_parser

__all__ = ["main"]


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    backend: Backend | None = None,
) -> int:
    """Run the CLI; returns the exit code (see `quotaguard.cli`).

    ``argv`` defaults to ``sys.argv[1:]``. ``backend``, when given, is used instead of
    ``--storage`` (to embed the CLI, or to run several commands on one memory backend).
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    args.stdout = out
    args.stderr = err
    args.backend = backend
    for option in ("storage", "plans"):
        if not hasattr(args, option):
            setattr(args, option, None)
    try:
        code: int = args.handler(args)
        return code
    except CLIError as error:
        err.write(f"quotaguard: error: {error}\n")
        return error.code
    except ConfigurationError as error:
        err.write(f"quotaguard: error: {error}\n")
        return EXIT_CONFIG
    except InvalidRequestError as error:
        err.write(f"quotaguard: error: {error}\n")
        return EXIT_INVALID
    except BackendUnavailable as error:
        err.write(f"quotaguard: error: backend unavailable: {error}\n")
        return EXIT_ERROR
    except (QuotaguardError, OSError) as error:
        err.write(f"quotaguard: error: {error}\n")
        return EXIT_ERROR
    except KeyboardInterrupt:
        err.write("quotaguard: error: interrupted\n")
        return 130
