"""`ClientIP`: identify a request by its client's address, behind trusted proxies only.

Part of `quotaguard.integrations.identify`, where it is also found.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TypeAlias

import attrs

from ._identity import Identity
from ._types import Scope

__all__ = ["ClientIP"]

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(values: Iterable[str | Network]) -> tuple[Network, ...]:
    if isinstance(values, str):
        values = [values]
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


_MAX_HOPS = 32
"""How many ``X-Forwarded-For`` hops are read, from the right (the proxies' end)."""


def _forwarded_hops(scope: Scope) -> list[bytes]:
    """The last `_MAX_HOPS` hops of ``X-Forwarded-For``, right to left."""
    values = [bytes(value) for key, value in scope.get("headers", ()) if key == b"x-forwarded-for"]
    hops: list[bytes] = []
    for value in reversed(values):
        hops.extend(reversed(value.rsplit(b",", _MAX_HOPS)[-_MAX_HOPS:]))
        if len(hops) >= _MAX_HOPS:
            break
    return hops[:_MAX_HOPS]


def _hop_address(hop: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address of one hop (``1.2.3.4``, ``1.2.3.4:80``, ``[2001:db8::1]:80``), or None."""
    text = hop.strip().decode("latin-1")
    if text.startswith("["):
        host, bracket, _ = text[1:].partition("]")
        if not bracket:
            return None
        text = host
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@attrs.frozen
class ClientIP:
    """Identify by the client's IP address (for anonymous or per-IP limits).

    The peer address is used unless it is one of ``trusted_proxies``; only then is
    ``X-Forwarded-For`` read, from right to left, skipping trusted proxies: the first
    untrusted address is the client (a hop may carry a port: ``1.2.3.4:80``,
    ``[2001:db8::1]:80``; only the last 32 hops are read). With no trusted proxies the
    header is ignored, so clients cannot pick their own id. IPv6 clients are grouped by
    ``ipv6_prefix`` bits (a /64 is one subscriber on most networks).

    When the ASGI server already rewrites the client from proxy headers (uvicorn's
    ``--proxy-headers`` with ``--forwarded-allow-ips``), leave ``trusted_proxies`` empty.
    """

    trusted_proxies: tuple[Network, ...] = attrs.field(default=(), converter=_networks)
    """Networks of the proxies whose ``X-Forwarded-For`` is believed."""
    plan: str | None = None
    """The plan for customers identified this way (e.g. "anonymous")."""
    prefix: str = "ip-"
    """Prepended to the address to form the customer id."""
    ipv6_prefix: int = attrs.field(default=64)
    """Bits of an IPv6 address that identify a client (128: each address)."""

    @ipv6_prefix.validator
    def _check_prefix(self, _: attrs.Attribute[int], value: int) -> None:
        if not 1 <= value <= 128:
            raise ValueError(f"ipv6_prefix must be within 1..128, got {value!r}")

    def _trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in network for network in self.trusted_proxies)

    def client_address(self, scope: Scope) -> str | None:
        """The client's address for this request, as text, or None when unknown."""
        client = scope.get("client")
        if not client:
            return None
        try:
            address = ipaddress.ip_address(client[0])
        except ValueError:
            return None
        if self.trusted_proxies and self._trusted(address):
            for hop in _forwarded_hops(scope):
                candidate = _hop_address(hop)
                if candidate is None:
                    break  # a malformed hop: trust nothing to its left
                address = candidate
                if not self._trusted(candidate):
                    break
        if isinstance(address, ipaddress.IPv6Address):
            if address.ipv4_mapped is not None:
                return str(address.ipv4_mapped)
            if self.ipv6_prefix < 128:
                network = ipaddress.IPv6Network((address, self.ipv6_prefix), strict=False)
                return str(network)
        return str(address)

    def __call__(self, scope: Scope) -> Identity | None:
        """The identity for the request's client address, or None."""
        address = self.client_address(scope)
        if address is None:
            return None
        return Identity(self.prefix + address, self.plan)
