"""The policy model and plan catalogue: valid configuration in, clear errors out."""

from __future__ import annotations

import re

import pytest

from quotaguard import (
    Concurrency,
    ConfigurationError,
    Plan,
    PlanCatalogue,
    RollingWindow,
    TokenBucket,
    UnknownPlanError,
    parse_rate,
)

SECOND = 1_000_000


@pytest.mark.parametrize(
    ("text", "amount", "seconds"),
    [
        ("100/minute", 100, 60),
        ("5000000/week", 5_000_000, 604_800),
        ("5000000 per week", 5_000_000, 604_800),
        ("10/2 weeks", 10, 1_209_600),
        ("200000 per 5 hours", 200_000, 18_000),
        ("1/second", 1, 1),
        ("7 / day", 7, 86_400),
    ],
)
def test_rate_strings(text, amount, seconds):
    rate = parse_rate(text)
    assert (rate.amount, rate.period_seconds) == (amount, seconds)


@pytest.mark.parametrize(
    "text", ["", "ten/minute", "5/fortnight", "0/minute", "1/s", "1/minute;2/hour"]
)
def test_bad_rate_strings_name_the_value(text):
    with pytest.raises(ConfigurationError, match=re.escape(repr(text))):
        parse_rate(text)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TokenBucket("b", 0, "1/second"), "capacity must be a positive integer, got 0"),
        (lambda: TokenBucket("b", 1.5, "1/second"), "got 1.5"),
        (lambda: RollingWindow("w", -1, 3600), "quota must be a positive integer, got -1"),
        (lambda: RollingWindow("w", 10, 3600, 420), "granularity of 420s does not divide"),
        (lambda: RollingWindow("w", 10, "1 hour", 0.001), "at most 10000"),
        (lambda: RollingWindow("w", 10, "3 fortnights"), "'3 fortnights'"),
        (lambda: RollingWindow("w", 10, -5), "got -5"),
        (lambda: Concurrency("c", 0), "max_in_flight must be a positive integer"),
        (lambda: TokenBucket("has space", 1, "1/second"), "'has space' is invalid"),
        (lambda: TokenBucket("b", 1, "1/second", unit="to kens"), "'to kens' is invalid"),
        (
            lambda: Plan("p", [TokenBucket("x", 1, "1/second"), RollingWindow("x", 1, 60)]),
            "duplicate limit name 'x'",
        ),
        (lambda: Plan("p", ["not a limit"]), "is not a TokenBucket"),
        (lambda: PlanCatalogue([Plan("a"), Plan("a")]), "duplicate plan name 'a'"),
        (lambda: PlanCatalogue([Plan("a")], default="b"), "default plan 'b'"),
    ],
)
def test_bad_configuration_fails_at_construction_naming_the_value(build, message):
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(")):
        build()


def test_default_granularities_are_round_and_bounded():
    assert RollingWindow("w", 1, "7 days").granularity_us == 3600 * SECOND
    assert RollingWindow("w", 1, "5 hours").granularity_us == 300 * SECOND
    assert RollingWindow("w", 1, "1 minute").granularity_us == SECOND
    assert RollingWindow("w", 1, "30 days").buckets <= 200
    assert RollingWindow("w", 1, 7919).buckets == 1  # a prime number of seconds


def test_policy_windows_for_headers():
    assert TokenBucket("b", 100, "100/minute").window_seconds == 60
    assert RollingWindow.from_rate("w", "5000000/week").window_seconds == 604_800
    assert Concurrency("c", 4, lease_ttl="10 minutes").window_seconds == 600


PLANS_TOML = """
default_plan = "free"

[plans.free]
burst = { kind = "token_bucket", capacity = 10, refill = "1/second" }
five_hour = { rate = "20000/5 hours", granularity = "5 minutes", unit = "tokens" }
weekly = "100000/week"

[plans.pro]
shadow = true
burst = { kind = "token_bucket", capacity = 60, refill = "1/second" }
in_flight = { kind = "concurrency", max_in_flight = 4, lease_ttl = "10 minutes" }
"""


def test_a_catalogue_loads_from_toml(tmp_path):
    path = tmp_path / "plans.toml"
    path.write_text(PLANS_TOML)
    catalogue = PlanCatalogue.from_toml(path)
    assert catalogue.default == "free"
    free = catalogue["free"]
    assert free.names == ("burst", "five_hour", "weekly")
    assert free.limit("five_hour") == RollingWindow(
        "five_hour", 20000, "5 hours", "5 minutes", unit="tokens"
    )
    assert free.limit("weekly").window_us == 7 * 86_400 * SECOND
    pro = catalogue["pro"]
    assert pro.shadow
    assert pro.limit("in_flight") == Concurrency("in_flight", 4, lease_ttl=600)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[plans.a]\nx = 'ten/minute'", "plan 'a', limit 'x': cannot parse rate 'ten/minute'"),
        ("[plans.a]\nx = { kind = 'leaky', rate = '1/second' }", "unknown kind 'leaky'"),
        ("[plans.a]\nx = { kind = 'token_bucket', capacity = 1 }", "missing refill"),
        ("[plans.a]\nx = { rate = '1/second', burst = 3 }", "unknown keys burst"),
        ("[plans.a]\nx = { rate = '10/hour', granularity = '7 minutes' }", "does not divide"),
        ("[plans.a]\nshadow = 'yes'", "shadow must be true or false"),
        ("default_plan = 'b'\n[plans.a]\nx = '1/second'", "default plan 'b'"),
        ("plans = 3", "no [plans.<name>] tables"),
        ("[plan.a]\nx = '1/second'", "unknown top-level keys ['plan']"),
        ("[plans.a\n", "invalid TOML"),
    ],
)
def test_bad_plan_files_give_exact_messages(text, message):
    with pytest.raises(ConfigurationError) as error:
        PlanCatalogue.from_toml_string(text, source="plans.toml")
    assert message in str(error.value)
    assert str(error.value).startswith("plans.toml")


def test_unknown_plan_lookups_list_the_catalogue():
    catalogue = PlanCatalogue([Plan("a"), Plan("b")])
    with pytest.raises(UnknownPlanError, match="unknown plan 'c'; the catalogue has a, b"):
        catalogue["c"]


def test_a_quota_override_keeps_every_other_setting():
    window = RollingWindow("w", 10, "5 hours", "5 minutes", unit="tokens")
    assert window.with_quota(99) == RollingWindow("w", 99, "5 hours", "5 minutes", unit="tokens")
    slots = Concurrency("c", 2, lease_ttl=0.25, unit="streams")
    assert slots.with_quota(5) == Concurrency("c", 5, lease_ttl=0.25, unit="streams")
    bucket = TokenBucket("b", 5, "7/second", unit="tokens")
    assert bucket.with_quota(9) == TokenBucket("b", 9, "7/second", unit="tokens")
