"""Carry timed state from one caller's clock to another's.

`RateLimit` and `CircuitBreaker` keep times (the next free slot, when a circuit
half-opens) on the clock of whoever calls them. Trio gives every ``trio.run`` a clock
of its own with an arbitrary offset (and ``MockClock`` a virtual one), so a value
shared between runs must translate its stored times when the clock changes. This
module holds that translation; the caller holds the lock.
"""

from __future__ import annotations

import time

__all__ = ["ClockDomain"]


class ClockDomain:
    """The clock stored times are on, and the last moment it was read.

    Not thread-safe by itself: its owner calls `shift` under its own lock.
    """

    __slots__ = ("_clock", "_last_now", "_last_real")

    def __init__(self) -> None:
        # A strong reference: an id() of a dead clock could be reused by the next run's.
        self._clock: object = None
        self._last_now: float | None = None
        self._last_real = 0.0

    @property
    def clock(self) -> object:
        """The token of the clock stored times are on (``None`` before any was given)."""
        return self._clock

    def shift(self, clock: object, now: float, elapsed: float | None = None) -> float:
        """Seconds to add to every stored time so that it is on ``clock``.

        ``clock=None`` means "the clock of the last call": nothing moves. The first
        clock ever given is adopted as is. When ``clock`` is a different object from the
        last one, the last time read on the old clock is mapped to ``now - elapsed`` on
        the new one; ``elapsed=None`` measures it with ``time.perf_counter`` (exact for
        real clocks, Trio's default clock is ``perf_counter`` plus an offset; a virtual
        clock's caller should pass the elapsed virtual time it wants, e.g. ``0.0``).

        Every call records ``now`` as the latest reading, so a caller that also calls
        at the end of its run makes the next translation exact.
        """
        real = time.perf_counter()
        offset = 0.0
        if clock is not None and clock is not self._clock:
            if self._clock is not None and self._last_now is not None:
                gap = real - self._last_real if elapsed is None else elapsed
                offset = now - gap - self._last_now
            self._clock = clock
        self._last_now = now
        self._last_real = real
        return offset
