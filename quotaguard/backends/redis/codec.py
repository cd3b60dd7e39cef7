"""What the sync and async Redis backends share: arguments, replies and operations.

The operations are written once, as sans-I/O generators of the calls in
`quotaguard.backends.redis.calls` (re-exported here); what goes into a script and comes
out of it is in `quotaguard.backends.redis.encoding`, the scripts in
`quotaguard.backends.redis.scripts`.

The decision itself is built here by quotaguard.core, from the states the script
returns: the Lua reproduces the core's arithmetic to decide and store, and the core
builds the very `Decision` the memory backend would.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Collection
from typing import Any

import attrs

from quotaguard.clock import Clock
from quotaguard.core import engine
from quotaguard.core.audit import AUDIT_KEEP, AuditEntry
from quotaguard.core.catalogue import PlanCatalogue
from quotaguard.core.customer import NO_META, CustomerMeta
from quotaguard.core.decision import Decision, LimitStatus, Settlement
from quotaguard.core.errors import BackendUnavailable, LeaseError, shown
from quotaguard.core.pipeline import conclude, evaluate, resolve, viewed
from quotaguard.core.policy import Cost, Limit, Plan, charge
from quotaguard.core.request import Request

from .calls import Call as Call
from .calls import CommandCall as CommandCall
from .calls import NodesCall as NodesCall
from .calls import Operation as Operation
from .calls import ReserveCall as ReserveCall
from .calls import ScanCall as ScanCall
from .calls import ScriptCall as ScriptCall
from .calls import unavailable as unavailable
from .encoding import as_text, decode_meta, encode_meta, fmt, parse_state, plan_arg, plan_msgpack
from .keys import KeySchema, encode_id
from .scripts import SCRIPT_NAMES as SCRIPT_NAMES
from .scripts import SCRIPTS as SCRIPTS
from .scripts import script_source as script_source

_SCAN_COUNT = 1000
_MAX_RETRIES = 8
_NO_VERSION = ("", NO_META)
_new = tuple.__new__
_CACHE_SIZE = 10_000


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
        version = as_text(version) if version else ""
        meta = decode_meta(raw) if version else NO_META
        if version:
            if len(self._meta) >= _CACHE_SIZE:
                self._meta.clear()
            self._meta[customer] = (version, meta)
        else:
            self._meta.pop(customer, None)
        return meta

    # -- operations ------------------------------------------------------------------

    def _decide(self, catalogue: PlanCatalogue, request: Request) -> Operation[Decision]:
        customer, cost, _, _, now, lease, _ = request
        base, state_key, meta_key = self.keys.customer(customer)
        now_arg = self._now_arg(now)
        number = cost.__class__ is int or cost.__class__ is float
        cost_arg = fmt(cost) if number else ""  # type: ignore[arg-type]
        keys = [meta_key, state_key]
        for _ in range(_MAX_RETRIES):
            version, meta = self._meta.get(customer, _NO_VERSION) if self._meta else _NO_VERSION
            target: Any = resolve(catalogue, request, meta if version else None)
            if target.__class__ is Decision:  # revoked, once the version is confirmed
                reply = yield ScriptCall("decide", keys, ("p", version, now_arg, "0", b"\x90"))
                if reply[0] == 0:
                    self._remember(customer, reply[1], reply[2])
                    continue
                return target
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
            allowed, _, statuses, _ = evaluate(target, states, reply[1], cost, lease)
            if allowed is not (reply[2] == 1):
                raise BackendUnavailable(
                    f"redis: the decide script and quotaguard.core disagree for {customer!r}"
                )
            if allowed and token:
                if len(self._owners) >= _CACHE_SIZE:
                    self._owners.clear()
                self._owners[token] = owner
            return conclude(request, target, meta if version else None, allowed, statuses)
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
                raise LeaseError(f"unknown or expired lease {shown(lease_id)}")
            owner = as_text(raw)
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
            raise LeaseError(f"unknown or expired lease {shown(lease_id)}")
        if reply[0] == 1:
            return Settlement(lease_id, estimate, json.loads(as_text(reply[1])), True)
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
            target = viewed(catalogue, meta if version else None, plan, scope)
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
                [as_text(version) if version else "", new_version, payload],
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
        return [AuditEntry.from_dict(json.loads(as_text(item))) for item in raw]

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
                    customer = self.keys.customer_of(as_text(key))
                    if customer is not None:
                        found[customer] = None
                        if len(found) >= count:
                            return list(found)
                if not cursor:
                    break
        return list(found)
