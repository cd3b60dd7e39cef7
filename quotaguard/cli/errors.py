"""The CLI's exit codes, and the error that carries one."""

from __future__ import annotations

__all__ = ["EXIT_CONFIG", "EXIT_ERROR", "EXIT_INVALID", "EXIT_OK", "EXIT_USAGE", "CLIError"]

EXIT_OK = 0
"""Success."""
EXIT_ERROR = 1
"""A runtime error: the backend is unreachable or failed."""
EXIT_USAGE = 2
"""Bad or missing arguments or options (argparse's own code)."""
EXIT_CONFIG = 3
"""The plans file cannot be read or is invalid."""
EXIT_INVALID = 4
"""Unknown customer, plan or limit, or an invalid request."""


class CLIError(Exception):
    """An error with the exit code the CLI ends with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        """The exit code."""
