"""What the scripts read and send: numbers, plans, limit states and customer settings."""

from __future__ import annotations

import json
import struct
from typing import Any

from quotaguard.core import rolling_window
from quotaguard.core.customer import NO_META, CustomerMeta, Revocation
from quotaguard.core.meaning import meaning
from quotaguard.core.policy import Concurrency, Limit, RollingWindow, TokenBucket
from quotaguard.core.rates import Rate

# -- numbers and states --------------------------------------------------------------


def fmt(value: float) -> str:
    """A number as text that Lua's tonumber reads back to the same double."""
    return repr(value)


def as_text(raw: Any) -> str:
    """A reply's bytes (or other value) as text."""
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
    for entry in as_text(raw).split(";")[:-1]:
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
    data = json.loads(as_text(raw))
    revocation = data["r"]
    return CustomerMeta(
        plan=data["p"],
        overrides=tuple(_limit_from_json(item) for item in data["o"]),
        revocation=None
        if revocation is None
        else Revocation(revocation["reason"], dict(revocation["scopes"]), revocation["at"]),
        shadow=data["s"],
    )
