"""`RateLimit`: at most ``rate`` attempt starts per ``per`` seconds, shared by every agent
(and step, and model) that holds it, with a gate any agent can close for everyone when
a provider answers "retry after": one 429 pauses the herd. A GCRA (the token bucket
written as one "theoretical arrival time"), kept synchronous: the caller asks for a slot
with its own ``now`` and sleeps with its own loop, so asyncio and Trio tasks can share
one, in virtual time under ``trio.testing.MockClock``.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from ._checks import check_count, check_number, check_seconds
from ._clock_domain import ClockDomain

__all__ = ["HoldOff", "RateLimit", "Reservation"]


@dataclass(frozen=True, slots=True)
class Reservation:
    """A start slot handed out by `RateLimit.reserve`: sleep until ``start``, then ask
    `RateLimit.confirm` whether it still holds.

    Attributes:
        start: when the caller may start, on its own clock (``>=`` the ``now`` it gave).
        epoch: how many hold-offs the limit had seen when the slot was given (opaque:
            `confirm` uses it to tell whether a hold-off came after the reservation).
    """

    start: float
    epoch: int


@dataclass(frozen=True, slots=True)
class HoldOff:
    """A closing of the gate, for the report (`RateLimit.last_hold_off`).

    Attributes:
        at: when it was asked for, on the clock of the call that asked.
        until: no start before this time (same clock).
        reason: what the caller said, e.g. ``"RateLimitError: ... (Retry-After 2s)"``.
    """

    at: float
    until: float
    reason: str


class RateLimit:
    """At most ``rate`` starts per ``per`` seconds, in bursts of at most ``burst``.

    Slots are spaced ``per / rate`` seconds apart (the emission interval); up to
    ``burst`` slots may be taken at the same instant when the limit has been idle long
    enough to have saved them. Formally (GCRA): among any ``k`` consecutive starts, the
    last is at least ``(k - burst) * per / rate`` seconds after the first; so any
    half-open window ``[t, t + per)`` holds at most ``burst + ceil(rate) - 1`` starts
    (``rate`` starts when ``burst=1`` and ``rate`` is an integer).

    ``burst=None`` (default) means ``1``: starts strictly spaced ``per / rate`` apart,
    never two at the same instant. That is the safest against a provider's quota, whose
    own bucket may be small or may count a window that does not line up with ours; the
    cost is that the first second admits its ``rate`` starts spread over that second
    instead of all at ``t=0``. A larger ``burst`` lets an idle limit start that many at
    once.

    Slots are handed out first come, first served, in the order of `reserve` calls.
    One RateLimit is meant to be shared, like a ``trio.CapacityLimiter``: between the
    agents of a step, between steps, and between models calling the same provider. It
    is a mutable object; every method is synchronous, takes the caller's ``now``
    (seconds on its clock: ``trio.current_time()``), never sleeps, and holds a
    ``threading.Lock`` only for a few arithmetic operations: safe to call from any
    thread and from asyncio and Trio tasks.

    The engine's loop for one attempt::

        reservation = limit.reserve(now())
        while reservation is not None:
            await sleep_until(reservation.start)     # cancellable, on the caller's loop
            reservation = limit.confirm(reservation, now())
        # start the attempt

    A slot is spent when it is handed out: a caller cancelled while waiting does not
    give it back, so the limit errs on the slow side.

    Across runs and threads: see `rebase`. Every method takes ``clock=``, the caller's
    clock object (``trio.lowlevel.current_clock()``); give it, or call `rebase` at the
    start of each step, so that a new ``trio.run`` (whose clock has another offset)
    keeps the spacing. Runs going on at once in several threads may share a limit when
    they pass ``clock=`` on every call: their real clocks advance together, so each
    switch of clock translates stored times exactly up to the microseconds between the
    caller reading its clock and the call taking the lock. Concurrent runs under
    virtual clocks (``MockClock``) cannot share one meaningfully: their times are
    unrelated.

    Raises:
        TypeError, ValueError: on construction, ``rate`` or ``per`` not a finite
            number ``> 0``, or ``burst`` not ``None`` or an int ``>= 1`` (the message
            names the field and value).
    """

    def __init__(self, rate: float, per: float = 1.0, burst: int | None = None) -> None:
        self._rate = check_number("rate", rate, minimum=0, above=True, what="a number of calls")
        self._per = check_seconds("per", per, positive=True)
        self._burst = 1 if burst is None else check_count("burst", burst)
        self._interval = self._per / self._rate
        if not math.isfinite(self._interval) or self._interval == 0:
            raise ValueError(
                f"per / rate must be a finite, positive interval, not per={per!r} / rate={rate!r}"
            )
        # A slot may start `tolerance` before the theoretical arrival time: the burst.
        self._tolerance = (self._burst - 1) * self._interval
        self._lock = threading.Lock()
        self._domain = ClockDomain()
        self._tat = -math.inf  # theoretical arrival time of the next slot
        self._gate = -math.inf  # no start before this (the latest hold-off's end)
        self._epoch = 0
        self._reservations = 0
        self._voided = 0
        self._last_hold_off: HoldOff | None = None

    def __repr__(self) -> str:
        return f"RateLimit(rate={self._rate:g}, per={self._per:g}, burst={self._burst})"

    @property
    def rate(self) -> float:
        """Starts allowed per ``per`` seconds."""
        return self._rate

    @property
    def per(self) -> float:
        """The period ``rate`` is counted over, in seconds."""
        return self._per

    @property
    def burst(self) -> int:
        """Starts allowed at the same instant after an idle spell (``1`` by default)."""
        return self._burst

    @property
    def interval(self) -> float:
        """``per / rate``: seconds between consecutive slots once the burst is used."""
        return self._interval

    @property
    def reservations(self) -> int:
        """Slots handed out so far (re-reservations made by `confirm` included)."""
        return self._reservations

    @property
    def voided(self) -> int:
        """Slots `confirm` found inside a later hold-off and replaced by a new one."""
        return self._voided

    @property
    def hold_offs(self) -> int:
        """Hold-offs that closed the gate or moved its reopening later."""
        return self._epoch

    @property
    def last_hold_off(self) -> HoldOff | None:
        """The latest hold-off that counted in `hold_offs` (``None`` if none)."""
        return self._last_hold_off

    def rebase(self, clock: object, now: float, *, elapsed: float | None = None) -> None:
        """Move stored times onto ``clock``, the caller's clock object, if it is new.

        Call it at the start of every step with ``trio.lowlevel.current_clock()`` and
        ``trio.current_time()`` (and, for exactness, at the end). The same clock as last
        time: nothing moves. A different one (a later ``trio.run``): the last time seen
        on the old clock is taken to be ``elapsed`` seconds before ``now``, and every
        stored time (the next slot, the gate) moves with it, so slots stay spaced
        across runs and a hold-off set in one run still holds in the next.

        ``elapsed=None`` measures the real time since the last call with
        ``time.perf_counter``, right for real clocks. Under a virtual clock that would
        make the next run's start times depend on the host's speed; pass the virtual
        gap you mean instead (``0.0``: as if the runs were back to back).
        """
        with self._lock:
            self._rebase(clock, now, elapsed)

    def reserve(self, now: float, *, clock: object = None) -> Reservation:
        """Take the next start slot; the caller may start at ``reservation.start``.

        ``start`` is the earliest time ``>= now`` that keeps the spacing after every
        slot handed out before it and is not before the end of a hold-off; it equals
        ``now`` when the limit has room. Then sleep until ``start`` and call `confirm`:
        a hold-off may have been set meanwhile.
        """
        with self._lock:
            self._rebase(clock, now, None)
            return self._reserve(now)

    def confirm(
        self, reservation: Reservation, now: float, *, clock: object = None
    ) -> Reservation | None:
        """After sleeping until ``reservation.start``: ``None`` if the caller may start
        now, else the reservation to sleep until next.

        If a hold-off was set after the slot was handed out and ends after the slot,
        the slot is void (an agent that reserved ``t=1.2`` before a hold-off until
        ``t=5`` does not start at 1.2, nor does everyone start at 5): a new slot is
        taken, after the hold-off and after every slot already handed out, and
        returned. Woken early (``now < start``), the same reservation comes back.
        """
        with self._lock:
            self._rebase(clock, now, None)
            if reservation.epoch != self._epoch and reservation.start < self._gate:
                self._voided += 1
                return self._reserve(now)
            if now < reservation.start:
                return reservation
            return None

    def hold_off(self, until: float, *, now: float, reason: str = "", clock: object = None) -> bool:
        """Close the gate for everyone sharing this limit: no start before ``until``.

        Call it when a failure says to wait (a 429's ``Retry-After``: ``until = now +
        retry_after``). Slots handed out later start at ``until`` or after; slots
        already handed out that fall before ``until`` are voided at their `confirm`.
        After the gate reopens, starts resume one at a time, ``interval`` apart, even
        with a ``burst``: the provider has just said we were too fast.

        Returns whether the gate moved: ``False`` (and nothing counted) if ``until`` is
        not after ``now`` or not after the end of a hold-off already in place, so many
        agents reporting the same 429 count once.

        Raises:
            TypeError, ValueError: ``until`` or ``now`` is not a finite number.
        """
        for name, value in (("until", until), ("now", now)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a time in seconds, not {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite time in seconds, not {value!r}")
        with self._lock:
            self._rebase(clock, now, None)
            if until <= now or until <= self._gate:
                return False
            self._gate = until
            self._tat = max(self._tat, until + self._tolerance)
            self._epoch += 1
            self._last_hold_off = HoldOff(at=now, until=until, reason=reason)
            return True

    def gate_open_at(self, now: float, *, clock: object = None) -> float:
        """When the gate is open for a new start: ``now``, or the end of a hold-off in
        place. Changes nothing (in particular it takes no slot)."""
        with self._lock:
            self._rebase(clock, now, None)
            return max(now, self._gate)

    def _reserve(self, now: float) -> Reservation:
        start = max(now, self._tat - self._tolerance, self._gate)
        self._tat = max(self._tat, start) + self._interval
        self._reservations += 1
        return Reservation(start, self._epoch)

    def _rebase(self, clock: object, now: float, elapsed: float | None) -> None:
        offset = self._domain.shift(clock, now, elapsed)
        if offset:
            # -inf stays -inf: nothing stored yet.
            self._tat += offset
            self._gate += offset
