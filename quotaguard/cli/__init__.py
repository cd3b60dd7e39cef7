"""The operator command line: look at and change customer state in a running service.

::

    quotaguard usage acme --storage redis://cache:6379/0 --plans plans.toml
    quotaguard top --limit weekly --count 10
    quotaguard assign acme pro
    quotaguard override acme weekly 10000000      # or a rate "1000/hour", or none
    quotaguard revoke acme --reason "Billing review." --allow-scope benchmark=benchmark
    quotaguard restore acme
    quotaguard reset acme --limit burst
    quotaguard audit acme --count 20
    quotaguard plans check plans.toml
    quotaguard demo

Every command takes ``--storage URI`` (default: ``$QUOTAGUARD_STORAGE``, else
``memory://``, which is private to the CLI's own process and so only useful for trying
the commands) and ``--plans FILE`` (default: ``$QUOTAGUARD_PLANS``). Read commands
(``usage``, ``top``, ``audit``, ``plans check``) take ``--json``. Changes are recorded
in the backend's audit trail under ``--actor`` (default ``cli:$USER``).

Every argument is validated before anything is changed, so a bad argument never leaves
partial state. Errors are one line on stderr, ``quotaguard: error: ...``.

The package: `parser` (the commands and their options), `commands` (one module per
family: `reads`, `changes`, `plans`, `demo`), `context` (the guard over ``--storage`` and
``--plans``), `formatting` (tables, durations, JSON documents), `errors` (exit codes),
`run` (`main`). The commands work through the guard's public API only.

Exit codes:

- 0: success;
- 1: runtime error (the backend is unreachable or failed, ...);
- 2: usage error (bad or missing arguments or options, bad storage URI);
- 3: invalid configuration (the plans file cannot be read or is invalid);
- 4: unknown customer, plan or limit, or an invalid request (bad value, not revoked, ...).
"""

from __future__ import annotations

from quotaguard.cli.context import check_limit_name as check_limit_name
from quotaguard.cli.errors import (
    EXIT_CONFIG,
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_USAGE,
    CLIError,
)
from quotaguard.cli.run import main

__all__ = [
    "EXIT_CONFIG",
    "EXIT_ERROR",
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_USAGE",
    "CLIError",
    "main",
]
