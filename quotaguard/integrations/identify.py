"""Who is calling: identifiers that turn an ASGI request scope into a customer id.

An identifier is any callable ``identifier(scope) -> Identity | None`` (it may also
return an awaitable of that). None means "not identified": the next identifier is tried,
and if none succeeds the middleware uses its anonymous identity or answers 401.

Raw credentials never become ids and are never logged: `APIKey` hashes the key (keyed
BLAKE2b) before anything else sees it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeAlias

import attrs

from ._types import Scope, header

__all__ = [
    "APIKey",
    "BearerClaim",
    "ClientIP",
    "FirstOf",
    "Identifier",
    "Identity",
    "hash_key",
]

logger = logging.getLogger("quotaguard")


@attrs.frozen
class Identity:
    """A caller: the customer id, and optionally the plan they are on.

    The plan is the one *requested* for the call: an operator's assignment
    (``guard.assign``) still wins.
    """

    customer: str
    """The customer id (never a raw credential)."""
    plan: str | None = None
    """The plan to apply, or None for the customer's assigned or the default plan."""


Identifier: TypeAlias = Callable[[Scope], "Identity | Awaitable[Identity | None] | None"]
"""Anything that maps a request scope to an `Identity` (or None)."""

Lookup: TypeAlias = Callable[[str], "Identity | str | None"]
"""Maps a hashed key to an Identity, a customer id, or None (unknown key)."""


def hash_key(key: bytes | str, secret: bytes = b"") -> str:
    """The hex digest (32 characters) that stands for an API key: keyed BLAKE2b-128.

    Use the same ``secret`` (a server-side pepper, up to 64 bytes) where you store
    customers' key hashes, so a leaked table alone cannot be tested against keys.
    """
    raw = key.encode("utf-8") if isinstance(key, str) else key
    return hashlib.blake2b(raw, digest_size=16, key=secret).hexdigest()


def _header_name(value: str) -> bytes:
    return value.lower().encode("latin-1")


@attrs.frozen
class APIKey:
    """Identify by an API-key header; the key is hashed before it is used as an id.

    Without ``lookup`` the customer id is ``prefix + hash_key(key, secret)``. With
    ``lookup``, it receives that hash (never the raw key) and returns an `Identity`, a
    customer id, or None for an unknown key (then the request is unidentified).
    ``scheme="Bearer"`` reads ``Authorization: Bearer <key>`` instead of a plain header.
    """

    header: str = "x-api-key"
    """The request header that carries the key."""
    secret: bytes = attrs.field(default=b"", repr=False)
    """The BLAKE2b key (pepper) used to hash API keys, at most 64 bytes."""
    lookup: Lookup | None = None
    """Maps the key's hash to a customer (and plan); None keeps the hash as the id."""
    prefix: str = "key-"
    """Prepended to the hash to form the customer id when there is no lookup."""
    scheme: str | None = None
    """An authorization scheme ("Bearer") that prefixes the key in the header."""
    _name: bytes = attrs.field(init=False, repr=False)
    _scheme: bytes | None = attrs.field(init=False, repr=False)
    _digests: dict[bytes, tuple[str, Identity]] = attrs.field(
        init=False, repr=False, eq=False, factory=dict
    )

    @secret.validator
    def _check_secret(self, _: attrs.Attribute[bytes], value: bytes) -> None:
        if len(value) > 64:
            raise ValueError("APIKey secret must be at most 64 bytes (a BLAKE2b key)")

    @_name.default
    def _default_name(self) -> bytes:
        return _header_name(self.header)

    @_scheme.default
    def _default_scheme(self) -> bytes | None:
        return None if self.scheme is None else self.scheme.lower().encode("ascii") + b" "

    def __call__(self, scope: Scope) -> Identity | None:
        """The identity for the request's key, or None without a (known) key."""
        raw = header(scope, self._name)
        if raw is None:
            return None
        if self._scheme is not None:
            if raw[: len(self._scheme)].lower() != self._scheme:
                return None
            raw = raw[len(self._scheme) :]
        raw = raw.strip()
        if not raw:
            return None
        digests = self._digests
        known = digests.get(raw)
        if known is None:
            if len(digests) >= 4096:  # bounded: keys seen recently, hashed once
                digests.clear()
            digest = hashlib.blake2b(raw, digest_size=16, key=self.secret).hexdigest()
            # without a lookup the identity never changes: keep it (immutable) too
            known = digests[raw] = (digest, Identity(self.prefix + digest))
        if self.lookup is None:
            return known[1]
        found = self.lookup(known[0])
        if found is None or isinstance(found, Identity):
            return found
        return Identity(found)


ClaimsVerifier: TypeAlias = Callable[[str], "Mapping[str, Any] | None"]
"""Verifies a bearer token and returns its claims, or None when it is not valid."""


@attrs.frozen
class BearerClaim:
    """Identify by a claim of a verified bearer token (e.g. a JWT's ``sub``).

    ``verify(token)`` must check the token (signature, expiry, audience) and return its
    claims, or None when invalid; an exception counts as invalid and is logged without
    the token. ``plan_claim`` names a claim that carries the plan (e.g. ``"tier"``).
    """

    verify: ClaimsVerifier
    """Checks a token and returns its claims (or None)."""
    claim: str = "sub"
    """The claim whose value is the customer id."""
    plan_claim: str | None = None
    """The claim whose value is the plan name, if any."""
    prefix: str = ""
    """Prepended to the claim value to form the customer id."""

    def __call__(self, scope: Scope) -> Identity | None:
        """The identity named by the verified token's claims, or None."""
        raw = header(scope, b"authorization")
        if raw is None or raw[:7].lower() != b"bearer ":
            return None
        token = raw[7:].strip().decode("latin-1")
        if not token:
            return None
        try:
            claims = self.verify(token)
        except Exception as error:
            logger.warning("quotaguard: bearer token rejected by the verifier (%s)", type(error))
            return None
        if not claims:
            return None
        customer = claims.get(self.claim)
        if customer is None or customer == "":
            return None
        plan = claims.get(self.plan_claim) if self.plan_claim is not None else None
        return Identity(self.prefix + str(customer), None if plan is None else str(plan))


Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


def _identifiers(values: Iterable[Identifier]) -> tuple[Identifier, ...]:
    return tuple(values)


def _networks(values: Iterable[str | Network]) -> tuple[Network, ...]:
    if isinstance(values, str):
        values = [values]
    return tuple(ipaddress.ip_network(value, strict=False) for value in values)


@attrs.frozen
class ClientIP:
    """Identify by the client's IP address (for anonymous or per-IP limits).

    The peer address is used unless it is one of ``trusted_proxies``; only then is
    ``X-Forwarded-For`` read, from right to left, skipping trusted proxies: the first
    untrusted address is the client. With no trusted proxies the header is ignored, so
    clients cannot pick their own id. IPv6 clients are grouped by ``ipv6_prefix`` bits
    (a /64 is one subscriber on most networks).

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
            hops: list[str] = []
            for key, value in scope.get("headers", ()):
                if key == b"x-forwarded-for":
                    hops.extend(bytes(value).decode("latin-1").split(","))
            for hop in reversed(hops):
                try:
                    candidate = ipaddress.ip_address(hop.strip())
                except ValueError:
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


@attrs.frozen
class FirstOf:
    """Try several identifiers in order; the first that identifies the caller wins."""

    identifiers: tuple[Identifier, ...] = attrs.field(converter=_identifiers)
    """The identifiers, in order."""

    async def __call__(self, scope: Scope) -> Identity | None:
        """The first identity found, or None."""
        for identifier in self.identifiers:
            found = identifier(scope)
            if found is not None and not isinstance(found, Identity):
                found = await found
            if found is not None:
                return found
        return None
