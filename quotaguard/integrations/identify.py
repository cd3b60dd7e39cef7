"""Who is calling: identifiers that turn an ASGI request scope into a customer id.

An identifier is any callable ``identifier(scope) -> Identity | None`` (it may also
return an awaitable of that). None means "not identified": the next identifier is tried,
and if none succeeds the middleware uses its anonymous identity or answers 401.

Raw credentials never become ids and are never logged: `APIKey` hashes the key (keyed
BLAKE2b) before anything else sees it.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeAlias

import attrs

from quotaguard.core.errors import ConfigurationError

from ._identity import Identifier, Identity
from ._types import Scope, header
from .client_ip import ClientIP

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


Lookup: TypeAlias = Callable[[str], "Identity | str | Awaitable[Identity | str | None] | None"]
"""Maps a hashed key to an Identity, a customer id, or None (unknown key); may be async."""


def hash_key(key: bytes | str, secret: bytes = b"") -> str:
    """The hex digest (32 characters) that stands for an API key: keyed BLAKE2b-128.

    Use the same ``secret`` (a server-side pepper, up to 64 bytes) where you store
    customers' key hashes, so a leaked table alone cannot be tested against keys.
    """
    raw = key.encode("utf-8") if isinstance(key, str) else key
    return hashlib.blake2b(raw, digest_size=16, key=secret).hexdigest()


def _header_name(value: str) -> bytes:
    return value.lower().encode("latin-1")


def _positive(_: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if value.__class__ is not int or value < 1:
        raise ConfigurationError(f"{attribute.name} must be a whole number >= 1, got {value!r}")


def _to_identity(found: Identity | str | None) -> Identity | None:
    if found is None or isinstance(found, Identity):
        return found
    return Identity(found)


async def _awaited(pending: Awaitable[Identity | str | None]) -> Identity | None:
    return _to_identity(await pending)


@attrs.frozen
class APIKey:
    """Identify by an API-key header; the key is hashed before it is used as an id.

    ``lookup`` receives the key's hash (``hash_key(key, secret)``, never the raw key) and
    returns an `Identity`, a customer id, or None for an unknown key (then the request is
    unidentified: the next identifier, the anonymous plan, or a 401). It may be async.
    A lookup is required: ``accept_any_key=True`` instead makes every key its own
    customer (``prefix + hash``), so anyone can mint fresh quota by sending new keys;
    it is meant for demos and internal services, and logs a warning when built.

    ``scheme="Bearer"`` reads ``Authorization: Bearer <key>`` (``header`` defaults to
    ``authorization`` then, else to ``x-api-key``). A header value longer than
    ``max_length`` bytes identifies no one and is neither hashed nor kept.
    """

    lookup: Lookup | None = None
    """Maps the key's hash to a customer (and plan); required unless ``accept_any_key``."""
    header: str | None = None
    """The request header that carries the key (default: see above)."""
    secret: bytes = attrs.field(default=b"", repr=False)
    """The BLAKE2b key (pepper) used to hash API keys, at most 64 bytes."""
    prefix: str = "key-"
    """Prepended to the hash to form the customer id with ``accept_any_key``."""
    scheme: str | None = None
    """An authorization scheme ("Bearer") that prefixes the key in the header."""
    accept_any_key: bool = False
    """Treat every key as its own customer (no lookup): callers pick their own quota."""
    max_length: int = attrs.field(default=256, validator=_positive)
    """The longest header value (in bytes) that is hashed; longer ones identify no one."""
    _name: bytes = attrs.field(init=False, repr=False)
    _scheme: bytes | None = attrs.field(init=False, repr=False)
    _keyed: Any = attrs.field(init=False, repr=False, eq=False)  # BLAKE2b, key absorbed

    @secret.validator
    def _check_secret(self, _: attrs.Attribute[bytes], value: bytes) -> None:
        if len(value) > 64:
            raise ConfigurationError("APIKey secret must be at most 64 bytes (a BLAKE2b key)")

    @_name.default
    def _default_name(self) -> bytes:
        if self.header is not None:
            return _header_name(self.header)
        return b"authorization" if self.scheme is not None else b"x-api-key"

    @_keyed.default
    def _default_keyed(self) -> Any:
        return hashlib.blake2b(digest_size=16, key=self.secret)

    @_scheme.default
    def _default_scheme(self) -> bytes | None:
        return None if self.scheme is None else self.scheme.lower().encode("ascii") + b" "

    def __attrs_post_init__(self) -> None:
        if self.lookup is not None and not callable(self.lookup):
            raise ConfigurationError(
                f"APIKey lookup must be a callable (hash -> customer), got {self.lookup!r}; "
                "the header name is the header= argument"
            )
        if self.lookup is None and not self.accept_any_key:
            raise ConfigurationError(
                "APIKey needs lookup= (a function from a key's hash to a customer): without "
                "one every string is a customer and callers mint quota by rotating keys; "
                "pass accept_any_key=True to choose that explicitly"
            )
        if self.lookup is not None and self.accept_any_key:
            raise ConfigurationError("APIKey takes lookup= or accept_any_key=True, not both")
        if self.accept_any_key:
            logger.warning(
                "quotaguard: APIKey(accept_any_key=True) makes every key its own customer: "
                "anyone can mint fresh quota by sending new keys; use a lookup in production"
            )

    @property
    def header_name(self) -> str:
        """The request header read, lower-case."""
        return self._name.decode("latin-1")

    def challenge(self, realm: str) -> str:
        """The ``WWW-Authenticate`` challenge for a request without a (known) key."""
        if self.scheme is not None:
            return f'{self.scheme} realm="{realm}"'
        return f'APIKey realm="{realm}", header="{self.header_name}"'

    def __call__(self, scope: Scope) -> Identity | Awaitable[Identity | None] | None:
        """The identity for the request's key, or None without a (known) key."""
        raw = header(scope, self._name)
        if raw is None or len(raw) > self.max_length:
            return None
        if self._scheme is not None:
            if raw[: len(self._scheme)].lower() != self._scheme:
                return None
            raw = raw[len(self._scheme) :]
        raw = raw.strip()
        if not raw:
            return None
        hasher = self._keyed.copy()  # = hash_key(raw, secret), without rekeying each time
        hasher.update(raw)
        digest = hasher.hexdigest()
        lookup = self.lookup
        if lookup is None:
            return Identity(self.prefix + digest)
        found = lookup(digest)
        if found is None or found.__class__ is Identity:
            return found
        if isinstance(found, str | Identity):
            return _to_identity(found)
        return _awaited(found)


ClaimsVerifier: TypeAlias = Callable[[str], "Mapping[str, Any] | None"]
"""Verifies a bearer token and returns its claims, or None when it is not valid."""


@attrs.frozen
class BearerClaim:
    """Identify by a claim of a verified bearer token (e.g. a JWT's ``sub``).

    ``verify(token)`` must check the token (signature, expiry, audience) and return its
    claims, or None when invalid; an exception counts as invalid and is logged without
    the token. ``plan_claim`` names a claim that carries the plan (e.g. ``"tier"``).
    The customer id is ``prefix + claims[claim]`` (a string or an integer claim); the
    default prefix ``"bearer-"`` keeps token subjects apart from the ids other
    identifiers make (``key-...``, ``ip-...``, ``anonymous``). An ``Authorization``
    value longer than ``max_length`` bytes is not verified and identifies no one.
    """

    verify: ClaimsVerifier
    """Checks a token and returns its claims (or None)."""
    claim: str = "sub"
    """The claim whose value is the customer id."""
    plan_claim: str | None = None
    """The claim whose value is the plan name, if any."""
    prefix: str = "bearer-"
    """Prepended to the claim value to form the customer id."""
    max_length: int = attrs.field(default=8192, validator=_positive)
    """The longest ``Authorization`` value (in bytes) that is verified."""

    def challenge(self, realm: str) -> str:
        """The ``WWW-Authenticate`` challenge for a request without a valid token."""
        return f'Bearer realm="{realm}"'

    def __call__(self, scope: Scope) -> Identity | None:
        """The identity named by the verified token's claims, or None."""
        raw = header(scope, b"authorization")
        if raw is None or len(raw) > self.max_length or raw[:7].lower() != b"bearer ":
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
        if isinstance(customer, bool) or not isinstance(customer, str | int) or customer == "":
            return None
        plan = claims.get(self.plan_claim) if self.plan_claim is not None else None
        return Identity(self.prefix + str(customer), None if plan is None else str(plan))


def _identifiers(values: Iterable[Identifier]) -> tuple[Identifier, ...]:
    return tuple(values)


@attrs.frozen
class FirstOf:
    """Try several identifiers in order; the first that identifies the caller wins."""

    identifiers: tuple[Identifier, ...] = attrs.field(converter=_identifiers)
    """The identifiers, in order."""

    def challenge(self, realm: str) -> str | None:
        """The challenges of the identifiers that have one, joined (or None)."""
        return challenge_for(self.identifiers, realm)

    async def __call__(self, scope: Scope) -> Identity | None:
        """The first identity found, or None."""
        for identifier in self.identifiers:
            found = identifier(scope)
            if found is not None and not isinstance(found, Identity):
                found = await found
            if found is not None:
                return found
        return None


def challenge_for(identify: Identifier | Iterable[Identifier], realm: str = "api") -> str | None:
    """The ``WWW-Authenticate`` value for a 401: each credential kind's challenge, once.

    `APIKey` offers ``APIKey realm="api", header="x-api-key"`` (or its ``scheme``),
    `BearerClaim` offers ``Bearer realm="api"``; identifiers without a credential
    (`ClientIP`, your own callables without a ``challenge`` method) offer none.
    """
    identifiers = list(identify) if isinstance(identify, Iterable) else [identify]
    found: list[str] = []
    for identifier in identifiers:
        method = getattr(identifier, "challenge", None)
        value = method(realm) if callable(method) else None
        for part in [] if value is None else [value]:
            if part not in found:
                found.append(part)
    return ", ".join(found) or None
