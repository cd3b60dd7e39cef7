"""Key names: one prefix, customer ids encoded so no id can collide or inject.

A customer's keys all carry the same Redis Cluster hash tag, the encoded id in braces::

    <prefix>:{<id>}:s            usage state (hash: one field per limit name)
    <prefix>:{<id>}:m            settings (hash: v = version, m = JSON), no TTL
    <prefix>:{<id>}:a            audit trail (list of JSON entries, newest first), no TTL
    <prefix>:{<id>}:l:<lease>    a lease record
    <prefix>:lease:<lease>       a lease's owner (customer and plan), own slot

``<id>`` is the id itself when it is 1-64 characters of ``A-Z a-z 0-9 _ . -`` (readable
keys for ordinary ids), else ``~`` followed by the unpadded base64url of its UTF-8 bytes.
The two forms cannot meet (``~`` is outside the first alphabet) and neither contains
``{``, ``}``, ``:``, spaces or glob characters, so the tag is exactly the id.
"""

from __future__ import annotations

import base64
import re

from quotaguard.core.errors import ConfigurationError

_PLAIN = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def encode_id(value: str) -> str:
    """Encode a customer id or lease id into a key-safe, injective token."""
    if _PLAIN.match(value):
        return value
    raw = value.encode("utf-8", "surrogatepass")
    return "~" + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_id(token: str) -> str:
    """The id `encode_id` encoded into ``token``."""
    if not token.startswith("~"):
        return token
    raw = token[1:]
    return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("utf-8", "surrogatepass")


def glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis glob pattern (``SCAN MATCH``)."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def check_prefix(prefix: str) -> str:
    """Validate a key prefix: non-empty, without braces (they would steal the hash tag)."""
    if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
        raise ConfigurationError(
            f"redis key prefix must be a non-empty string without braces, got {prefix!r}"
        )
    return prefix


class KeySchema:
    """Builds every key name for one prefix."""

    __slots__ = ("_cache", "prefix")

    def __init__(self, prefix: str = "qg") -> None:
        self.prefix = check_prefix(prefix)
        """The prefix of every key."""
        self._cache: dict[str, tuple[str, str, str]] = {}

    def customer(self, customer: str) -> tuple[str, str, str]:
        """(tag base ``<prefix>:{<id>}``, state key, settings key) of a customer."""
        keys = self._cache.get(customer)
        if keys is None:
            base = f"{self.prefix}:{{{encode_id(customer)}}}"
            keys = (base, base + ":s", base + ":m")
            if len(self._cache) >= 4096:
                self._cache.clear()
            self._cache[customer] = keys
        return keys

    def audit(self, customer: str) -> str:
        """The customer's audit trail (a list, no TTL)."""
        return self.customer(customer)[0] + ":a"

    def customers_pattern(self) -> str:
        """A ``SCAN MATCH`` pattern for every customer's state and settings keys."""
        return glob_escape(self.prefix) + ":{*}:[sm]"

    def customer_of(self, key: str) -> str | None:
        """The customer whose state or settings key ``key`` is (None if it is neither)."""
        head = self.prefix + ":{"
        if not key.startswith(head) or key[-3:] not in ("}:s", "}:m"):
            return None
        token = key[len(head) : -3]
        if not token or "{" in token or "}" in token or ":" in token:
            return None
        try:
            return decode_id(token)
        except ValueError:
            return None

    def lease(self, base: str, token: str) -> str:
        """The lease record of ``token`` in the key space whose tag base is ``base``."""
        return f"{base}:l:{token}"

    def lease_owner(self, token: str) -> str:
        """The key naming the owner of lease ``token`` (its own hash slot)."""
        return f"{self.prefix}:lease:{token}"
