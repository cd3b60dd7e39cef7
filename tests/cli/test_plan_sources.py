"""Plans defined in Python (``--plans module:attribute``) and ``plans export`` to TOML."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quotaguard import Concurrency, Plan, PlanCatalogue, RollingWindow, TokenBucket
from quotaguard.core.errors import ConfigurationError
from quotaguard.core.rates import Rate
from quotaguard.plan_sources import catalogue_to_toml, load_catalogue

from .conftest import PLANS, Run

MODULE = """\
from quotaguard import Concurrency, Plan, PlanCatalogue, RollingWindow, TokenBucket

FREE = Plan("free", [TokenBucket("burst", 10, "1/second"),
                     RollingWindow("weekly", 100_000, "7 days", unit="tokens")])
PRO = Plan("pro", [TokenBucket("burst", 60, "1/second"),
                   RollingWindow("five_hour", 200_000, "5 hours", "10 minutes", unit="tokens"),
                   Concurrency("in_flight", 4, lease_ttl="90 seconds")], shadow=True)
CATALOGUE = PlanCatalogue([FREE, PRO], default="free")
PLAN_LIST = [FREE, PRO]
PLAN_DICT = {"free": FREE, "pro": PRO}
NOT_PLANS = 42
"""


@pytest.fixture
def plans_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A module of plans importable from the current directory, as an operator has one."""
    name = f"qg_plans_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(MODULE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_every_shape_of_python_plans_loads(plans_module: str) -> None:
    catalogue = load_catalogue(f"{plans_module}:CATALOGUE")
    assert catalogue.default == "free"
    for attribute in ("PLAN_LIST", "PLAN_DICT"):
        other = load_catalogue(f"{plans_module}:{attribute}")
        assert dict(other.plans) == dict(catalogue.plans)
    assert list(load_catalogue(f"{plans_module}:FREE").plans) == ["free"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("qg_no_such_module:PLANS", "cannot import plans module 'qg_no_such_module'"),
        ("{module}:MISSING", "has no attribute 'MISSING'"),
        ("{module}:NOT_PLANS", "is 42, not a PlanCatalogue"),
        ("no-such-file.toml", "cannot read plans file 'no-such-file.toml'"),
    ],
)
def test_bad_sources_name_what_is_wrong(plans_module: str, source: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_catalogue(source.format(module=plans_module))


def test_an_existing_file_wins_over_a_module_reading(tmp_path: Path) -> None:
    (tmp_path / "a:b").write_text(PLANS, encoding="utf-8")
    assert "free" in load_catalogue(tmp_path / "a:b").plans


def test_export_round_trips_the_python_plans(plans_module: str) -> None:
    catalogue = load_catalogue(f"{plans_module}:CATALOGUE")
    text = catalogue_to_toml(catalogue)
    assert 'five_hour = { rate = "200000/5 hours", granularity = "10 minutes"' in text
    assert "shadow = true" in text
    again = PlanCatalogue.from_toml_string(text)
    assert dict(again.plans) == dict(catalogue.plans)
    assert again.default == "free"


names = st.from_regex(r"[a-z][a-z0-9_.-]{0,10}", fullmatch=True).filter(lambda n: n != "shadow")
whole_seconds = st.integers(1, 8 * 604_800)
units = st.sampled_from(["requests", "tokens", "input.tokens"])


@st.composite
def limits(draw: st.DrawFn, name: str) -> TokenBucket | RollingWindow | Concurrency:
    kind = draw(st.sampled_from(["bucket", "window", "slots"]))
    unit = draw(units)
    if kind == "bucket":
        rate = Rate(draw(st.integers(1, 10**6)), draw(whole_seconds) * 1_000_000)
        return TokenBucket(name, draw(st.integers(1, 10**9)), rate, unit=unit)
    if kind == "window":
        granularity = draw(st.integers(1, 3_600))
        window = granularity * draw(st.integers(1, 300))
        return RollingWindow(
            name, draw(st.integers(1, 10**9)), window, draw(st.sampled_from([granularity, None])),
            unit=unit,
        )  # fmt: skip
    ttl = draw(st.one_of(whole_seconds, st.floats(0.001, 10_000)))
    return Concurrency(name, draw(st.integers(1, 1_000)), lease_ttl=ttl, unit=unit)


@st.composite
def catalogues(draw: st.DrawFn) -> PlanCatalogue:
    plan_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    plans = []
    for plan_name in plan_names:
        limit_names = draw(st.lists(names, min_size=1, max_size=4, unique=True))
        plans.append(
            Plan(plan_name, [draw(limits(n)) for n in limit_names], shadow=draw(st.booleans()))
        )
    default = draw(st.sampled_from([None, *plan_names]))
    return PlanCatalogue(plans, default=default)


@settings(max_examples=150, deadline=None)
@given(catalogues())
def test_every_catalogue_round_trips_through_toml(catalogue: PlanCatalogue) -> None:
    again = PlanCatalogue.from_toml_string(catalogue_to_toml(catalogue))
    assert dict(again.plans) == dict(catalogue.plans)
    assert again.default == catalogue.default


def test_what_toml_cannot_say_is_refused() -> None:
    half_second = TokenBucket("burst", 10, Rate(1, 500_000))
    with pytest.raises(ConfigurationError, match="whole seconds"):
        catalogue_to_toml(PlanCatalogue([Plan("p", [half_second])]))
    named_shadow = RollingWindow("shadow", 10, "1 hour")
    with pytest.raises(ConfigurationError, match="named 'shadow'"):
        catalogue_to_toml(PlanCatalogue([Plan("p", [named_shadow])]))


def test_cli_reads_python_plans_and_exports_them(
    cli: Run, plans_module: str, tmp_path: Path
) -> None:
    source = f"{plans_module}:CATALOGUE"
    checked = cli("plans", "check", source, "--json").json()
    assert checked["valid"] and sorted(checked["plans"]) == ["free", "pro"]

    exported = cli("plans", "export", source)
    assert exported.code == 0 and exported.out.startswith('default_plan = "free"\n')

    target = tmp_path / "exported.toml"
    assert cli("plans", "export", "--plans", source, "--output", str(target)).code == 0
    assert target.read_text(encoding="utf-8") == exported.out
    assert cli("plans", "check", str(target)).code == 0

    assert cli("assign", "acme", "pro", "--plans", source).code == 0
    usage = cli("usage", "acme", "--plans", source, "--json").json()
    assert usage["plan"] == "pro"


def test_cli_export_defaults_to_the_configured_plans(cli: Run) -> None:
    result = cli("plans", "export")
    assert result.code == 0
    assert "[plans.benchmark]" in result.out
    assert 'bench_daily = { rate = "20/day" }' in result.out


def test_cli_export_errors_are_configuration_errors(cli: Run, plans_module: str) -> None:
    result = cli("plans", "export", f"{plans_module}:MISSING")
    assert result.code == 3
    assert "has no attribute 'MISSING'" in result.err
    assert result.out == ""
