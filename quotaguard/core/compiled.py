"""The engine's speed machinery: evaluations compiled per plan, statuses built when read.

Most of a decision's cost in Python is bookkeeping. So `evaluate` runs a function
generated once per tuple of limits (the way attrs and namedtuple generate methods), and
a decision keeps the states it saw in `EvaluatedStatuses`, which builds the
`LimitStatus` objects on first access and answers the named accessors of
`LimitStatuses` (``specs``, ``used``, ``remaining_and_refill``) without building them.
Nothing outside the core sees this module: they read those accessors.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

from quotaguard.core.decision import MOST_SECONDS, LimitStatus, LimitStatuses
from quotaguard.core.kinds import SHOWN, STATUSES, STEPS, USED
from quotaguard.core.policy import Limit, Plan

Verdicts = tuple[
    Callable[..., Any], Sequence[Limit], Sequence[Any], int, Sequence[bool], Sequence[float]
]
"""What building the statuses needs: the builder (`build_statuses` or a compiled one),
limits, the states to show, now, admitted flags and retry-afters (microseconds)."""


def build_statuses(verdicts: Verdicts) -> tuple[LimitStatus, ...]:
    """The statuses of a decision's limits, from what `evaluate` kept."""
    _, limits, states, now, allowed, retries = verdicts
    statuses = []
    for index, limit in enumerate(limits):
        statuses.append(
            STATUSES[limit.__class__](limit, states[index], now, allowed[index], retries[index])
        )
    return tuple(statuses)


class EvaluatedStatuses(LimitStatuses):
    """Statuses built on first access from what `evaluate` kept."""

    __slots__ = ()
    build = staticmethod(lambda verdicts: verdicts[0](verdicts))

    @property
    def specs(self) -> tuple[Limit, ...]:
        """The limits, without building their statuses."""
        payload = self._payload
        if payload is None:
            return super().specs
        return tuple(payload[1])

    @property
    def used(self) -> tuple[float, ...]:
        """Each limit's ``used`` value, computed without building the statuses."""
        payload = self._payload
        if payload is None:
            return super().used
        used_of = getattr(payload[0], "used", None)  # compiled with the plan's builder
        if used_of is not None:
            return used_of(payload)  # type: ignore[no-any-return]
        _, limits, states, now, _, _ = payload
        return tuple(
            USED[limit.__class__](limit, states[index], now) for index, limit in enumerate(limits)
        )

    @property
    def remaining_and_refill(self) -> tuple[tuple[int, float], ...]:
        """Each limit's ``(remaining, refill_after)``, without building the statuses."""
        payload = self._payload
        if payload is None:
            return super().remaining_and_refill
        levels_of = getattr(payload[0], "levels", None)  # compiled with the plan's builder
        if levels_of is not None:
            return levels_of(payload)  # type: ignore[no-any-return]
        _, limits, states, now, _, _ = payload
        levels = []
        for index, limit in enumerate(limits):
            shown, per_second = SHOWN[limit.__class__]
            remaining, refill = shown(limit, states[index], now)
            levels.append((remaining, refill / per_second))
        return tuple(levels)

    @property
    def remaining_and_refill_seconds(self) -> tuple[int, ...]:
        """See `LimitStatuses.remaining_and_refill_seconds`; without building statuses."""
        payload = self._payload
        whole_of = None if payload is None else getattr(payload[0], "whole", None)
        if whole_of is None:
            return super().remaining_and_refill_seconds
        return whole_of(payload)  # type: ignore[no-any-return]


def outcome(
    limits: Sequence[Limit],
    states: Sequence[Any],
    now: int,
    results: Sequence[tuple[Any, bool, float, float]],
) -> tuple[bool, list[Any], LimitStatuses, float]:
    """`evaluate`'s result from each limit's ``step`` result, all-or-nothing."""
    new_states = [result[0] for result in results]
    flags = [result[1] for result in results]
    retries = [result[3] for result in results]
    expiry = max((result[2] for result in results), default=now)
    if all(flags):
        # the statuses keep their own copy: the caller may store (or change) new_states
        kept = tuple(new_states)
        statuses = EvaluatedStatuses((build_statuses, limits, kept, now, flags, retries))
        return True, new_states, statuses, max(expiry, now)
    # show the refusing limits as they were seen, the others untouched
    shown = [
        new if not flag else old for new, flag, old in zip(new_states, flags, states, strict=True)
    ]
    statuses = EvaluatedStatuses((build_statuses, limits, shown, now, flags, retries))
    return False, list(states), statuses, max(expiry, now)


@functools.lru_cache(maxsize=1024)
def compiled(limits: tuple[Limit, ...], per_unit: bool) -> Callable[..., Any]:
    """The compiled evaluation of ``limits`` (cached by limits; see also `BY_PLAN`)."""
    return _compile(limits, per_unit)


def _compile(limits: Sequence[Limit], per_unit: bool) -> Callable[..., Any]:
    """Generate `evaluate` unrolled for these limits.

    The way attrs and namedtuple generate their methods: the generated code calls the
    same `step` functions in the same order as `evaluate_slowly` and returns the same
    values, without the loop.
    """
    count = len(limits)
    names: dict[str, Any] = {
        "limits": limits,
        "Statuses": EvaluatedStatuses,
        "outcome": outcome,
        "all_true": (True,) * count,
        "zeros": (0.0,) * count,
        "ceil": math.ceil,
        "MOST": MOST_SECONDS,
    }
    calls = ", ".join(
        f"status{index}(limit{index}, states[{index}], now, allowed[{index}], retries[{index}])"
        for index in range(count)
    )
    used_calls = ", ".join(
        f"used{index}(limit{index}, states[{index}], now)" for index in range(count)
    )
    shown_calls = "".join(
        f"    r{index}, u{index} = shown{index}(limit{index}, states[{index}], now)\n"
        for index in range(count)
    )
    levels = ", ".join(f"(r{index}, u{index} / per_second{index})" for index in range(count))
    # `decision.whole_seconds_up`, inline: the header reads this on every response
    seconds = "".join(f"    t{index} = u{index} / per_second{index}\n" for index in range(count))
    whole = ", ".join(
        f"r{index} if r{index} > 0 else 0, "
        f"0 if t{index} <= 0 else ceil(t{index}) if t{index} < MOST else MOST"
        for index in range(count)
    )
    comma = "," if count == 1 else ""
    lines = [
        "def build(verdicts):",
        "    _, _, states, now, allowed, retries = verdicts",
        f"    return ({calls}{comma})",
        "",
        "def used(verdicts):",
        "    _, _, states, now, _, _ = verdicts",
        f"    return ({used_calls}{comma})",
        "",
        "def levels(verdicts):",
        "    _, _, states, now, _, _ = verdicts",
        shown_calls + f"    return ({levels}{comma})",
        "",
        "def whole(verdicts):",
        "    _, _, states, now, _, _ = verdicts",
        shown_calls + seconds + f"    return ({whole}{comma})",
        "",
        "build.used = used",
        "build.levels = levels",
        "build.whole = whole",
        "",
        "def evaluate(states, now, cost, lease):",
    ]
    for index, limit in enumerate(limits):
        names[f"status{index}"] = STATUSES[limit.__class__]
        names[f"used{index}"] = USED[limit.__class__]
        names[f"shown{index}"], names[f"per_second{index}"] = SHOWN[limit.__class__]
        names[f"step{index}"] = STEPS[limit.__class__]
        names[f"limit{index}"] = limit
        if per_unit:
            default = 1 if limit.unit == "requests" else 0
            lines.append(f"    c{index} = cost.get({limit.unit!r}, {default})")
        amount = f"c{index}" if per_unit else "cost"
        lines.append(
            f"    r{index} = step{index}(limit{index}, states[{index}], now, {amount}, lease)"
        )
    results = ", ".join(f"r{index}" for index in range(count))
    if count == 0:
        lines.append("    return True, [], Statuses((build, limits, (), now, (), ())), now")
    else:
        admitted = " and ".join(f"r{index}[1]" for index in range(count))
        new_states = ", ".join(f"r{index}[0]" for index in range(count))
        lines.append(f"    if {admitted}:")
        lines.append(f"        shown = ({new_states},)")
        lines.append("        expiry = r0[2]")
        for index in range(1, count):
            lines.append(f"        if r{index}[2] > expiry:")
            lines.append(f"            expiry = r{index}[2]")
        lines.append("        statuses = Statuses((build, limits, shown, now, all_true, zeros))")
        lines.append("        return True, list(shown), statuses, expiry")
        lines.append(f"    return outcome(limits, states, now, ({results},))")
    source = "\n".join(lines)
    exec(compile(source, f"<quotaguard evaluate {count} limits>", "exec"), names)
    return names["evaluate"]  # type: ignore[no-any-return]


ByPlan = dict[int, tuple[Plan, Callable[..., Any]]]

BY_PLAN: tuple[ByPlan, ByPlan] = ({}, {})
"""For number costs, then per-unit costs: id(plan) -> (plan, its compiled evaluation).

An id is cheaper to hash than the limits; the entry keeps the plan alive, so its id is
not reused while cached. `quotaguard.core.engine.evaluate_plan` reads it; `remember`
fills it.
"""


def remember(plan: Plan, per_unit: bool) -> tuple[Plan, Callable[..., Any]]:
    """Compile (or find by limits) ``plan``'s evaluation and keep it in `BY_PLAN`."""
    by_plan = BY_PLAN[per_unit]
    if len(by_plan) >= 4096:  # overrides make plan variants: stay bounded
        by_plan.clear()
    entry = by_plan[id(plan)] = (plan, compiled(plan.limits, per_unit))
    return entry
