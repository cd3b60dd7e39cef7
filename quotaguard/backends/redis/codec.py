"""What the sync and async Redis backends share: arguments, replies and operations.

The operations are written once, as sans-I/O generators.

An operation is a generator that yields calls (`ScriptCall`, `CommandCall`,
`ReserveCall`) and receives each call's reply; the sync backend answers with
``client...(...)``, the async one with ``await client...(...)``. That is the only
difference between them.

The decision itself is built here by quotaguard.core, from the states the script
returns: the Lua reproduces the core's arithmetic to decide and store, and the core
builds the very `Decision` the memory backend would.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Collection, Generator, Sequence
from importlib import resources
from typing import Any, NamedTuple, TypeVar

import attrs

from quotaguard.backends.base import LeaseRequest
from quotaguard.clock import Clock
from quotaguard.core import engine, rolling_window
from quotaguard.core.audit import AUDIT_KEEP, AuditEntry
from quotaguard.core.catalogue import PlanCatalogue
from quotaguard.core.customer import NO_META, CustomerMeta, Revocation, resolve
from quotaguard.core.decision import Decision, LimitStatus, Outcome, Settlement
from quotaguard.core.errors import BackendUnavailable, LeaseError
from quotaguard.core.meaning import meaning
from quotaguard.core.policy import (
    Concurrency,
    Cost,
    Limit,
    Plan,
    RollingWindow,
    TokenBucket,
    charge,
)
from quotaguard.core.rates import Rate

from .keys import KeySchema, encode_id

_SCAN_COUNT = 1000

T = TypeVar("T")

SCRIPT_NAMES = ("decide", "settle", "meta", "audit", "reset")
"""The Lua scripts, one ``<name>.lua`` file each beside this module."""

_MAX_RETRIES = 8
_NO_VERSION = ("", NO_META)
_new = tuple.__new__
_CACHE_SIZE = 10_000


_WITH_STATE = ("decide", "settle", "reset")
"""The scripts that read or write the state string: ``state.lua`` goes in front of them."""


def script_source(name: str) -> str:
    """The text of the Lua script ``name`` (with ``state.lua`` in front where it is used)."""
    files = resources.files(__package__)
    source = files.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    if name in _WITH_STATE:
        source = files.joinpath("state.lua").read_text(encoding="utf-8") + source
    return source


SCRIPTS = {name: script_source(name) for name in SCRIPT_NAMES}
"""Script name -> Lua source."""


class ScriptCall(NamedTuple):
    """Run a registered script (EVALSHA, reloaded transparently after NOSCRIPT).

    A named tuple: the cheapest object to build on the decision path.
    """

    script: str
    keys: list[str]
    args: Sequence[str | bytes]


@attrs.frozen
class CommandCall:
    """Run one plain command, e.g. ``("HMGET", key, "v", "m")``."""

    args: tuple[str, ...]


@attrs.frozen
class ReserveCall:
    """A decide script and a SET of the lease owner, pipelined in one round trip."""

    call: ScriptCall
    owner_key: str
    owner: str
    px: int


@attrs.frozen
class NodesCall:
    """The nodes to scan: ``[None]`` on a standalone server, every primary on a cluster."""


@attrs.frozen
class ScanCall:
    """One ``SCAN`` page on ``node`` (None: the standalone server); replies (cursor, keys)."""

    node: Any
    cursor: int
    match: str
    count: int


Call = ScriptCall | CommandCall | ReserveCall | NodesCall | ScanCall
Operation = Generator[Call, Any, T]


def unavailable(error: BaseException) -> BackendUnavailable:
    """The `BackendUnavailable` raised for a redis-py error (chain it with ``from``)."""
    return BackendUnavailable(f"redis: {error.__class__.__name__}: {error}")


# -- numbers and states --------------------------------------------------------------


def fmt(value: float) -> str:
    """A number as text that Lua's tonumber reads back to the same double."""
    return repr(value)


def _text(raw: Any) -> str:
    return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)


def _num(value: Any) -> int | float:
    """A number from the script's reply: an integer, or exact text for the others."""
    if value.__class__ is int:
        return value
    return float(value)


def parse_state(limit: Limit, raw: Any) -> Any:
    """A limit's state, as quotaguard.core holds it, from the decide script's reply."""
    if raw is None:
        return None
    kind = limit.__class__
    if kind is TokenBucket:
        if raw.__class__ is list:
            return (int(raw[0]), float(raw[1]))
        return raw if raw.__class__ is int else int(raw)
    if kind is RollingWindow:
        return rolling_window.from_buckets(
            limit,  # type: ignore[arg-type]
            [value if value.__class__ is int else float(value) for value in raw],
        )
    slots: list[str | float] = []
    for entry in _text(raw).split(";")[:-1]:
        token, _, expiry = entry.partition(",")
        slots += (token, int(expiry))
    return tuple(slots) if slots else None


# -- plans and settings --------------------------------------------------------------


def section_name(limit: Limit) -> str:
    """The name of a limit's section in the state string: ``name|meaning``."""
    return f"{limit.name}|{meaning(limit)}"


def limit_args(limit: Limit) -> str:
    """A limit as the scripts read it: ``"kind name|meaning a b c "`` (see decide.lua)."""
    name = section_name(limit)
    if isinstance(limit, TokenBucket):
        return f"t {name} {fmt(limit.interval_us)} {limit.capacity} 0 "
    if isinstance(limit, RollingWindow):
        return f"r {name} {limit.quota} {limit.window_us} {limit.granularity_us} "
    return f"c {name} {limit.max_in_flight} {limit.lease_ttl_us} 0 "


def plan_arg(limits: tuple[Limit, ...]) -> str:
    """A plan's limits as text: ``"kind name|meaning a b c "`` per limit.

    The lease owner record keeps this text; `plan_msgpack` turns it into what the
    scripts read.
    """
    return "".join(limit_args(limit) for limit in limits)


def _msgpack(value: str | int | float) -> bytes:
    if isinstance(value, str):
        raw = value.encode("ascii")
        return (bytes((0xA0 | len(raw),)) if len(raw) < 32 else bytes((0xD9, len(raw)))) + raw
    if isinstance(value, int) and 0 <= value < 128:
        return bytes((value,))
    if isinstance(value, int) and 0 <= value < 2**64:
        return b"\xcf" + struct.pack(">Q", value)
    return b"\xcb" + struct.pack(">d", float(value))


def plan_msgpack(text: str) -> bytes:
    """A plan's text (`plan_arg`) as every script reads it, decoded in C by ``cmsgpack``.

    One MessagePack array, five items per limit: kind, name|meaning, a, b, c (see
    decide.lua). The one plan encoding of the scripts.
    """
    items: list[str | int | float] = []
    words = text.split()
    for at in range(0, len(words), 5):
        kind, name, a, b, c = words[at : at + 5]
        items += (kind, name, *(int(x) if x.isdigit() else float(x) for x in (a, b, c)))
    size = len(items)
    head = bytes((0x90 | size,)) if size < 16 else b"\xdc" + struct.pack(">H", size)
    return head + b"".join(_msgpack(item) for item in items)


def _limit_json(limit: Limit) -> dict[str, Any]:
    if isinstance(limit, TokenBucket):
        return {
            "k": "t",
            "n": limit.name,
            "c": limit.capacity,
            "a": limit.refill.amount,
            "p": limit.refill.period_us,
            "u": limit.unit,
        }
    if isinstance(limit, RollingWindow):
        return {
            "k": "r",
            "n": limit.name,
            "q": limit.quota,
            "w": limit.window_us,
            "g": limit.granularity_us,
            "u": limit.unit,
        }
    return {
        "k": "c",
        "n": limit.name,
        "m": limit.max_in_flight,
        "t": limit.lease_ttl_us,
        "u": limit.unit,
    }


def _limit_from_json(data: dict[str, Any]) -> Limit:
    kind = data["k"]
    if kind == "t":
        return TokenBucket(data["n"], data["c"], Rate(data["a"], data["p"]), unit=data["u"])
    if kind == "r":
        return RollingWindow(data["n"], data["q"], data["w"] / 1e6, data["g"] / 1e6, unit=data["u"])
    return Concurrency(data["n"], data["m"], data["t"] / 1e6, unit=data["u"])


def encode_meta(meta: CustomerMeta) -> str:
    """A customer's settings as JSON ('' for the defaults)."""
    if meta == NO_META:
        return ""
    revocation = meta.revocation
    return json.dumps(
        {
            "p": meta.plan,
            "o": [_limit_json(limit) for limit in meta.overrides],
            "r": None
            if revocation is None
            else {
                "reason": revocation.reason,
                "scopes": [list(pair) for pair in revocation.allow_scopes],
                "at": revocation.revoked_at,
            },
            "s": meta.shadow,
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def decode_meta(raw: Any) -> CustomerMeta:
    """A customer's settings from their JSON (None or '' for the defaults)."""
    if not raw:
        return NO_META
    data = json.loads(_text(raw))
    revocation = data["r"]
    return CustomerMeta(
        plan=data["p"],
        overrides=tuple(_limit_from_json(item) for item in data["o"]),
        revocation=None
        if revocation is None
        else Revocation(revocation["reason"], dict(revocation["scopes"]), revocation["at"]),
        shadow=data["s"],
    )


@attrs.frozen
class _Unit:
    """Stands in for a limit where only its unit matters (`charge`)."""

    unit: str


def _json(cost: Cost) -> str:
    return json.dumps(cost, separators=(",", ":"))


def _owner(base: str, cost: Cost, limits: tuple[Limit, ...], plan: str) -> str:
    """What the lease owner key holds: where the lease lives and what it reserved."""
    units = ",".join(limit.unit for limit in limits)
    return "\n".join((base, _json(cost), units, plan))


# -- the shared backend --------------------------------------------------------------


class RedisBackendBase:
    """The state and the operations shared by `RedisBackend` and `AsyncRedisBackend`.

    Plan resolution: the customer's settings live in their own hash-tagged key with a
    version. The guard's process resolves the plan from the settings it last saw
    (cached per customer) and sends that version; the script checks it in the same
    round trip and, if the settings changed, answers with the new ones instead of
    deciding, and the call is resolved again and retried.
    """

    name = "redis"

    def __init__(self, prefix: str = "qg", clock: Clock | None = None) -> None:
        self.keys = KeySchema(prefix)
        """The key names."""
        self.clock = clock
        """The clock used when a call passes no time; None: the Redis server's TIME."""
        self._meta: dict[str, tuple[str, CustomerMeta]] = {}
        self._plans: dict[int, tuple[Plan, str, bytes]] = {}
        self._owners: dict[str, str] = {}

    # -- helpers ---------------------------------------------------------------------

    def _now_arg(self, now: int | None) -> str:
        if now is None:
            if self.clock is None:
                return ""
            now = self.clock.now_us()
        return str(now)

    def _plan_arg(self, plan: Plan) -> tuple[Plan, str, bytes]:
        """(plan, its text for settle.lua, its MessagePack for decide.lua), cached."""
        cached = self._plans.get(id(plan))
        if cached is not None and cached[0] is plan:
            return cached
        text = plan_arg(plan.limits)
        cached = (plan, text, plan_msgpack(text))
        if len(self._plans) >= 1024:
            self._plans.clear()
        self._plans[id(plan)] = cached
        return cached

    def _remember(self, customer: str, version: Any, raw: Any) -> CustomerMeta:
        version = _text(version) if version else ""
        meta = decode_meta(raw) if version else NO_META
        if version:
            if len(self._meta) >= _CACHE_SIZE:
                self._meta.clear()
            self._meta[customer] = (version, meta)
        else:
            self._meta.pop(customer, None)
        return meta

    # -- operations ------------------------------------------------------------------

    def _decide(
        self,
        catalogue: PlanCatalogue,
        customer: str,
        cost: Cost,
        scope: str | None,
        plan: str | None,
        now: int | None,
        lease: LeaseRequest | None,
        shadow: bool,
    ) -> Operation[Decision]:
        base, state_key, meta_key = self.keys.customer(customer)
        now_arg = self._now_arg(now)
        number = cost.__class__ is int or cost.__class__ is float
        cost_arg = fmt(cost) if number else ""  # type: ignore[arg-type]
        keys = [meta_key, state_key]
        for _ in range(_MAX_RETRIES):
            version, meta = self._meta.get(customer, _NO_VERSION) if self._meta else _NO_VERSION
            target: Any = catalogue.get(plan) if not version else None
            if target is None:
                target = resolve(catalogue, meta if version else None, plan, scope)
            if target.__class__ is Revocation:
                reply = yield ScriptCall("decide", keys, ("p", version, now_arg, "0", b"\x90"))
                if reply[0] == 0:
                    self._remember(customer, reply[1], reply[2])
                    continue
                return engine.revoked(customer, scope, cost, target.reason)
            limits = target.limits
            _, plan_text, plan_arg = self._plan_arg(target)
            if not number:
                cost_arg = " ".join([fmt(charge(limit, cost)) for limit in limits])
            if lease is None:
                reply = yield ScriptCall(
                    "decide", keys, ("d", version, now_arg, cost_arg, plan_arg)
                )
                token = ""
            else:
                token = encode_id(lease[0])
                record_ttl = engine.lease_ttl(limits, lease[1])
                owner = _owner(base, cost, limits, plan_text)
                reply = yield ReserveCall(
                    ScriptCall(
                        "decide",
                        [meta_key, state_key, self.keys.lease(base, token)],
                        (
                            "d",
                            version,
                            now_arg,
                            cost_arg,
                            plan_arg,
                            token,
                            "" if lease[1] is None else str(lease[1]),
                            str(record_ttl),
                        ),
                    ),
                    self.keys.lease_owner(token),
                    owner,
                    max(1, math.ceil(2 * record_ttl / 1000)),
                )
            if reply[0] == 0:
                self._remember(customer, reply[1], reply[2])
                continue
            states = [parse_state(limit, reply[3 + index]) for index, limit in enumerate(limits)]
            allowed, _, statuses, _ = engine.evaluate_plan(target, states, reply[1], cost, lease)
            if allowed is not (reply[2] == 1):
                raise BackendUnavailable(
                    f"redis: the decide script and quotaguard.core disagree for {customer!r}"
                )
            if allowed:
                if token:
                    if len(self._owners) >= _CACHE_SIZE:
                        self._owners.clear()
                    self._owners[token] = owner
                return _new(
                    Decision,
                    (
                        True,
                        Outcome.ALLOWED,
                        customer,
                        target.name,
                        scope,
                        cost,
                        statuses,
                        0.0,
                        None,
                    ),
                )
            if version and meta.shadow is not None:
                shadow = bool(meta.shadow)
            else:
                shadow = bool(shadow or target.shadow)
            return engine.decision(customer, target, scope, cost, allowed, statuses, shadow)
        raise BackendUnavailable(f"redis: the settings of {customer!r} keep changing")

    def _settle(
        self,
        lease_id: str,
        actual: Cost,
        now: int | None,
        changed: Callable[[str], None] | None = None,
    ) -> Operation[Settlement]:
        """Settle ``lease_id``; ``changed`` is told the customer whose usage it changes."""
        token = encode_id(lease_id)
        owner = self._owners.pop(token, None)
        if owner is None:
            raw = yield CommandCall(("GET", self.keys.lease_owner(token)))
            if raw is None:
                raise LeaseError(f"unknown or expired lease {lease_id!r}")
            owner = _text(raw)
        base, estimate_json, units, plan = owner.split("\n")
        if changed is not None:
            customer = self.keys.customer_of(base + ":s")
            if customer is not None:
                changed(customer)
        estimate = json.loads(estimate_json)
        deltas = " ".join(
            [
                fmt(charge(_Unit(unit), actual) - charge(_Unit(unit), estimate))  # type: ignore[arg-type]
                for unit in units.split(",")
                if unit
            ]
        )
        reply = yield ScriptCall(
            "settle",
            [self.keys.lease(base, token), base + ":s"],
            [self._now_arg(now), _json(actual), token, plan_msgpack(plan), deltas],
        )
        if reply[0] == 0:
            raise LeaseError(f"unknown or expired lease {lease_id!r}")
        if reply[0] == 1:
            return Settlement(lease_id, estimate, json.loads(_text(reply[1])), True)
        return Settlement(lease_id, estimate, actual, False)

    def _peek(
        self,
        catalogue: PlanCatalogue,
        customer: str,
        scope: str | None,
        plan: str | None,
        now: int | None,
    ) -> Operation[tuple[str, tuple[LimitStatus, ...]]]:
        _, state_key, meta_key = self.keys.customer(customer)
        now_arg = self._now_arg(now)
        for _ in range(_MAX_RETRIES):
            version, meta = self._meta.get(customer, _NO_VERSION)
            if meta.revocation is not None and meta.revocation.plan_for(scope) is None:
                meta = attrs.evolve(meta, revocation=None)
            target = resolve(catalogue, meta if version else None, plan, scope)
            assert isinstance(target, Plan)
            reply = yield ScriptCall(
                "decide",
                [meta_key, state_key],
                ("p", version, now_arg, "0", self._plan_arg(target)[2]),
            )
            if reply[0] == 0:
                self._remember(customer, reply[1], reply[2])
                continue
            limits = target.limits
            states = [parse_state(limit, reply[3 + index]) for index, limit in enumerate(limits)]
            return target.name, engine.peek(limits, states, int(reply[1]))
        raise BackendUnavailable(f"redis: the settings of {customer!r} keep changing")

    def _load_meta(self, customer: str) -> Operation[CustomerMeta]:
        meta_key = self.keys.customer(customer)[2]
        version, raw = yield CommandCall(("HMGET", meta_key, "v", "m"))
        return self._remember(customer, version, raw)

    def _update_meta(self, customer: str, change: Any) -> Operation[CustomerMeta]:
        meta_key = self.keys.customer(customer)[2]
        version, raw = yield CommandCall(("HMGET", meta_key, "v", "m"))
        for _ in range(_MAX_RETRIES * 4):
            current = self._remember(customer, version, raw)
            new = change(current)
            new_version = os.urandom(8).hex()
            payload = encode_meta(new)
            reply = yield ScriptCall(
                "meta",
                [meta_key],
                [_text(version) if version else "", new_version, payload],
            )
            if reply[0] == 1:
                self._remember(customer, new_version if payload else "", payload)
                return new  # type: ignore[no-any-return]
            version, raw = reply[1], reply[2]
        raise BackendUnavailable(f"redis: the settings of {customer!r} keep changing")

    def _reset(self, customer: str, limits: Collection[str] | None) -> Operation[None]:
        state_key = self.keys.customer(customer)[1]
        if limits is None:
            yield CommandCall(("DEL", state_key))
        elif limits:
            yield ScriptCall("reset", [state_key], sorted(limits))

    def _record_audit(self, customer: str, entry: AuditEntry) -> Operation[None]:
        payload = json.dumps(entry.to_dict(), separators=(",", ":"), ensure_ascii=False)
        yield ScriptCall("audit", [self.keys.audit(customer)], [payload, str(AUDIT_KEEP)])

    def _audit(self, customer: str, count: int) -> Operation[list[AuditEntry]]:
        if count <= 0:
            return []
        raw = yield CommandCall(("LRANGE", self.keys.audit(customer), "0", str(count - 1)))
        return [AuditEntry.from_dict(json.loads(_text(item))) for item in raw]

    def _list_customers(self, count: int) -> Operation[list[str]]:
        found: dict[str, None] = {}
        if count <= 0:
            return []
        match = self.keys.customers_pattern()
        nodes = yield NodesCall()
        for node in nodes:
            cursor = 0
            while True:
                cursor, keys = yield ScanCall(node, cursor, match, _SCAN_COUNT)
                for key in keys:
                    customer = self.keys.customer_of(_text(key))
                    if customer is not None:
                        found[customer] = None
                        if len(found) >= count:
                            return list(found)
                if not cursor:
                    break
        return list(found)
