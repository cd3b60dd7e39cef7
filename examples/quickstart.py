"""quotaguard in one screen: a customer on a plan, from first request to revocation.

Run: ``python examples/quickstart.py`` (in-memory backend, no Redis needed). Time is
simulated with a FakeClock, so a week passes in a moment.
"""

from __future__ import annotations

import math

from quotaguard import Decision, Guard, Plan, RollingWindow, TokenBucket
from quotaguard.testing import FakeClock

PLANS = [
    Plan(
        "pro",
        [
            TokenBucket("burst", 5, "1/second"),  # 5 requests at once, 1 more per second
            RollingWindow("five_hour", 40_000, "5 hours", "5 minutes", unit="tokens"),
            RollingWindow("weekly", 100_000, "7 days", "1 hour", unit="tokens"),
        ],
    ),
    Plan("benchmark", [RollingWindow("benchmark_daily", 20, "1 day", "1 hour")]),
]

clock = FakeClock()
guard = Guard(PLANS, default_plan="pro", clock=clock)
rows: list[tuple[str, str, str, str]] = []


def record(step: str, decision: Decision) -> None:
    if decision.allowed:
        verdict = "allowed"
    elif decision.revoked:
        verdict = f"revoked: {decision.reason}"
    elif decision.never:
        verdict = f"denied by {', '.join(decision.denied_by)}: can never fit"
    else:
        verdict = (
            f"denied by {', '.join(decision.denied_by)}, retry in {_duration(decision.retry_after)}"
        )
    left = ", ".join(f"{s.name}={s.remaining:,}" for s in decision.limits) or "-"
    rows.append((f"+{_duration(clock.now() - START)}", step, verdict, left))


def _duration(seconds: float) -> str:
    seconds = math.ceil(seconds)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"


START = clock.now()

# 1. Admitted: a burst of five requests, each a small completion of 500 tokens.
for number in range(1, 6):
    record(f"request {number}", guard.acquire("acme", cost={"tokens": 500}))

# 2. Throttled: the sixth request in the same second waits exactly one second.
record("request 6 (same second)", guard.acquire("acme", cost={"tokens": 500}))
clock.advance(1)
record("request 6 (a second later)", guard.acquire("acme", cost={"tokens": 500}))

# 3. An LLM call whose cost is known afterwards: reserve 4,000, settle what was used.
clock.advance(2)
lease = guard.reserve("acme", cost={"tokens": 4_000})
record("reserve 4,000 tokens", lease.decision)
lease.settle({"tokens": 1_250})
rows.append(("", "settle: 1,250 tokens used", "2,750 refunded", "-"))

# 4. The weekly cap: heavy use over several days hits it; retry-after says when it frees.
for day in range(1, 4):
    clock.advance(6 * 3600)
    for _ in range(5):
        guard.acquire("acme", cost={"tokens": 7_000})
        clock.advance(3600)
    record(f"day {day}: heavy use", guard.acquire("acme", cost={"tokens": 7_000}))
clock.advance(5 * 3600)
record("one more big job", guard.acquire("acme", cost={"tokens": 40_000}))
record("a job larger than any window", guard.acquire("acme", cost={"tokens": 250_000}))

# 5. Revoked at once, but still allowed to run benchmarks on a small plan of their own.
guard.revoke("acme", "Suspended pending a billing review.", allow_scopes={"benchmark": "benchmark"})
record("chat after revocation", guard.acquire("acme", cost={"tokens": 10}))
record("benchmark after revocation", guard.acquire("acme", scope="benchmark"))

header = ("time", "step", "decision", "remaining")
widths = [max(len(row[i]) for row in [*rows, header]) for i in range(4)]
print("quotaguard quickstart: customer 'acme' on plan 'pro' (burst 5/1s, 40k tokens/5h, 100k/week)")
print()
print(" | ".join(title.ljust(width) for title, width in zip(header, widths, strict=True)))
print("-+-".join("-" * width for width in widths))
for row in rows:
    print(" | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
usage = guard.usage("acme")
print()
print(f"usage of 'acme' now (plan {usage.plan}, revoked: {usage.revocation is not None}):")
for status in usage.limits:
    print(
        f"  {status.name:10} used {status.used:>9,.0f} of {status.quota:>7,} "
        f"{status.limit.unit:8} fully reset in {_duration(status.reset_after)}"
    )
