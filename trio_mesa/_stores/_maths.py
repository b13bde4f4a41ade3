"""The stores' arithmetic, pure and in integers: GCRA start times for weighted
reservations, the breaker's trip and probe rules, and the budget's fit test.
`MemoryStore` calls these; `RedisStore`'s Lua scripts (`_lua`) are line-for-line
translations of them, and the tests hold the two to the same answers.

The breaker's rules are those of `trio_mesa._breaker.CircuitBreaker` (which still keeps
them inline); times are integer microseconds on the store's clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

__all__ = ["budget_fits", "gcra_hold_off", "gcra_reserve", "gcra_settle", "probes_decide", "trips"]


def gcra_reserve(
    tats: Sequence[int | None],
    gate: int,
    now: int,
    intervals: Sequence[int],
    bursts: Sequence[int],
    weights: Sequence[Sequence[int]],
) -> tuple[list[int], list[int]]:
    """Start offsets (microseconds from ``now``) for ``weights``, in order, and the new
    theoretical arrival time of each bucket.

    A limit has one bucket or more (requests, tokens: `RateLimit`'s request mode); a
    weight has one component per bucket. ``tats[d]`` is bucket ``d``'s theoretical
    arrival time (``None``: never used), ``gate`` the end of the hold-off (``<= now``:
    none). An idle bucket (``tat <= now``) is full: ``burst`` units. In bucket ``d`` a
    weight ``w`` may start once ``min(w, burst)`` units are in it: ``start_d = max(now,
    max(tat, now) - (burst - min(w, burst)) * interval)`` (the first bucket also waits
    for the gate), and then owes ``w * interval`` from ``start_d``: a weight larger than
    the bucket waits for a full one and leaves it in debt. The reservation starts at the
    latest ``start_d``; each bucket keeps its own schedule (as `RateLimit` does). With
    one bucket and weight 1 this is `RateLimit._reserve`.
    """
    levels = [now if tat is None else max(tat, now) for tat in tats]
    offsets = []
    for weight in weights:
        start = max(now, gate)
        for d, w in enumerate(weight):
            own = max(now, levels[d] - (bursts[d] - min(w, bursts[d])) * intervals[d])
            if d == 0:
                own = max(own, gate)
            levels[d] = max(levels[d], own) + w * intervals[d]
            start = max(start, own)
        offsets.append(start - now)
    return offsets, levels


def gcra_hold_off(tat: int | None, now: int, until: int, interval: int, burst: int) -> int:
    """The first bucket's ``tat`` after a hold-off until ``until``: starts resume one at
    a time from there (``RateLimit.hold_off``), even with a burst. Other buckets (tokens)
    keep what they hold."""
    level = now if tat is None else max(tat, now)
    return max(level, until + (burst - 1) * interval)


def gcra_settle(tat: int | None, now: int, interval: int, delta: int) -> int:
    """A bucket's ``tat`` after ``delta`` more units were used (``< 0``: given back),
    counted from ``now`` when it is idle (an idle bucket's debt is zero, never negative)."""
    level = now if tat is None else max(tat, now)
    return level + delta * interval


def trips(calls: int, failed: int, min_calls: int, failure_rate: float) -> bool:
    """Whether a closed breaker whose window holds ``calls`` verdicts, ``failed`` of them
    outages, opens: at least ``min_calls`` and a failure rate of at least
    ``failure_rate`` (checked after an outage only)."""
    return calls >= min_calls and failed / calls >= failure_rate


def probes_decide(
    ok: int, failed: int, probes: int, failure_rate: float, *, outage: bool
) -> Literal["open", "close"] | None:
    """What a half-open breaker does once a probe's verdict is in: reopen when the
    failed share of ``probes`` reaches ``failure_rate`` (after an outage), close when
    even failures of every probe still out could no longer reach it, else wait."""
    if outage and failed / probes >= failure_rate:
        return "open"
    if (probes - ok) / probes < failure_rate:
        return "close"
    return None


def budget_fits(spent: int, reserved: int, amount: int, limit: int | None) -> bool:
    """Whether reserving ``amount`` keeps ``spent + reserved`` at or under ``limit``."""
    return limit is None or spent + reserved + amount <= limit
