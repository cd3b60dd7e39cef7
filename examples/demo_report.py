"""The demo's report: what the simulated customers got, read back through quotaguard.

Every figure comes from what the demo's client saw on the wire, the guard's operator API
(usage, audit) or the /metrics scrape; tables are drawn with the CLI's formatting.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from quotaguard.cli.formatting import duration, table

REASONS = {401: "Unauthorized", 403: "Forbidden", 429: "Too Many Requests"}


def report(result: Any) -> str:
    """The readable summary of a run (a ``demo.DemoResult``)."""
    lines = [
        f"quotaguard demo: {result.requests:,} requests from 4 customers over {result.days} "
        f"simulated days, in {result.seconds:.1f} s",
        "(examples/llm_api.py on the in-memory backend; a FakeClock makes the hours pass)",
        "",
        "Decisions per customer and route (HTTP status of every request):",
        "",
        _decisions(result),
        "",
        "Usage at the end, per customer and limit (guard.usage):",
        "",
        _usage(result),
    ]
    for customer, entries in result.audit.items():
        lines += ["", *_audit(customer, entries, result.usage[customer])]
    lines += ["", *_wire(result)]
    refusals = [
        line
        for line in result.metrics.splitlines()
        if line.startswith("quotaguard_decisions_total{") and 'decision="allowed"' not in line
    ]
    lines += ["", f"Prometheus metrics were served at {result.url}/metrics"]
    if refusals:
        lines += ["refusals counted there:", *(f"  {line}" for line in refusals[:6])]
    lines += ["", *_spikes(result), ""]
    lines.append("To keep the server up and explore it with curl: quotaguard demo --serve 300")
    return "\n".join(lines) + "\n"


def _decisions(result: Any) -> str:
    rows = []
    for tally in result.tallies.values():
        statuses = tally.statuses
        denied = ", ".join(f"{name} {count}" for name, count in sorted(tally.denied_by.items()))
        rows.append(
            (
                tally.customer,
                tally.behaviour if tally.route == "/v1/chat" else "",
                tally.route,
                tally.plan,
                f"{sum(statuses.values()):,}",
                *(f"{statuses.get(status, 0):,}" for status in (200, 429, 403)),
                denied or "-",
            )
        )
    header = ("customer", "behaviour", "route", "plan", "sent", "200", "429", "403")
    return table((*header, "429s by limit"), rows, (4, 5, 6, 7))


def _usage(result: Any) -> str:
    rows = [
        (
            name,
            usage.plan,
            status.name,
            status.limit.unit,
            f"{status.used:,.0f}",
            f"{status.quota:,}",
            f"{status.utilization:.0%}",
            duration(status.reset_after) if status.reset_after else "-",
        )
        for name, usage in result.usage.items()
        for status in usage.limits
    ]
    header = ("customer", "plan", "limit", "unit", "used", "quota", "used%", "resets in")
    return table(header, rows, (4, 5, 6, 7))


def _audit(customer: str, entries: list[Any], usage: Any) -> list[str]:
    """The audit trail as sentences: who did what, when, why, what is still allowed."""
    lines = [f"Audit trail of {customer} (quotaguard audit {customer}):"]
    revocation = usage.meta.revocation
    verbs = {"revoke": "revoked", "restore": "restored", "assign": "assigned"}
    for entry in entries:
        when = datetime.fromtimestamp(entry.at, UTC).strftime("%Y-%m-%d %H:%M UTC")
        lines.append(f"  {when}  {entry.actor} {verbs.get(entry.action, entry.action)} {customer}")
        if entry.reason:
            lines.append(f'    reason shown to {customer} (HTTP 403): "{entry.reason}"')
        if entry.action == "revoke" and revocation is not None:
            allowed = ", ".join(
                f'scope "{scope}" on plan "{plan}"' for scope, plan in revocation.allow_scopes
            )
            lines.append(f"    still allowed: {allowed or 'nothing'}")
        elif entry.detail:
            lines.append(f"    {entry.detail}")
    return lines


def _wire(result: Any) -> list[str]:
    """The first 429 and the first 403 as they went over the wire."""
    lines = ["On the wire: the first refusal of each kind, as the client received it"]
    for status in sorted(result.refusals):
        exchange = result.refusals[status]
        lines += ["", f"  {exchange.request}", f"  HTTP/1.1 {status} {REASONS.get(status, '')}"]
        lines += [f"  {name}: {value}" for name, value in exchange.headers]
        try:
            body = json.dumps(json.loads(exchange.body), indent=2, ensure_ascii=False)
        except ValueError:
            body = exchange.body
        lines += ["", *(f"  {line}" for line in body.splitlines())]
    return lines


def _spikes(result: Any) -> list[str]:
    """Each customer's spike ratio from the scrape, and what the spike hook reported."""
    ratios = {
        sample.labels["customer"]: (sample.labels["plan"], sample.value)
        for family in text_string_to_metric_families(result.metrics)
        for sample in family.samples
        if sample.name == "quotaguard_top_customer_spike_ratio"
    }
    flagged: dict[str, Any] = {}
    for event in result.spikes:
        flagged.setdefault(event.customer, event)
    rows = []
    for name, (plan, ratio) in sorted(ratios.items(), key=lambda item: -item[1][1]):
        event = flagged.get(name)
        if event is None:
            hook = "-"
        else:
            day, second = divmod(event.at - result.started, 86_400)
            hook = f"day {int(day) + 1} {int(second // 3600):02d}:00, at {event.ratio:.1f}x"
        rows.append((name, plan, f"{ratio:.1f}", hook))
    lines = [
        "Spike ratio (quotaguard_top_customer_spike_ratio: recent tokens over the customer's",
        "own baseline; about 1 when steady) and the on_spike hook (fires at 10x):",
        "",
    ]
    header = ("customer", "plan", "spike ratio", "on_spike fired")
    return [*lines, table(header, rows, (2,))]
