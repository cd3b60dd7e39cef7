"""Identifiers and route rules, directly on ASGI scopes."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from quotaguard import ConfigurationError
from quotaguard.integrations import (
    APIKey,
    BearerClaim,
    ClientIP,
    FirstOf,
    Identity,
    Route,
    Routes,
    exempt,
    hash_key,
)


def scope(headers: dict[str, str] | None = None, client: str = "10.1.2.3") -> dict[str, Any]:
    return {
        "type": "http",
        "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": (client, 1234),
    }


def test_api_key_is_hashed_and_looked_up_by_hash() -> None:
    assert APIKey()(scope({"x-api-key": "secret"})) == Identity("key-" + hash_key("secret"))
    peppered = APIKey(secret=b"pepper")(scope({"x-api-key": "secret"}))
    assert peppered is not None and peppered.customer == "key-" + hash_key("secret", b"pepper")
    seen: list[str] = []

    def lookup(digest: str) -> Identity | str | None:
        seen.append(digest)
        return {hash_key("k1"): Identity("alice", "pro"), hash_key("k2"): "bob"}.get(digest)

    identify = APIKey(lookup=lookup)
    assert identify(scope({"x-api-key": "k1"})) == Identity("alice", "pro")
    assert identify(scope({"x-api-key": "k2"})) == Identity("bob")
    assert identify(scope({"x-api-key": "k3"})) is None
    assert identify(scope()) is None
    assert "k1" not in seen and hash_key("k1") in seen
    assert "secret" not in repr(APIKey(secret=b"secret"))
    bearer = APIKey(header="authorization", scheme="Bearer")
    assert bearer(scope({"authorization": "Bearer k1"})) == Identity("key-" + hash_key("k1"))
    assert bearer(scope({"authorization": "Basic k1"})) is None


def test_bearer_claim(caplog: pytest.LogCaptureFixture) -> None:
    def verify(token: str) -> dict[str, Any] | None:
        if token == "boom":
            raise ValueError("bad signature")
        return {"sub": "u-1", "tier": "max"} if token == "good" else None

    identify = BearerClaim(verify, plan_claim="tier")
    assert identify(scope({"authorization": "Bearer good"})) == Identity("u-1", "max")
    assert identify(scope({"authorization": "Bearer bad"})) is None
    with caplog.at_level(logging.WARNING):
        assert identify(scope({"authorization": "Bearer boom"})) is None
    assert "boom" not in caplog.text
    assert identify(scope()) is None


def test_client_ip_and_trusted_proxies() -> None:
    plain = ClientIP()
    assert plain(scope({"x-forwarded-for": "1.1.1.1"})) == Identity("ip-10.1.2.3")
    proxied = ClientIP(["10.0.0.0/8", "192.168.0.1"])
    chain = {"x-forwarded-for": "6.6.6.6, 203.0.113.5, 192.168.0.1"}
    assert proxied(scope(chain)).customer == "ip-203.0.113.5"  # type: ignore[union-attr]
    everything_trusted = {"x-forwarded-for": "10.9.9.9"}
    assert proxied(scope(everything_trusted)).customer == "ip-10.9.9.9"  # type: ignore[union-attr]
    malformed = {"x-forwarded-for": "203.0.113.5, junk"}
    assert proxied(scope(malformed)).customer == "ip-10.1.2.3"  # type: ignore[union-attr]
    assert proxied(scope(chain, client="8.8.8.8")).customer == "ip-8.8.8.8"  # type: ignore[union-attr]
    v6 = plain(scope(client="2001:db8:1:2:3:4:5:6"))
    assert v6 == Identity("ip-2001:db8:1:2::/64")
    assert ClientIP(ipv6_prefix=128)(scope(client="2001:db8::1")) == Identity("ip-2001:db8::1")
    assert plain(scope(client="::ffff:1.2.3.4")) == Identity("ip-1.2.3.4")
    assert plain({"type": "http", "headers": []}) is None


def test_first_of() -> None:
    async def slow(scope: Any) -> Identity | None:
        return Identity("async")

    identify = FirstOf([APIKey(), slow])
    assert asyncio.run(identify(scope())) == Identity("async")


def test_route_matching() -> None:
    chat = Route("/v1/chat", methods=["post"], cost=100, unit="tokens")
    admin = Route("/admin/*", exempt=True)
    deep = Route("/admin/reports/*", cost=3)
    routes = Routes([chat, admin, deep, exempt("/healthz")])
    assert routes.match("POST", "/v1/chat") is chat
    assert routes.match("GET", "/v1/chat") is routes.default
    assert routes.match("GET", "/admin/users") is admin
    assert routes.match("GET", "/admin/reports/1") is deep
    assert routes.match("GET", "/healthz").exempt
    assert chat.cost_of({}) == {"tokens": 100}
    assert Route("/x", cost=2, unit=None).cost_of({}) == 2
    assert Route("/x", cost=lambda s: 7, unit="tokens").cost_of({}) == {"tokens": 7}
    for bad in ({"path": "v1"}, {"path": "/a*b"}, {"path": "/a", "cost": -1}):
        with pytest.raises(ConfigurationError):
            Route(**bad)
