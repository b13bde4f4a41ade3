"""`MemoryStore`: the state store of one process, in memory, thread-safe, with the same
integer arithmetic as `RedisStore` (`_maths`). The tests' reference, and what a
`RedisStore` falls back to when its server is out of reach.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from . import _args
from ._maths import budget_fits, gcra_hold_off, gcra_reserve, gcra_settle, probes_decide, trips
from ._types import (
    BreakerClaim,
    BreakerRule,
    BreakerState,
    BreakerStatus,
    BudgetGrant,
    BudgetLimits,
    BudgetTotals,
    Fallback,
    Grant,
    HoldOffResult,
    Quota,
    Settlement,
    Spend,
    Verdict,
    check_name,
)

__all__ = ["MemoryStore"]


@dataclass
class _Rate:
    tats: dict[int, int] = field(default_factory=dict)  # per bucket
    gate: int = 0  # end of the hold-off (<= now: none)
    epoch: int = 0


@dataclass
class _Breaker:
    state: BreakerState = "closed"
    open_until: int = 0
    openings: int = 0
    reason: str = ""
    in_flight: int = 0
    probe_ok: int = 0
    probe_failed: int = 0
    verdicts: deque[tuple[int, bool]] = field(default_factory=deque)
    failed: int = 0


def _micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


class MemoryStore:
    """A `StateStore` in this process's memory: every call takes a ``threading.Lock``
    for a few integer operations, never awaits anything, and so is atomic by itself.

    Time is ``clock()`` (seconds; ``time.monotonic`` by default), read once per call
    and kept in whole microseconds. Pass ``clock=`` to drive it in tests (or with a
    Trio run's clock); answers are relative to it, like `RedisStore`'s are to the
    server's ``TIME``.

    Args:
        clock: a function returning the current time in seconds.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._rates: dict[str, _Rate] = {}
        self._breakers: dict[str, _Breaker] = {}
        self._budgets: dict[str, list[int]] = {}

    def __repr__(self) -> str:
        return (
            f"MemoryStore(rate_limits={len(self._rates)}, breakers={len(self._breakers)}, "
            f"budgets={len(self._budgets)})"
        )

    @property
    def fallbacks(self) -> tuple[Fallback, ...]:
        """Always empty: memory never falls back."""
        return ()

    async def check(self) -> None:
        """Nothing to check: memory is always there."""

    def _now(self) -> int:
        return _micros(self._clock())

    # Rate limits -------------------------------------------------------------------

    async def rate_reserve(
        self,
        name: str,
        quota: Quota | Sequence[Quota],
        weights: Sequence[int] | Sequence[Sequence[int]],
    ) -> Grant:
        """See `StateStore.rate_reserve`."""
        return self.rate_reserve_now(name, quota, weights)

    def rate_reserve_now(
        self,
        name: str,
        quota: Quota | Sequence[Quota],
        weights: Sequence[int] | Sequence[Sequence[int]],
    ) -> Grant:
        """`rate_reserve` without awaiting (memory needs no round trip)."""
        check_name(name)
        quotas = _args.quotas(quota)
        parts = _args.weights(weights, len(quotas))
        with self._lock:
            now = self._now()
            rate = self._rates.setdefault(name, _Rate())
            return self._reserve(rate, now, quotas, parts)

    def _reserve(
        self, rate: _Rate, now: int, quotas: tuple[Quota, ...], weights: Sequence[Sequence[int]]
    ) -> Grant:
        offsets, levels = gcra_reserve(
            [rate.tats.get(d) for d in range(len(quotas))],
            rate.gate,
            now,
            [q.interval_us for q in quotas],
            [q.burst for q in quotas],
            weights,
        )
        rate.tats.update(enumerate(levels))
        return Grant(
            tuple(o / 1_000_000 for o in offsets),
            rate.epoch,
            max(0, rate.gate - now) / 1_000_000,
        )

    async def rate_confirm(
        self,
        name: str,
        quota: Quota | Sequence[Quota],
        epoch: int,
        weights: Sequence[int] | Sequence[Sequence[int]],
    ) -> Grant | None:
        """See `StateStore.rate_confirm`."""
        check_name(name)
        quotas = _args.quotas(quota)
        parts = _args.weights(weights, len(quotas))
        with self._lock:
            now = self._now()
            rate = self._rates.setdefault(name, _Rate())
            if epoch != rate.epoch and rate.gate > now:
                return self._reserve(rate, now, quotas, parts)
            return None

    async def rate_hold_off(
        self, name: str, quota: Quota | Sequence[Quota], seconds: float
    ) -> HoldOffResult:
        """See `StateStore.rate_hold_off`."""
        check_name(name)
        first = _args.quotas(quota)[0]
        ms = _args.hold_off_ms(seconds)
        with self._lock:
            now = self._now()
            rate = self._rates.setdefault(name, _Rate())
            until = now + ms * 1000
            if until <= rate.gate:
                return HoldOffResult(False, max(0, rate.gate - now) / 1_000_000, rate.epoch)
            rate.gate = until
            rate.epoch += 1
            rate.tats[0] = gcra_hold_off(
                rate.tats.get(0), now, until, first.interval_us, first.burst
            )
            return HoldOffResult(True, ms / 1000, rate.epoch)

    async def rate_settle(
        self, name: str, quota: Quota | Sequence[Quota], delta: int | Sequence[int]
    ) -> None:
        """See `StateStore.rate_settle`."""
        check_name(name)
        quotas = _args.quotas(quota)
        deltas = _args.deltas(delta, len(quotas))
        with self._lock:
            now = self._now()
            rate = self._rates.setdefault(name, _Rate())
            for d, (q, moved) in enumerate(zip(quotas, deltas, strict=True)):
                rate.tats[d] = gcra_settle(rate.tats.get(d), now, q.interval_us, moved)

    # Breakers ----------------------------------------------------------------------

    async def breaker_claim(self, name: str, rule: BreakerRule, n: int = 1) -> BreakerClaim:
        """See `StateStore.breaker_claim`."""
        check_name(name)
        n = _args.count(n)
        with self._lock:
            now = self._now()
            b = self._breakers.setdefault(name, _Breaker())
            if b.state == "closed":
                return BreakerClaim(n, 0, self._status(b, now, rule))
            if b.state == "open":
                if now < b.open_until:
                    return BreakerClaim(0, 0, self._status(b, now, rule))
                b.state = "half_open"
                b.probe_ok = b.probe_failed = 0
            free = max(0, rule.probes - (b.in_flight + b.probe_ok + b.probe_failed))
            k = min(free, n)
            b.in_flight += k
            return BreakerClaim(k, k, self._status(b, now, rule))

    async def breaker_record(
        self, name: str, rule: BreakerRule, verdicts: Sequence[Verdict]
    ) -> BreakerStatus:
        """See `StateStore.breaker_record`."""
        check_name(name)
        verdicts = _args.verdicts(verdicts)
        with self._lock:
            now = self._now()
            b = self._breakers.setdefault(name, _Breaker())
            opened = closed = False
            for v in verdicts:
                if v.probe:
                    b.in_flight = max(0, b.in_flight - 1)
                    if v.kind == "neutral" or b.state != "half_open":
                        continue
                    if v.kind == "success":
                        b.probe_ok += 1
                    else:
                        b.probe_failed += 1
                    decision = probes_decide(
                        b.probe_ok,
                        b.probe_failed,
                        rule.probes,
                        rule.failure_rate,
                        outage=v.kind == "outage",
                    )
                    if decision == "open":
                        self._open(b, now, rule, _probe_reason(b, rule, v))
                        opened = True
                    elif decision == "close":
                        b.state = "closed"
                        b.verdicts.clear()
                        b.failed = 0
                        closed = True
                elif b.state == "closed" and v.kind != "neutral":
                    failed = v.kind == "outage"
                    b.verdicts.append((now, failed))
                    b.failed += failed
                    self._expire(b, now, rule)
                    calls = len(b.verdicts)
                    if failed and trips(calls, b.failed, rule.min_calls, rule.failure_rate):
                        reason = (
                            f"{b.failed} of {calls} calls within {rule.window:g}s failed; "
                            f"the last {v.reason}"
                        )
                        self._open(b, now, rule, reason)
                        opened = True
            status = self._status(b, now, rule)
            return _with(status, opened=opened, closed=closed)

    async def breaker_status(self, name: str, rule: BreakerRule) -> BreakerStatus:
        """See `StateStore.breaker_status`."""
        check_name(name)
        with self._lock:
            now = self._now()
            b = self._breakers.get(name) or _Breaker()
            return self._status(b, now, rule)

    def _open(self, b: _Breaker, now: int, rule: BreakerRule, reason: str) -> None:
        b.state = "open"
        b.open_until = now + rule.reset_after_ms * 1000
        b.openings += 1
        b.reason = reason
        b.verdicts.clear()
        b.failed = 0

    @staticmethod
    def _expire(b: _Breaker, now: int, rule: BreakerRule) -> None:
        horizon = now - rule.window_us
        while b.verdicts and b.verdicts[0][0] <= horizon:
            if b.verdicts.popleft()[1]:
                b.failed -= 1

    @staticmethod
    def _status(b: _Breaker, now: int, rule: BreakerRule) -> BreakerStatus:
        state = b.state
        left = 0
        if state == "open":
            left = max(0, b.open_until - now)
            if left == 0:
                state = "half_open"
        horizon = now - rule.window_us
        live = [f for t, f in b.verdicts if t > horizon]
        return BreakerStatus(state, left / 1_000_000, b.openings, b.reason, len(live), sum(live))

    # Budgets -----------------------------------------------------------------------

    async def budget_reserve(
        self, name: str, limits: BudgetLimits, spends: Sequence[Spend]
    ) -> BudgetGrant:
        """See `StateStore.budget_reserve`."""
        check_name(name)
        spends = _args.spends(spends)
        with self._lock:
            t = self._budgets.setdefault(name, [0, 0, 0, 0, 0])
            granted = []
            for s in spends:
                ok = budget_fits(t[0], t[2], s.micro_usd, limits.max_micro_usd) and budget_fits(
                    t[1], t[3], s.tokens, limits.max_tokens
                )
                if ok:
                    t[2] += s.micro_usd
                    t[3] += s.tokens
                granted.append(ok)
            return BudgetGrant(tuple(granted), BudgetTotals(*t))

    async def budget_settle(self, name: str, settlements: Sequence[Settlement]) -> BudgetTotals:
        """See `StateStore.budget_settle`."""
        check_name(name)
        settlements = _args.settlements(settlements)
        with self._lock:
            t = self._budgets.setdefault(name, [0, 0, 0, 0, 0])
            for s in settlements:
                t[0] += s.actual.micro_usd
                t[1] += s.actual.tokens
                t[2] = max(0, t[2] - s.reserved.micro_usd)
                t[3] = max(0, t[3] - s.reserved.tokens)
                t[4] += 1
            return BudgetTotals(*t)

    async def budget_totals(self, name: str) -> BudgetTotals:
        """See `StateStore.budget_totals`."""
        check_name(name)
        with self._lock:
            return BudgetTotals(*self._budgets.get(name, [0, 0, 0, 0, 0]))


def _with(status: BreakerStatus, *, opened: bool, closed: bool) -> BreakerStatus:
    return BreakerStatus(
        status.state,
        status.half_opens_in,
        status.openings,
        status.reason,
        status.calls,
        status.failed,
        opened,
        closed,
    )


def _probe_reason(b: _Breaker, rule: BreakerRule, v: Verdict) -> str:
    if rule.probes == 1:
        return f"a probe call failed; the last {v.reason}"
    return f"{b.probe_failed} of {rule.probes} probe calls failed; the last {v.reason}"
