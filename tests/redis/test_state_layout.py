"""The state string's layout: rings written in place, reshaped when they must, upgraded once.

Each scenario runs on the memory backend and on Redis side by side and requires the
same decisions, so every path of state.lua (in place, a region allocated, grown,
widened, converted, refunded, reset, expired, the previous format upgraded) is checked
against quotaguard.core. Set QG_LAYOUT_EXAMPLES to run the random traffic longer.
"""

from __future__ import annotations

import os
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quotaguard import Concurrency, Guard, MemoryBackend, Plan, RollingWindow, TokenBucket
from quotaguard.backends.redis import ClientSettings, RedisBackend
from quotaguard.core import rolling_window
from quotaguard.core.errors import LeaseError
from quotaguard.core.meaning import meaning
from quotaguard.testing import FakeClock
from tests import redis_support

SHORT = Plan(
    "short", [RollingWindow("win", 10**12, 60, 5), Concurrency("slots", 10_000, lease_ttl=600)]
)
LONGER = Plan("longer", [RollingWindow("win", 10**12, 120, 5)])  # the ring must grow
COARSER = Plan("coarser", [RollingWindow("win", 10**12, 120, 10)])  # another meaning
TIGHT = Plan("tight", [RollingWindow("win", 5_000, 60, 5)])
# the same names again, with token buckets of two meanings: debt, refunds, conversions
FAST = Plan("fast", [TokenBucket("burst", 50, "10/second"), RollingWindow("win", 10**6, 60, 5)])
SLOW = Plan("slow", [TokenBucket("burst", 80, "1/second"), RollingWindow("win", 10**6, 120, 10)])
# sections longer than the script's first read of the string
MANY = Plan("many", [RollingWindow(f"window_with_a_long_name_{i}", 10**9, 60, 5) for i in range(8)])
PLANS = [SHORT, LONGER, COARSER, TIGHT, FAST, SLOW, MANY]


def _settled(lease: Any, cost: Any) -> Any:
    try:
        return lease.settle(cost).actual
    except LeaseError as error:
        return type(error)


class Pair:
    """The same guard on memory and on Redis, on one FakeClock."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.client = redis_support.sync_client("standalone")
        # no denial answered from the process's memory: it shows the usage of when it
        # was remembered (quotaguard.backends.redis.local), and these tests compare usage
        self.backend = RedisBackend(
            self.client,
            prefix=redis_support.fresh_prefix(),
            settings=ClientSettings(max_staleness=0),
        )
        self.memory = Guard(
            PLANS, MemoryBackend(clock=self.clock), default_plan="short", clock=self.clock
        )
        self.redis = Guard(PLANS, self.backend, default_plan="short", clock=self.clock)
        self.leases: list[tuple[Any, Any]] = []

    def state(self, customer: str) -> bytes:
        return self.client.get(self.backend.keys.customer(customer)[1]) or b""

    def acquire(self, customer: str, cost: Any, plan: str | None = None) -> bool:
        expected = self.memory.acquire(customer, cost, plan=plan)
        actual = self.redis.acquire(customer, cost, plan=plan)
        assert actual == expected
        return actual.allowed

    def reserve(self, customer: str, cost: Any, plan: str | None = None) -> None:
        expected = self.memory.reserve(customer, cost, plan=plan, ttl=600)
        actual = self.redis.reserve(customer, cost, plan=plan, ttl=600)
        assert actual.decision == expected.decision
        if actual.allowed:
            self.leases.append((expected, actual))

    def settle(self, index: int, cost: Any) -> None:
        if self.leases:
            expected, actual = self.leases.pop(index % len(self.leases))
            assert _settled(actual, cost) == _settled(expected, cost)

    def usage(self, customer: str, plan: str | None = None) -> None:
        assert self.redis.usage(customer, plan=plan) == self.memory.usage(customer, plan=plan)

    def close(self) -> None:
        self.redis.close()


customers = st.sampled_from(["a", "b"])
plans = st.sampled_from([None, "longer", "coarser", "tight", "fast", "slow"])
costs = st.sampled_from([1, 3, 200, 300, 70_000, 0.5, 2.25, 0, 2**33])
operations = st.one_of(
    st.tuples(st.just("acquire"), customers, costs, plans),
    st.tuples(st.just("reserve"), customers, costs, plans),
    st.tuples(st.just("settle"), st.integers(0, 7), costs),
    st.tuples(st.just("usage"), customers, plans),
    st.tuples(st.just("reset"), customers),
    st.tuples(st.just("advance"), st.sampled_from([0.001, 1, 4.9, 5, 17, 59, 61, 130, 400, 7_000])),
)


@settings(
    max_examples=int(os.environ.get("QG_LAYOUT_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(operations, min_size=20, max_size=150))
def test_random_traffic_over_plans_sharing_names_matches_memory(
    server: Any, ops: list[tuple[Any, ...]]
) -> None:
    pair = Pair()
    try:
        for op in ops:
            kind = op[0]
            if kind == "acquire":
                pair.acquire(op[1], op[2], op[3])
            elif kind == "reserve":
                pair.reserve(op[1], op[2], op[3])
            elif kind == "settle":
                pair.settle(op[1], op[2])
            elif kind == "usage":
                pair.usage(op[1], op[2])
            elif kind == "reset":
                for guard in (pair.memory, pair.redis):
                    guard.reset(op[1], ["win"])
            else:
                pair.clock.advance(op[1])
    finally:
        pair.close()


def test_a_ring_wraps_around_its_region_many_times(server: Any) -> None:
    pair = Pair()
    try:
        for second in range(0, 3_000, 3):
            pair.acquire("c", 1 + second % 7)
            pair.clock.advance(3)
        pair.usage("c")
    finally:
        pair.close()


def _commands(client: Any) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name: stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("set", "setrange")}


def test_the_usual_decision_writes_in_place(server: Any) -> None:
    pair = Pair()
    try:
        for _ in range(20):  # a full ring: its region exists
            assert pair.acquire("c", 5)
            pair.clock.advance(5)
        size = len(pair.state("c"))
        before = _commands(pair.client)
        for _ in range(30):  # each call closes a bucket and drops the oldest one
            assert pair.acquire("c", 5)
            pair.clock.advance(5)
        after = _commands(pair.client)
        assert after["set"] == before["set"]
        assert after["setrange"] - before["setrange"] >= 60
        assert len(pair.state("c")) == size
        assert pair.state("c")[:1] == b"\x00"
    finally:
        pair.close()


def test_a_count_that_outgrows_its_slots_widens_the_ring(server: Any) -> None:
    pair = Pair()
    try:
        for cost in (1, 255, 256, 65_536, 2**32, 0.5, 1):
            pair.acquire("c", cost)
            pair.clock.advance(5)
            pair.acquire("c", 1)
        pair.usage("c")
        pair.reserve("c", 2**33)
        pair.clock.advance(5)
        pair.settle(0, 1)  # the refund leaves a count below its old width
        pair.usage("c")
    finally:
        pair.close()


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def _old_ring(buckets: tuple[float, ...], step: int) -> bytes:
    """A ring in the previous format: five doubles, then a varint per closed bucket."""
    total, *pairs = buckets
    starts, counts = pairs[0::2], pairs[1::2]
    body = b""
    for j in range(len(starts) - 1):
        delta = starts[j + 1] - starts[j]
        count = counts[j]
        flags = 0 if delta == step else 1
        if count == int(count):
            body += _varint(int(count) * 4 + flags)
        else:
            body += _varint(2 + flags) + struct.pack("<d", count)
        if flags:
            body += _varint(int(2 * delta))
    head = struct.pack("<ddddd", total, starts[0], starts[-1], counts[-1], step)
    return head + body


def test_a_state_of_the_previous_format_is_upgraded_on_first_touch(server: Any) -> None:
    pair = Pair()
    try:
        limit = SHORT.limits[0]
        assert isinstance(limit, RollingWindow)
        ring: rolling_window.State = None
        for cost in (4, 0, 9, 1.5, 300):
            pair.memory.acquire("c", cost)
            ring = rolling_window.step(limit, ring, pair.clock.now_us(), cost)[0]
            pair.clock.advance(10)
        assert ring is not None
        name = f"win|{meaning(limit)}".encode()
        state = _old_ring(ring.buckets(), limit.granularity_us)
        section = bytes((len(name),)) + name + struct.pack("<I", len(state)) + state
        key = pair.backend.keys.customer("c")[1]
        pair.client.set(key, section, px=600_000)
        pair.usage("c")
        assert pair.acquire("c", 2)
        assert pair.state("c")[:1] == b"\x00"
        pair.clock.advance(30)
        assert pair.acquire("c", 2)
        pair.usage("c")
    finally:
        pair.close()


def test_a_ring_converted_to_another_granularity_matches_memory(server: Any) -> None:
    pair = Pair()
    try:
        for cost in (3, 0.5, 7, 2, 300):
            pair.acquire("c", cost)
            pair.clock.advance(7)
        pair.acquire("c", 1, plan="coarser")
        pair.usage("c", plan="coarser")
        pair.clock.advance(9)
        pair.acquire("c", 2, plan="coarser")
        pair.acquire("c", 2)
        pair.usage("c")
    finally:
        pair.close()


def test_a_state_past_its_expiry_reads_as_absent_under_a_longer_window(server: Any) -> None:
    pair = Pair()
    try:
        assert pair.acquire("c", 7)  # stored for the 60 s window: it expires after 65 s
        pair.clock.advance(66)
        assert pair.redis.usage("c", plan="longer").limits[0].used == 0
        pair.usage("c", plan="longer")  # whether or not memory has swept it yet
        assert pair.acquire("c", 2, plan="longer")
        pair.usage("c", plan="longer")
    finally:
        pair.close()


def test_sections_longer_than_the_first_read_are_read_whole(server: Any) -> None:
    pair = Pair()
    try:
        for _ in range(12):
            assert pair.acquire("c", 3, plan="many")
            pair.clock.advance(5)
        assert len(pair.state("c")) > 320
        pair.usage("c", plan="many")
    finally:
        pair.close()
