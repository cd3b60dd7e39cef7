"""Junk at every public entry point: only documented errors come out, nothing stored changes.

Every argument of every public method of Guard / AsyncGuard (through the contract
suite's views), Lease / AsyncLease and PlanCatalogue gets, in turn, junk: huge ints,
NaN, infinities, bools, bytes, str subclasses, containers, objects. A call either
succeeds or raises a `QuotaguardError`; when it raises, the customers' usage, settings
and audit trails are exactly as before.
"""

from __future__ import annotations

import contextlib
import enum
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quotaguard import (
    Concurrency,
    InvalidRequestError,
    Plan,
    PlanCatalogue,
    QuotaguardError,
    RollingWindow,
    TokenBucket,
)
from quotaguard.cli import check_limit_name


class Name(str):
    """A str subclass, as an enum or a framework might hand over."""


class Colour(enum.StrEnum):
    FREE = "free"


class Unhashable:
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "<unhashable " + "x" * 500 + ">"  # a long repr, cut in messages


PLANS = [
    Plan("free", [TokenBucket("burst", 5, "1/second"), RollingWindow("weekly", 50, "1 hour")]),
    Plan("bench", [Concurrency("burst", 2), RollingWindow("weekly", 50, "1 hour")]),
]
CUSTOMERS = ("c", "d")

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([10**400, -(10**400), 2**53 + 1, 2**64, -1, 0, 1, 10**20]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=6),
    st.text(max_size=6),
    st.sampled_from(
        [
            "",
            " ",
            "\ud800",
            "x" * 2000,
            "free",
            "burst",
            "bench",
            Name("free"),
            Name(""),
            Colour.FREE,
            "5/second",
            "9" * 5000,
            "1e400",
        ]
    ),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=3), st.one_of(st.integers(), st.floats()), max_size=2),
    st.sampled_from(
        [
            {"tokens": math.nan},
            {"tokens": -1},
            {b"tokens": 1},
            {1: 2},
            {"benchmark": "nope"},
            {"bench": "bench"},
            {"tokens": 10**400},
            object(),
            Unhashable(),
            set(),
            frozenset({"burst"}),
            (1, 2),
            [["bench", "bench"]],
        ]
    ),
)


def valid(name: str) -> Any:
    return {
        "customer": "c",
        "cost": 1,
        "scope": None,
        "plan": None,
        "ttl": None,
        "lease_id": "nope",
        "actual": 1,
        "count": 5,
        "limit": "burst",
        "value": 3,
        "reason": "r",
        "allow_scopes": None,
        "actor": None,
        "shadow": None,
        "limits": None,
    }[name]


CALLS: dict[str, tuple[str, ...]] = {
    "acquire": ("customer", "cost", "scope", "plan"),
    "reserve": ("customer", "cost", "scope", "plan", "ttl"),
    "settle": ("lease_id", "actual", "customer", "plan"),
    "usage": ("customer", "scope", "plan"),
    "customer": ("customer",),
    "customers": ("count",),
    "audit": ("customer", "count"),
    "assign": ("customer", "plan", "actor"),
    "override": ("customer", "limit", "value", "plan", "actor"),
    "revoke": ("customer", "reason", "allow_scopes", "actor"),
    "restore": ("customer", "actor"),
    "set_shadow": ("customer", "shadow", "actor"),
    "reset": ("customer", "limits", "actor"),
}
POSITIONAL = {
    "acquire": 2,
    "reserve": 2,
    "settle": 2,
    "usage": 1,
    "customer": 1,
    "customers": 1,
    "audit": 2,
    "assign": 2,
    "override": 3,
    "revoke": 2,
    "restore": 1,
    "set_shadow": 2,
    "reset": 2,
}


def snapshot(guard: Any) -> Any:
    """Everything stored about the customers, as the public API shows it."""
    seen = []
    for customer in CUSTOMERS:
        meta = guard.customer(customer)
        usages = []
        if meta.revocation is None:
            usages = [guard.usage(customer, plan=plan.name).limits for plan in PLANS]
        seen.append((repr(meta), usages, [e.detail for e in guard.audit(customer, 1000)]))
    return seen


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_junk_at_any_argument_raises_a_documented_error_and_changes_nothing(make_guard, data):
    guard = make_guard(PLANS, default_plan="free")
    guard.acquire("c", 2)
    guard.reserve("c", 1)
    method = data.draw(st.sampled_from(sorted(CALLS)))
    names = CALLS[method]
    bad = data.draw(st.sampled_from(names))
    arguments = {name: data.draw(junk) if name == bad else valid(name) for name in names}
    before = snapshot(guard)
    args = [arguments[name] for name in names[: POSITIONAL[method]]]
    kwargs = {name: arguments[name] for name in names[POSITIONAL[method] :]}
    try:
        getattr(guard, method)(*args, **kwargs)
    except QuotaguardError as error:
        assert len(str(error)) < 1000
        assert snapshot(guard) == before, (method, arguments)


@settings(max_examples=60, deadline=None)
@given(actual=junk, on_exit=junk)
def test_junk_given_to_a_lease_raises_a_documented_error(actual, on_exit):
    from quotaguard import Guard

    guard = Guard(PLANS, default_plan="free")
    lease = guard.reserve("c", 1)
    for call in (lambda: lease.settle(actual), lambda: lease.policy(on_exit=on_exit)):
        with contextlib.suppress(QuotaguardError):
            call()
    with pytest.raises(InvalidRequestError):
        lease.settle(math.nan)


@settings(max_examples=80, deadline=None)
@given(first=junk, second=junk)
def test_junk_given_to_a_catalogue_raises_a_documented_error(first, second):
    catalogue = PlanCatalogue(PLANS, default="free")
    calls = [
        lambda: PlanCatalogue(first, second),
        lambda: PlanCatalogue(PLANS, default=first),
        lambda: catalogue[first],
        lambda: catalogue.get(first),
        lambda: first in catalogue,
        lambda: catalogue.assigned(first, second),
        lambda: PlanCatalogue.from_toml_string(first),
        lambda: PlanCatalogue.from_dict(first),
        lambda: PlanCatalogue.from_dict({"plans": {"p": {"x": first}}}),
        lambda: PlanCatalogue.from_dict({"plans": {"p": {"x": {"kind": first}}}}),
        lambda: PlanCatalogue.from_toml(first),
        lambda: check_limit_name(catalogue, first),
    ]
    for call in calls:
        try:
            call()
        except QuotaguardError:
            pass
        except SystemExit:  # pragma: no cover - the CLI helpers never exit
            raise
        except Exception as error:
            if type(error).__name__ != "CLIError":
                raise
