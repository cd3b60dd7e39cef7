"""Every command of the operator CLI, in-process, on one shared memory backend."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from quotaguard import CustomerMeta, Guard, MemoryBackend, PlanCatalogue
from quotaguard.cli import EXIT_CONFIG, EXIT_ERROR, EXIT_INVALID, EXIT_OK, EXIT_USAGE, main

from .conftest import PLANS, Run


@pytest.fixture
def guard(backend: MemoryBackend) -> Guard:
    return Guard(PlanCatalogue.from_toml_string(PLANS), backend)


def state(backend: MemoryBackend, customer: str) -> tuple[CustomerMeta, list[object]]:
    return backend.load_meta(customer), backend.audit(customer, 100)


# -- usage ---------------------------------------------------------------------------


def test_usage_prints_an_aligned_table(cli: Run, guard: Guard) -> None:
    for _ in range(3):
        guard.acquire("acme", {"tokens": 1500})
    result = cli("usage", "acme")
    assert result.code == EXIT_OK, result.err
    lines = result.out.splitlines()
    assert lines[0] == "customer acme (plan free)"
    assert lines[1].split() == (
        [
            "limit",
            "kind",
            "unit",
            "used",
            "quota",
            "remaining",
            "used%",
            "refill",
            "in",
            "resets",
            "in",
        ]
    )
    assert set(lines[2]) == {"-", " "}
    burst, weekly = lines[3].split(), lines[4].split()
    assert burst[:7] == ["burst", "token_bucket", "requests", "3", "10", "7", "30%"]
    assert weekly[:7] == ["weekly", "rolling_window", "tokens", "4,500", "100,000", "95,500", "4%"]
    assert burst[-1] == "3s" and weekly[-1] == "7d01h"  # one hour bucket past a week
    # right-aligned numbers: every row has the same width up to the last column
    assert len({line.index("%") for line in lines[3:5]}) == 1
    assert result.err == ""  # an injected backend: no memory:// warning


def test_usage_json_shape(cli: Run, guard: Guard) -> None:
    guard.acquire("acme", {"tokens": 1500})
    guard.override("acme", "burst", 20)
    document = cli("usage", "acme", "--json").json()
    assert document == {
        "customer": "acme",
        "plan": "free",
        "assigned_plan": None,
        "shadow": None,
        "overrides": ["burst"],
        "revocation": None,
        "limits": [
            {
                "name": "burst",
                "kind": "token_bucket",
                "unit": "requests",
                "quota": 20,
                "used": 1.0,
                "remaining": 19,
                "utilization": 0.05,
                "refill_after": 1.0,
                "reset_after": 1.0,
            },
            {
                "name": "weekly",
                "kind": "rolling_window",
                "unit": "tokens",
                "quota": 100_000,
                "used": 1500,
                "remaining": 98_500,
                "utilization": 0.015,
                "refill_after": document["limits"][1]["refill_after"],
                "reset_after": document["limits"][1]["reset_after"],
            },
        ],
    }
    assert 604_800 <= document["limits"][1]["reset_after"] <= 604_800 + 3600  # 1 h buckets


def test_an_overridden_quota_keeps_the_window(cli: Run, guard: Guard) -> None:
    guard.acquire("acme", {"tokens": 1500})
    assert cli("override", "acme", "weekly", "200000").code == EXIT_OK
    weekly = cli("usage", "acme", "--json").json()["limits"][1]
    assert weekly["quota"] == 200_000
    assert weekly["reset_after"] <= 604_800 + 3600


def test_usage_shows_a_revocation(cli: Run, guard: Guard) -> None:
    guard.revoke("acme", "Billing review.", allow_scopes={"benchmark": "benchmark"})
    result = cli("usage", "acme")
    assert "REVOKED: Billing review. (still allowed: benchmark on benchmark)" in result.out
    document = cli("usage", "acme", "--json").json()
    assert document["revocation"]["reason"] == "Billing review."
    assert document["revocation"]["allow_scopes"] == {"benchmark": "benchmark"}


def test_usage_of_an_unknown_customer_exits_4(cli: Run) -> None:
    result = cli("usage", "nobody")
    assert result.code == EXIT_INVALID
    assert result.out == ""
    assert result.err == (
        "quotaguard: error: unknown customer 'nobody': nothing is stored about it "
        "(no usage, settings or audit entries)\n"
    )


def test_usage_with_an_unknown_plan_exits_4(cli: Run, guard: Guard) -> None:
    guard.acquire("acme")
    result = cli("usage", "acme", "--plan", "gold")
    assert result.code == EXIT_INVALID
    assert result.err.startswith("quotaguard: error: unknown plan 'gold'")


# -- top -----------------------------------------------------------------------------


def test_top_ranks_customers_nearest_their_caps(cli: Run, guard: Guard) -> None:
    guard.acquire("light", {"tokens": 1000})
    guard.acquire("heavy", {"tokens": 90_000})
    guard.assign("pro-user", "pro")
    guard.acquire("pro-user", {"tokens": 90_000})
    document = cli("top", "--limit", "weekly", "--json").json()
    assert document["limit"] == "weekly"
    rows = document["customers"]
    assert [row["customer"] for row in rows] == ["heavy", "pro-user", "light"]
    assert rows[0] == {
        "customer": "heavy",
        "plan": "free",
        "limit": "weekly",
        "unit": "tokens",
        "used": 90_000,
        "quota": 100_000,
        "remaining": 10_000,
        "utilization": 0.9,
        "reset_after": rows[0]["reset_after"],
        "revoked": False,
    }
    assert cli("top", "--count", "1", "--json").json()["customers"][0]["customer"] == "heavy"
    table = cli("top").out.splitlines()
    assert table[0].split() == [
        "customer",
        "plan",
        "limit",
        "used",
        "quota",
        "used%",
        "resets",
        "in",
    ]
    assert table[2].split()[:6] == ["heavy", "free", "weekly", "90,000", "100,000", "90%"]


def test_top_with_no_customers(cli: Run) -> None:
    assert cli("top").out == "no customers with stored usage\n"
    assert cli("top", "--json").json() == {"limit": None, "customers": []}


def test_top_rejects_an_unknown_limit_and_a_bad_count(cli: Run) -> None:
    result = cli("top", "--limit", "monthly")
    assert (result.code, result.err) == (
        EXIT_INVALID,
        "quotaguard: error: unknown limit 'monthly'; the plans have bench_daily, burst, weekly\n",
    )
    assert cli("top", "--count", "0").code == EXIT_USAGE
    assert cli("top", "--count", "x").code == EXIT_USAGE


# -- assign --------------------------------------------------------------------------


def test_assign_changes_the_plan_and_records_who(cli: Run, backend: MemoryBackend) -> None:
    result = cli("assign", "acme", "pro", "--actor", "alice")
    assert result.code == EXIT_OK
    assert result.out == (
        "customer acme: assigned to plan pro (recorded in the audit trail as alice)\n"
    )
    assert backend.load_meta("acme").plan == "pro"
    [entry] = backend.audit("acme", 10)
    assert (entry.actor, entry.action, entry.detail) == ("alice", "assign", "plan=pro")
    assert cli("assign", "acme", "none").code == EXIT_OK
    assert backend.load_meta("acme").plan is None


def test_the_default_actor_is_cli_and_the_user(
    cli: Run, backend: MemoryBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.setenv(name, "carol")
    cli("assign", "acme", "pro")
    assert backend.audit("acme", 1)[0].actor == "cli:carol"


def test_assign_an_unknown_plan_changes_nothing(cli: Run, backend: MemoryBackend) -> None:
    result = cli("assign", "acme", "gold")
    assert result.code == EXIT_INVALID
    assert result.err == (
        "quotaguard: error: unknown plan 'gold'; the catalogue has benchmark, free, pro\n"
    )
    assert state(backend, "acme") == (CustomerMeta(), [])


# -- override ------------------------------------------------------------------------


def test_override_with_a_quota_a_rate_and_none(cli: Run, guard: Guard) -> None:
    assert cli("override", "acme", "weekly", "250000").code == EXIT_OK
    assert guard.usage("acme").limit("weekly").quota == 250_000
    assert cli("override", "acme", "burst", "5/second").code == EXIT_OK
    assert guard.usage("acme").limit("burst").limit.refill.amount == 5
    result = cli("override", "acme", "weekly", "none")
    assert result.out.startswith("customer acme: override of weekly removed")
    assert guard.usage("acme").limit("weekly").quota == 100_000
    details = [entry.detail for entry in guard.audit("acme")]
    assert details == ["weekly=removed", "burst=5/second", "weekly=250000"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("acme", "monthly", "5"), "plan 'free' has no limit 'monthly'; it has burst, weekly"),
        (("acme", "weekly", "0"), "a quota must be a positive integer, got '0'"),
        (("acme", "weekly", "-5"), "a quota must be a positive integer, got '-5'"),
        (("acme", "weekly", "lots"), "cannot parse rate 'lots'"),
        (("acme", "weekly", "none"), "customer 'acme' has no override of limit 'weekly'"),
        (("acme", "weekly", "5", "--plan", "gold"), "unknown plan 'gold'"),
    ],
)
def test_override_rejects_bad_arguments_without_changing_anything(
    cli: Run, backend: MemoryBackend, argv: tuple[str, ...], message: str
) -> None:
    result = cli("override", *argv)
    assert result.code == EXIT_INVALID
    assert result.err.startswith("quotaguard: error: ")
    assert message in result.err
    assert result.err.count("\n") == 1
    assert state(backend, "acme") == (CustomerMeta(), [])


# -- revoke and restore --------------------------------------------------------------


def test_revoke_and_restore(cli: Run, guard: Guard, backend: MemoryBackend) -> None:
    result = cli(
        "revoke", "acme", "--reason", "ToS review.", "--allow-scope", "benchmark=benchmark",
        "--actor", "ops",
    )  # fmt: skip
    assert result.code == EXIT_OK, result.err
    assert "still allowed: benchmark on plan benchmark" in result.out
    assert guard.acquire("acme").revoked
    assert guard.acquire("acme", scope="benchmark").allowed
    [entry] = guard.audit("acme")
    assert (entry.action, entry.reason, entry.detail, entry.actor) == (
        "revoke", "ToS review.", "allow_scopes=benchmark:benchmark", "ops"
    )  # fmt: skip
    assert cli("restore", "acme").code == EXIT_OK
    assert guard.acquire("acme").allowed
    assert [entry.action for entry in guard.audit("acme")] == ["restore", "revoke"]


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (("--reason", "x", "--allow-scope", "benchmark=gold"), EXIT_INVALID, "unknown plan 'gold'"),
        (("--reason", "x", "--allow-scope", "benchmark"), EXIT_USAGE, "expected SCOPE=PLAN"),
        (("--reason", "x", "--allow-scope", "b@d=free"), EXIT_INVALID, "scope name 'b@d'"),
        (("--reason", "   "), EXIT_INVALID, "--reason must not be empty"),
        ((), EXIT_USAGE, "the following arguments are required: --reason"),
    ],
)
def test_revoke_rejects_bad_arguments_without_changing_anything(
    cli: Run, backend: MemoryBackend, argv: tuple[str, ...], code: int, message: str
) -> None:
    result = cli("revoke", "acme", *argv)
    assert result.code == code
    assert message in result.err
    assert result.err.startswith("quotaguard: error: ") and result.err.count("\n") == 1
    assert state(backend, "acme") == (CustomerMeta(), [])


def test_restore_of_a_customer_not_revoked_exits_4(cli: Run, backend: MemoryBackend) -> None:
    result = cli("restore", "acme")
    assert result.code == EXIT_INVALID
    assert result.err == "quotaguard: error: customer 'acme' is not revoked; nothing to restore\n"
    assert state(backend, "acme") == (CustomerMeta(), [])


# -- reset ---------------------------------------------------------------------------


def test_reset_one_limit_then_all(cli: Run, guard: Guard) -> None:
    guard.acquire("acme", {"tokens": 5000})
    assert cli("reset", "acme", "--limit", "burst").code == EXIT_OK
    usage = guard.usage("acme")
    assert (usage.limit("burst").used, usage.limit("weekly").used) == (0, 5000)
    assert cli("reset", "acme").code == EXIT_OK
    assert guard.usage("acme").limit("weekly").used == 0
    assert [entry.detail for entry in guard.audit("acme")] == ["limits=all", "limits=burst"]


def test_reset_rejects_unknown_limits_and_customers(
    cli: Run, guard: Guard, backend: MemoryBackend
) -> None:
    guard.acquire("acme", {"tokens": 5000})
    result = cli("reset", "acme", "--limit", "burst", "--limit", "monthly")
    assert result.code == EXIT_INVALID
    assert "unknown limit 'monthly'" in result.err
    assert guard.usage("acme").limit("burst").used == 1  # not even the valid one was reset
    assert backend.audit("acme", 10) == []
    assert cli("reset", "nobody").code == EXIT_INVALID
    assert state(backend, "nobody") == (CustomerMeta(), [])


# -- audit ---------------------------------------------------------------------------


def test_audit_lists_newest_first_as_a_table_and_json(cli: Run) -> None:
    cli("assign", "acme", "pro", "--actor", "alice")
    cli("override", "acme", "weekly", "9000000", "--actor", "bob")
    cli("revoke", "acme", "--reason", "Chargeback.", "--actor", "carol")
    lines = cli("audit", "acme").out.splitlines()
    assert lines[0].split() == ["time", "(UTC)", "actor", "action", "detail", "reason"]
    assert lines[2].split()[1:] == ["carol", "revoke", "allow_scopes=none", "Chargeback."]
    assert lines[4].split()[1:] == ["alice", "assign", "plan=pro"]
    document = cli("audit", "acme", "--json", "--count", "2").json()
    assert document["customer"] == "acme"
    assert [entry["actor"] for entry in document["entries"]] == ["carol", "bob"]
    entry = document["entries"][1]
    assert set(entry) == {"at", "time", "actor", "action", "detail", "reason"}
    assert entry["action"] == "override" and entry["detail"] == "weekly=9000000"
    assert entry["reason"] is None and entry["time"].endswith("Z")


def test_audit_of_an_unknown_customer_exits_4(cli: Run) -> None:
    assert cli("audit", "nobody").code == EXIT_INVALID
    assert cli("audit", "nobody", "--count", "0").code == EXIT_USAGE


def test_audit_of_a_customer_with_usage_but_no_changes(cli: Run, guard: Guard) -> None:
    guard.acquire("acme")
    assert cli("audit", "acme").out == "customer acme: no audit entries\n"
    assert cli("audit", "acme", "--json").json() == {"customer": "acme", "entries": []}


# -- plans check ---------------------------------------------------------------------


def test_plans_check_a_valid_file(cli: Run, plans_file: Path) -> None:
    result = cli("plans", "check", str(plans_file))
    assert result.code == EXIT_OK
    assert result.out.splitlines()[0] == f"{plans_file}: OK, 3 plan(s), default plan: free"
    document = cli("plans", "check", str(plans_file), "--json").json()
    assert document["valid"] is True and document["error"] is None
    assert document["default_plan"] == "free"
    assert document["plans"]["pro"]["limits"][1] == {
        "name": "weekly",
        "kind": "rolling_window",
        "quota": 5_000_000,
        "unit": "tokens",
        "window_seconds": 604_800,
    }


@pytest.mark.parametrize(
    "text",
    [
        PLANS.replace("100000/week", "100000/wek"),
        PLANS.replace('default_plan = "free"', 'default_plan = "gold"'),
        PLANS.replace("capacity = 10,", ""),
        "[plans.free\n",
    ],
)
def test_plans_check_prints_the_exact_error(cli: Run, tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(Exception) as raised:
        PlanCatalogue.from_toml(path)
    result = cli("plans", "check", str(path))
    assert result.code == EXIT_CONFIG
    assert result.err == f"quotaguard: error: {raised.value}\n"
    document = cli("plans", "check", str(path), "--json").json()
    assert document == {"file": str(path), "valid": False, "error": str(raised.value)}


def test_plans_check_a_missing_file(cli: Run, tmp_path: Path) -> None:
    result = cli("plans", "check", str(tmp_path / "nope.toml"))
    assert result.code == EXIT_CONFIG
    assert "cannot read plans file" in result.err


# -- options shared by every command ---------------------------------------------------


def test_an_invalid_plans_file_exits_3_for_every_command(cli: Run, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[plans]\n", encoding="utf-8")
    result = cli("assign", "acme", "pro", "--plans", str(path))
    assert result.code == EXIT_CONFIG
    assert result.err == f"quotaguard: error: {path}: no [plans.<name>] tables found\n"


def test_commands_that_need_plans_say_so(cli: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUOTAGUARD_PLANS")
    result = cli("usage", "acme")
    assert result.code == EXIT_USAGE
    assert result.err == (
        "quotaguard: error: usage needs the plans: give --plans FILE|MODULE:ATTR or set "
        "QUOTAGUARD_PLANS\n"
    )
    # restore and audit do not need them
    assert cli("audit", "nobody").code == EXIT_INVALID


def test_memory_storage_warns_on_stderr(cli: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    result = cli("top", shared=False)
    assert result.code == EXIT_OK
    assert result.err.startswith("quotaguard: warning: storage is memory://, which is private")
    monkeypatch.setenv("QUOTAGUARD_STORAGE", "memory://")
    assert "warning" in cli("top", shared=False).err


def test_a_bad_storage_uri_is_a_usage_error(cli: Run) -> None:
    result = cli("top", "--storage", "mongodb://x", shared=False)
    assert result.code == EXIT_USAGE
    assert result.err.startswith("quotaguard: error: --storage: unsupported storage URI")


@pytest.mark.parametrize("scheme", ["redis", "redis+cluster"])
def test_an_unreachable_backend_exits_1(cli: Run, scheme: str) -> None:
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # the cluster client reads the topology when it is built, the others at the first call
    storage = f"{scheme}://127.0.0.1:{port}/0?socket_connect_timeout=0.5"
    result = cli("usage", "acme", "--storage", storage, shared=False)
    assert result.code == EXIT_ERROR
    assert result.err.startswith("quotaguard: error: backend unavailable: redis: ")
    assert result.err.count("\n") == 1


@pytest.mark.parametrize(
    "argv",
    [[], ["frobnicate"], ["usage"], ["plans"], ["usage", "a", "--bogus"], ["top", "--count"]],
)
def test_argument_errors_exit_2_with_one_line(argv: list[str]) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(argv, stdout=out, stderr=err) == EXIT_USAGE
    assert out.getvalue() == ""
    assert err.getvalue().startswith("quotaguard: error: ")
    assert err.getvalue().count("\n") == 1


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == EXIT_OK
    assert "Exit codes: 0 ok" in capsys.readouterr().out
