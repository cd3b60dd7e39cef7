"""The packed ring against the flat-tuple reference: same buckets, totals and waits.

Every version of a state must stay as it was while later versions (and branches from
older ones) share its counts: the core is pure even though it appends in place.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from quotaguard import RollingWindow
from quotaguard.core import rolling_window
from tests.core import rolling_window_reference as reference

SECOND = 1_000_000
START = 1_767_225_600 * SECOND
SPEC_ARGS = st.tuples(st.sampled_from([40, 3000, 10**6]), st.sampled_from([1, 60, 300]))
AMOUNTS = st.one_of(
    st.integers(0, 60), st.sampled_from([0.5, 2.25, 300, 70_000, 2**40]), st.integers(0, 3)
)
STEP = st.tuples(st.just("step"), st.integers(0, 400 * SECOND), AMOUNTS)
OPS = st.lists(
    st.one_of(
        STEP,
        STEP,
        STEP,
        st.tuples(
            st.just("settle"), st.integers(0, 400 * SECOND), AMOUNTS, st.booleans(), st.integers()
        ),
        st.tuples(st.just("branch"), st.integers(0, 10**6)),
        st.tuples(st.just("step"), st.integers(3000 * SECOND, 9000 * SECOND), AMOUNTS),
    ),
    min_size=10,
    max_size=80,
)


def well_formed(spec: RollingWindow, ring: rolling_window.State) -> None:
    if ring is None:
        return
    _, first, last, last_count, counts, head, tail = ring
    assert last - first == (tail - head) * spec.granularity_us
    assert tail - head <= spec.buckets and tail <= len(counts)
    assert len(counts) < 32 + 2 * spec.buckets + 2  # dead slots are compacted away
    assert head == tail or counts[head] > 0  # the oldest bucket kept is a non-empty one
    assert last_count > 0


@settings(max_examples=250, deadline=None)
@given(SPEC_ARGS, OPS)
def test_the_ring_matches_the_flat_reference_in_every_version(spec_args, ops):
    quota, granularity_s = spec_args
    spec = RollingWindow("w", quota, 3600, granularity_s, unit="tokens")
    now = START
    ring: rolling_window.State = None
    flat: reference.Flat = None
    versions: list[tuple[rolling_window.State, reference.Flat]] = []
    reserved = [now]  # when the steps so far were taken: a settlement's reservation time
    for op in ops:
        if op[0] == "branch":
            if versions:
                ring, flat = versions[op[1] % len(versions)]
            continue
        now += op[1]
        if op[0] == "step":
            ring, admitted, _, _ = rolling_window.step(spec, ring, now, op[2])
            flat, expected = reference.step(spec, flat, now, op[2])
            assert admitted == expected
            reserved.append(now)
        else:
            at = reserved[op[4] % len(reserved)]
            delta = -op[2] if op[3] else op[2]
            ring, _ = rolling_window.settle(spec, ring, now, at, "lease", delta)
            flat = reference.settle(spec, flat, now, at, delta)
        assert (ring is None) == (flat is None)
        if ring is not None:
            assert ring.buckets() == flat
            assert rolling_window.from_buckets(spec, flat) == ring
            for cost in (1, quota):
                assert rolling_window._retry_us(spec, ring, now, cost) == reference.retry_us(
                    spec, flat, now, cost
                )
        well_formed(spec, ring)
        versions.append((ring, flat))
    for ring, flat in versions:  # later versions and branches changed none of them
        assert (ring is None and flat is None) or ring.buckets() == flat


def test_counts_take_the_narrowest_array_type_that_holds_them():
    spec = RollingWindow("weekly", 10**12, "7 days", "1 hour", unit="tokens")
    ring: rolling_window.State = None
    now = START
    for _ in range(spec.buckets + 50):  # a full week of one call an hour, and more
        ring = rolling_window.step(spec, ring, now, 100)[0]
        now += 3600 * SECOND
    assert ring is not None
    assert ring[4].itemsize == 1 and len(ring[4]) <= 2 * spec.buckets + 32
    assert ring.buckets()[0] == 100 * (spec.buckets + 1)
    wide = rolling_window.step(spec, ring, now, 300)[0]
    wider = rolling_window.step(spec, wide, now + 3600 * SECOND, 1)[0]
    assert wider is not None and wider[4].itemsize == 2
    fraction = rolling_window.step(spec, wider, now + 7200 * SECOND, 0.5)[0]
    fractional = rolling_window.step(spec, fraction, now + 3 * 3600 * SECOND, 1)[0]
    assert fractional is not None and fractional[4].typecode == "d"
    assert fractional.buckets()[-4:] == (now + 7200 * SECOND, 0.5, now + 3 * 3600 * SECOND, 1)
    assert ring.buckets()[0] == 100 * (spec.buckets + 1)  # the older version is untouched


def test_a_decisions_statuses_read_late_show_the_window_as_it_decided():
    from quotaguard import Guard, Plan
    from quotaguard.testing import FakeClock

    def guard_on(clock: FakeClock) -> Guard:
        weekly = RollingWindow("weekly", 100, "7 days", "1 hour", unit="tokens")
        hourly = RollingWindow("hourly", 150, "1 hour", "1 minute", unit="tokens")
        return Guard([Plan("p", [weekly, hourly])], default_plan="p", clock=clock)

    clock, alone_clock = FakeClock(), FakeClock()
    guard, alone = guard_on(clock), guard_on(alone_clock)
    for _ in range(30):  # rings with closed buckets, shared by every later version
        guard.acquire("c", {"tokens": 3})
        alone.acquire("c", {"tokens": 3})
        clock.advance(3600)
        alone_clock.advance(3600)
    early = guard.acquire("c", {"tokens": 20})  # refused: its retry-after walks the ring
    expected = alone.acquire("c", {"tokens": 20}).limits
    assert not early.allowed
    for _ in range(300):  # later decisions append in place and compact, refusals included
        clock.advance(1800)
        guard.acquire("c", {"tokens": 1})
    assert early.limits == expected
