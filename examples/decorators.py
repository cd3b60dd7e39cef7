"""quotaguard without a web framework: decorators and leases in a plain script.

Run it:  .venv/bin/python examples/decorators.py
"""

from __future__ import annotations

import asyncio

from quotaguard import (
    AsyncGuard,
    Concurrency,
    Decision,
    Guard,
    Plan,
    QuotaExceeded,
    RollingWindow,
    TokenBucket,
)
from quotaguard.testing import FakeClock

PLANS = [
    Plan(
        "free",
        [
            TokenBucket("burst", 3, "1/10 seconds"),
            RollingWindow.from_rate("daily", "2000/day", unit="tokens"),
        ],
    ),
    Plan("workers", [Concurrency("in_flight", 2)]),
]

clock = FakeClock()  # the demo moves time by hand; drop it to use the real clock
guard = Guard(PLANS, default_plan="free", clock=clock)


@guard.limit("customer")
def lookup(customer: str, query: str) -> str:
    """One request each; raises QuotaExceeded past the burst limit."""
    return f"{customer} looked up {query!r}"


def too_busy(decision: Decision, customer: str, prompt: str) -> str:
    if decision.never:
        return f"too large for plan {decision.plan!r}"
    return f"busy, retry in {decision.retry_after:.0f}s"


@guard.limit(
    "customer",
    cost=lambda customer, prompt: {"tokens": 10 * len(prompt.split())},
    fallback=too_busy,
)
def summarise(customer: str, prompt: str) -> str:
    """Costs 10 tokens per word (and one request); answers "busy" instead of raising."""
    return prompt.split()[0] + "..."


class Reports:
    """Decorated methods work too: the customer comes from an argument of the method."""

    @guard.limit(lambda self, account: account.upper(), plan="workers")
    def build(self, account: str) -> str:
        return f"report for {account}"


async_guard = AsyncGuard(PLANS, default_plan="free", clock=clock)


@async_guard.limit("customer", scope="batch")
async def embed(customer: str, text: str) -> int:
    await asyncio.sleep(0)
    return len(text)


def main() -> None:
    for index in range(4):
        try:
            print(lookup("alice", f"q{index}"))
        except QuotaExceeded as refused:
            print("refused:", refused, "| limits:", refused.decision.denied_by)
    clock.advance(10)
    print(lookup("alice", "after waiting 10 s"))

    print(summarise("bob", "a long and winding road"))
    print(summarise("bob", "word " * 250))  # 2500 tokens can never fit in 2000/day

    print(Reports().build("acme"))

    # Reserve an estimate, settle the real cost; an error inside settles at the estimate.
    with guard.reserve("carol", {"tokens": 500}) as lease:
        lease.settle({"tokens": 120})
    print("carol used", guard.usage("carol").limit("daily").used, "tokens")

    print("embedded", asyncio.run(embed("dave", "hello")), "characters")


if __name__ == "__main__":
    main()
