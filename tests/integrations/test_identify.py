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
    peppered = APIKey(lambda digest: digest, secret=b"pepper")(scope({"x-api-key": "secret"}))
    assert peppered == Identity(hash_key("secret", b"pepper"))
    assert "pepper" not in repr(APIKey(lookup, secret=b"pepper"))


def test_an_api_key_without_lookup_is_an_explicit_loud_choice(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(ConfigurationError, match="accept_any_key=True"):
        APIKey()
    with pytest.raises(ConfigurationError, match="header="):
        APIKey("x-api-key")  # type: ignore[arg-type]  # the header used to come first
    with pytest.raises(ConfigurationError, match="not both"):
        APIKey(lambda digest: None, accept_any_key=True)
    with caplog.at_level(logging.WARNING, logger="quotaguard"):
        anyone = APIKey(accept_any_key=True)
    assert "mint fresh quota" in caplog.text
    assert anyone(scope({"x-api-key": "secret"})) == Identity("key-" + hash_key("secret"))


def test_an_async_lookup_is_awaited() -> None:
    async def lookup(digest: str) -> str | None:
        return "carol" if digest == hash_key("k1") else None

    identify = APIKey(lookup)
    found = identify(scope({"x-api-key": "k1"}))
    assert asyncio.run(found) == Identity("carol")  # type: ignore[arg-type]
    assert asyncio.run(identify(scope({"x-api-key": "k9"}))) is None  # type: ignore[arg-type]


def test_scheme_bearer_reads_the_authorization_header() -> None:
    bearer = APIKey(lambda digest: digest, scheme="Bearer")
    assert bearer(scope({"authorization": "Bearer k1"})) == Identity(hash_key("k1"))
    assert bearer(scope({"authorization": "bearer   k1 "})) == Identity(hash_key("k1"))
    assert bearer(scope({"x-api-key": "Bearer k1"})) is None
    assert bearer(scope({"authorization": "Basic k1"})) is None
    assert bearer.header_name == "authorization"
    assert bearer.challenge("api") == 'Bearer realm="api"'
    custom = APIKey(lambda digest: digest, header="X-Key", scheme="Token")
    assert custom(scope({"x-key": "Token k1"})) == Identity(hash_key("k1"))


def test_oversized_credentials_are_refused_before_hashing() -> None:
    looked_up: list[str] = []
    identify = APIKey(lambda digest: looked_up.append(digest) or "c", max_length=64)
    assert identify(scope({"x-api-key": "k" * 64})) == Identity("c")
    assert identify(scope({"x-api-key": "k" * 65})) is None
    assert len(looked_up) == 1
    assert not hasattr(identify, "_digests")  # no cache of raw keys at all
    verified: list[str] = []
    bearer = BearerClaim(lambda token: verified.append(token) or {"sub": "u"}, max_length=32)
    assert bearer(scope({"authorization": "Bearer " + "t" * 25})) == Identity("bearer-u")
    assert bearer(scope({"authorization": "Bearer " + "t" * 26})) is None
    assert len(verified) == 1
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigurationError):
            APIKey(accept_any_key=True, max_length=bad)  # type: ignore[arg-type]


def test_bearer_claim(caplog: pytest.LogCaptureFixture) -> None:
    def verify(token: str) -> dict[str, Any] | None:
        if token == "boom":
            raise ValueError("bad signature")
        claims = {"good": {"sub": "u-1", "tier": "max"}, "num": {"sub": 42}, "list": {"sub": []}}
        return claims.get(token)

    identify = BearerClaim(verify, plan_claim="tier")
    assert identify(scope({"authorization": "Bearer good"})) == Identity("bearer-u-1", "max")
    assert identify(scope({"authorization": "Bearer num"})) == Identity("bearer-42")
    assert identify(scope({"authorization": "Bearer list"})) is None
    assert identify(scope({"authorization": "Bearer bad"})) is None
    with caplog.at_level(logging.WARNING):
        assert identify(scope({"authorization": "Bearer boom"})) is None
    assert "boom" not in caplog.text
    assert identify(scope()) is None
    assert BearerClaim(verify, prefix="")(scope({"authorization": "Bearer good"})) == Identity(
        "u-1"
    )


def test_a_token_subject_cannot_collide_with_other_identifiers_ids() -> None:
    forged = {"sub": "key-" + hash_key("victim")}
    identity = BearerClaim(lambda token: forged)(scope({"authorization": "Bearer t"}))
    assert identity is not None
    for taken in ("key-", "ip-", "anonymous"):
        assert not identity.customer.startswith(taken)


def test_challenges_follow_the_credential_kinds() -> None:
    from quotaguard.integrations.identify import challenge_for

    key = APIKey(accept_any_key=True)
    bearer = BearerClaim(lambda token: None)
    assert challenge_for(key) == 'APIKey realm="api", header="x-api-key"'
    assert challenge_for([key, bearer, ClientIP()]) == (
        'APIKey realm="api", header="x-api-key", Bearer realm="api"'
    )
    assert challenge_for(FirstOf([bearer, bearer])) == 'Bearer realm="api"'
    assert challenge_for([ClientIP()]) is None


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
    for hop, client in [
        ("198.51.100.7:80", "ip-198.51.100.7"),
        ("[2001:db8::1]:443", "ip-2001:db8::/64"),
        ("2001:db8::1", "ip-2001:db8::/64"),
        ("[2001:db8::1", "ip-10.1.2.3"),
        ("1.2.3.4:80:90", "ip-10.1.2.3"),
    ]:
        found = proxied(scope({"x-forwarded-for": f"6.6.6.6, {hop}"}))
        assert found is not None and found.customer == client, hop
    long_chain = ", ".join(["10.0.0.1"] * 1000 + ["6.6.6.6"] + ["10.0.0.2"] * 40)
    bounded = proxied(scope({"x-forwarded-for": long_chain}))
    assert bounded is not None and bounded.customer == "ip-10.0.0.2"  # only 32 hops read
    assert proxied(scope(chain, client="8.8.8.8")).customer == "ip-8.8.8.8"  # type: ignore[union-attr]
    v6 = plain(scope(client="2001:db8:1:2:3:4:5:6"))
    assert v6 == Identity("ip-2001:db8:1:2::/64")
    assert ClientIP(ipv6_prefix=128)(scope(client="2001:db8::1")) == Identity("ip-2001:db8::1")
    assert plain(scope(client="::ffff:1.2.3.4")) == Identity("ip-1.2.3.4")
    assert plain({"type": "http", "headers": []}) is None


def test_first_of() -> None:
    async def slow(scope: Any) -> Identity | None:
        return Identity("async")

    identify = FirstOf([APIKey(accept_any_key=True), slow])
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
