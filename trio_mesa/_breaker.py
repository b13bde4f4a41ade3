"""`CircuitBreaker`: when most recent calls to a provider fail with "provider down"
signals, stop calling it for a while; then let a few probe calls through to find out
whether it has recovered. It trips on a failure *rate* over a time window, with a
minimum number of calls (resilience4j's design), and it counts only what `is_outage`
calls an outage: a 429 is the rate limit's business. Like `RateLimit` it never sleeps
and never reads the caller's clock: every method takes ``now``, so asyncio and Trio
tasks (and threads) can share one.
"""

from __future__ import annotations

import threading
import warnings
from collections import deque
from collections.abc import Callable
from typing import Literal, NamedTuple

from ._checks import check_count, check_number, check_seconds
from ._clock_domain import ClockDomain
from ._text import describe_exception

__all__ = ["MAX_EVENTS", "BreakerEvent", "BreakerState", "CircuitBreaker", "CircuitOpen"]

BreakerState = Literal["closed", "open", "half_open"]

#: State changes a `CircuitBreaker` keeps (the oldest are dropped first).
MAX_EVENTS = 100

_UNSET = object()


class BreakerEvent(NamedTuple):
    """One change of a `CircuitBreaker`'s state, for the report.

    Attributes:
        time: when, on the clock of the call that recorded it (the clock of that
            ``trio.run``; times of events from different runs are not comparable). A
            `StepReport` gives them in seconds since the step began instead.
        kind: ``"opened"``, ``"half_open"`` or ``"closed"``.
        reason: for ``"opened"``, how many of how many calls failed in how long and the
            last failure (``"12 of 20 calls within 10s failed; the last
            InternalServerError: ..."``); otherwise what happened.
    """

    time: float
    kind: Literal["opened", "half_open", "closed"]
    reason: str


class CircuitOpen(Exception):
    """Raised by `CircuitBreaker.before_attempt` instead of making a call.

    No call was made. The engine does not end an agent with it while the agent's time
    allows waiting for the circuit to half-open; see `CircuitBreaker`. It is never
    retried by the default `is_transient`, and never counted by `is_outage`.

    Attributes:
        opened_at: when the circuit (last) opened, on the caller's clock.
        reset_at: when it half-opens (or half-opened) and admits probe calls.
        reason: why it opened (`BreakerEvent.reason` of the ``"opened"`` event).
        half_open: ``True`` if the circuit was half-open and its probes were all taken.
        now: when it was raised, on the same clock (``None`` if not given): the message
            gives times relative to it, never raw clock readings.
        opening: which opening of its breaker this is (1 for the first): an agent that
            waited out one opening and meets another knows the probe failed.
    """

    def __init__(
        self,
        opened_at: float,
        reset_at: float,
        reason: str,
        half_open: bool = False,
        *,
        now: float | None = None,
        opening: int = 0,
    ) -> None:
        head = reason.split("; the last ", 1)[0]
        if half_open:
            message = "circuit half-open, every probe call in flight"
        elif now is not None:
            message = f"circuit open, half-opens in {max(0.0, reset_at - now):.3f} s"
        else:
            message = "circuit open"
        if now is not None:
            message += f" (opened {max(0.0, now - opened_at):.3f} s ago: {head})"
        else:
            message += f" (opened after {head})"
        super().__init__(message + "; no call made")
        self.opened_at = opened_at
        self.reset_at = reset_at
        self.reason = reason
        self.half_open = half_open
        self.now = now
        self.opening = opening
        self._changes = -1  # the breaker's change count when raised (see CircuitBreaker.watch)

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_circuit_open,
            (self.opened_at, self.reset_at, self.reason, self.half_open, self.now, self.opening),
        )


def _rebuild_circuit_open(
    opened_at: float, reset_at: float, reason: str, half_open: bool, now: float | None, opening: int
) -> CircuitOpen:
    return CircuitOpen(opened_at, reset_at, reason, half_open, now=now, opening=opening)


class CircuitBreaker:
    """Fail fast while a provider is down; probe to find out when it is back.

    * **closed** (the start): every attempt may go ahead. The breaker remembers the
      verdicts of the calls that ended in the last ``window`` seconds (a time-based
      sliding window): a success (`record_success`) or an outage (`record_failure`).
      When a failure leaves at least ``min_calls`` verdicts in the window and the
      fraction of them that failed is at least ``failure_rate``, it opens.
    * **open**: `before_attempt` raises `CircuitOpen`; no call may be made. After
      ``reset_after`` seconds it becomes half-open.
    * **half-open**: ``probes`` attempts are let through as probes; others get
      `CircuitOpen`. As soon as the probes' verdicts settle it, it closes (fewer than
      ``failure_rate`` of the ``probes`` can fail) or opens again for another
      ``reset_after`` (at least ``failure_rate`` of them failed). With one probe (the
      default): its success closes the circuit, its failure reopens it. A probe ended
      with no verdict (`release`) gives its slot to the next attempt.

    What counts is decided by the engine with `is_outage`: 5xx, connection errors and
    the client's own request timeouts. A 429 is not counted (nor is it a success): the
    provider is up, and the step's `RateLimit` is what slows down for it. Counting 429s
    as a raw number is what made the breaker of an earlier version open on a healthy
    provider and lose the agents retries would have saved.

    Why a time window, not the last N calls: a model's calls come in bursts, one per
    step, with the model's own work between them. A count-based window would judge the
    first calls of a step by the last calls of a step minutes ago; a time window
    forgets them, and keeps ``window`` meaning what it meant before (seconds).
    ``min_calls`` keeps a handful of early failures from opening it; a call rate too
    low to fill it never opens it (each agent's `Retry` and timeout bound those calls).

    The engine makes an agent that meets an open circuit wait for it to half-open when
    the agent's time limit ends after that, and then for the probe's verdict: it calls
    once the circuit closes, and ends ``FAILED`` with `CircuitOpen` (no call made) if
    the probe fails and the circuit opens again, or if the circuit half-opens only after
    its time limit. An agent still waiting when its time runs out is ``TIMED_OUT``.

    One breaker is meant to be shared, like a ``trio.CapacityLimiter``: by every agent
    of a step, across steps, and across models that call the same provider. It is a
    mutable object; every method is synchronous, takes the caller's ``now`` (seconds on
    its own clock, e.g. ``trio.current_time()``, virtual under ``MockClock``) and
    never blocks on anything but a ``threading.Lock`` held for a few operations, so it
    is safe to call from any thread and from asyncio and Trio tasks. Transitions
    happen inside calls: the open -> half-open change is made by the first
    `before_attempt` at or after ``reset_at`` (`state_at` tells the state at a time).

    `before_attempt` returns whether the attempt is a probe, and the engine passes that
    back, so that a slow call started before the circuit opened cannot close or reopen
    it by finishing late. Memory: the window holds one entry per verdict in the last
    ``window`` seconds; `events` keeps the latest `MAX_EVENTS` state changes.

    Across runs: each ``trio.run`` has its own clock. Pass the run's clock object
    (``trio.lowlevel.current_clock()``) as ``clock=`` or call `rebase` at the start of
    each step; on a new clock, stored times move by the real time elapsed (see
    `RateLimit.rebase`, which works the same way). Event times are not moved.

    Args:
        failure_rate: the fraction of calls in the window that must have failed for it
            to open, in ``(0, 1]`` (resilience4j's ``failureRateThreshold``, as a
            fraction); also what decides the probes.
        min_calls: verdicts the window must hold before the rate counts, ``>= 1``
            (resilience4j's ``minimumNumberOfCalls``).
        window: seconds a verdict counts for: one recorded at ``t`` counts until
            ``t + window``.
        reset_after: seconds it stays open before it half-opens.
        probes: probe calls admitted per half-open spell.
        failures: deprecated (a `DeprecationWarning`): the count of failures that
            opened it in earlier versions. Read as ``min_calls``: when every call
            fails, it opens after the same number of failures as before.

    Raises:
        TypeError, ValueError: on construction, a field of the wrong type or out of
            range (the message names it), or both ``failures`` and ``min_calls``.
    """

    def __init__(
        self,
        *,
        failure_rate: float = 0.5,
        min_calls: int | object = _UNSET,
        window: float = 10.0,
        reset_after: float = 30.0,
        probes: int = 1,
        failures: int | object = _UNSET,
    ) -> None:
        if failures is not _UNSET:
            if min_calls is not _UNSET:
                raise TypeError(
                    "pass min_calls, not failures (deprecated, read as min_calls), "
                    f"not both (failures={failures!r}, min_calls={min_calls!r})"
                )
            self._min_calls = check_count("failures", failures)
            warnings.warn(
                "CircuitBreaker(failures=...) is deprecated: the breaker now opens on a "
                "failure rate; pass min_calls= (and failure_rate=) instead. failures="
                f"{failures!r} is read as min_calls={failures!r}.",
                DeprecationWarning,
                stacklevel=2,
            )
        else:
            self._min_calls = check_count("min_calls", 20 if min_calls is _UNSET else min_calls)
        self._failure_rate = check_number(
            "failure_rate", failure_rate, minimum=0, maximum=1, above=True, what="a fraction"
        )
        self._window = check_seconds("window", window, positive=True)
        self._reset_after = check_seconds("reset_after", reset_after)
        self._probes = check_count("probes", probes)
        self._lock = threading.Lock()
        self._domain = ClockDomain()
        self._state: BreakerState = "closed"
        # Verdicts in the window, oldest first: (time, failed), and their counts.
        self._verdicts: deque[tuple[float, bool]] = deque()
        self._failed = 0
        self._opened_at: float | None = None
        self._reset_at: float | None = None
        self._reason = ""
        self._openings = 0
        # Probes admitted and not yet back. Not reset when a probe's verdict moves the
        # state: other probes of that half-open spell are still calling the provider,
        # and while they are, they take their slots in the next one.
        self._in_flight = 0
        self._probe_ok = 0  # verdicts of this half-open spell's probes
        self._probe_failed = 0
        self._events: deque[BreakerEvent] = deque(maxlen=MAX_EVENTS)
        self._events_recorded = 0
        # Wakers of agents waiting for the circuit, and a count of the changes that
        # may let one through (closing, reopening, a probe slot given back).
        self._watchers: dict[Callable[[], object], None] = {}  # woken in the order they came
        self._changes = 0

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(failure_rate={self._failure_rate:g}, min_calls={self._min_calls}, "
            f"window={self._window:g}, reset_after={self._reset_after:g}, "
            f"probes={self._probes}, state={self._state!r})"
        )

    @property
    def failure_rate(self) -> float:
        """Fraction of the window's calls that must have failed for it to open."""
        return self._failure_rate

    @property
    def min_calls(self) -> int:
        """Verdicts the window must hold before ``failure_rate`` is applied."""
        return self._min_calls

    @property
    def failures(self) -> int:
        """Deprecated: `min_calls` (the name of an earlier version)."""
        warnings.warn(
            "CircuitBreaker.failures is deprecated: use min_calls (and failure_rate)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self._min_calls

    @property
    def window(self) -> float:
        """Seconds a verdict counts for: one recorded at ``t`` counts until ``t + window``."""
        return self._window

    @property
    def reset_after(self) -> float:
        """Seconds the circuit stays open before it half-opens."""
        return self._reset_after

    @property
    def probes(self) -> int:
        """Probe attempts admitted per half-open spell."""
        return self._probes

    @property
    def state(self) -> BreakerState:
        """``"closed"``, ``"open"`` or ``"half_open"`` as of the latest call (cheap, no lock;
        an open circuit past its ``reset_at`` reads ``"open"`` until the next
        `before_attempt`; use `state_at` to ask about a time)."""
        return self._state

    @property
    def opened_at(self) -> float | None:
        """When the circuit last opened (``None`` if it never did)."""
        return self._opened_at

    @property
    def reset_at(self) -> float | None:
        """When the open circuit half-opens or last half-opened (``None`` if never opened)."""
        return self._reset_at

    @property
    def reason(self) -> str:
        """Why it last opened (``""`` if never)."""
        return self._reason

    @property
    def openings(self) -> int:
        """How many times it has opened (a failed probe's reopening included)."""
        return self._openings

    @property
    def events(self) -> list[BreakerEvent]:
        """A copy of the latest `MAX_EVENTS` state changes, oldest first (each change
        once). To report one step, note `events_recorded` when it starts and call
        `events_since` with it after."""
        with self._lock:
            return list(self._events)

    @property
    def events_recorded(self) -> int:
        """State changes recorded so far, those no longer kept in `events` included."""
        return self._events_recorded

    def events_since(self, recorded: int) -> list[BreakerEvent]:
        """The state changes recorded after the first ``recorded`` (a past value of
        `events_recorded`) that are still kept, oldest first."""
        with self._lock:
            new = self._events_recorded - recorded
            if new <= 0:
                return []
            return list(self._events)[-new:]

    def state_at(self, now: float, *, clock: object = None) -> BreakerState:
        """The state at ``now``: like `state`, but ``"half_open"`` once ``reset_at`` has
        passed, even if no `before_attempt` has made the change yet. Changes nothing."""
        with self._lock:
            self._rebase(clock, now, None)
            if self._state == "open" and self._reset_at is not None and now >= self._reset_at:
                return "half_open"
            return self._state

    def rebase(self, clock: object, now: float, *, elapsed: float | None = None) -> None:
        """Move stored times onto ``clock``, the caller's clock object, if it is a new one.

        Same contract as `RateLimit.rebase`: call it at the start (and end) of each
        step with ``trio.lowlevel.current_clock()`` and ``trio.current_time()``.
        """
        with self._lock:
            self._rebase(clock, now, elapsed)

    def before_attempt(self, now: float, *, clock: object = None) -> bool:
        """Ask to make an attempt at ``now``; return whether it is a half-open probe.

        Returns ``False`` while closed (go ahead), ``True`` when admitted as one of the
        ``probes`` of a half-open circuit. Pass the value as ``probe=`` to exactly one of
        `record_success`, `record_failure` or `release` when the attempt ends, or the
        probe slot stays taken.

        Raises:
            CircuitOpen: the circuit is open (``now`` before ``reset_at``), or half-open
                with every probe slot taken. No call may be made; nothing to record.
        """
        with self._lock:
            self._rebase(clock, now, None)
            if self._state == "closed":
                return False
            assert self._opened_at is not None and self._reset_at is not None
            if self._state == "open":
                if now < self._reset_at:
                    raise self._refusal(now, half_open=False)
                self._state = "half_open"
                self._probe_ok = self._probe_failed = 0
                self._event(self._reset_at, "half_open", f"{self._reset_after:g}s after opening")
            if self._in_flight + self._probe_ok + self._probe_failed >= self._probes:
                raise self._refusal(now, half_open=True)
            self._in_flight += 1
            return True

    def refusal(self, now: float, *, clock: object = None) -> CircuitOpen | None:
        """The `CircuitOpen` `before_attempt` would raise at ``now``, or ``None`` if it
        would admit the attempt. Changes nothing (no probe slot is taken): the engine
        asks before an agent takes a rate-limit slot, and asks `before_attempt` after."""
        with self._lock:
            self._rebase(clock, now, None)
            if self._state == "closed":
                return None
            assert self._reset_at is not None
            if self._state == "open":
                if now < self._reset_at:
                    return self._refusal(now, half_open=False)
                taken = self._in_flight  # the next half-open spell starts with no verdicts
            else:
                taken = self._in_flight + self._probe_ok + self._probe_failed
            return self._refusal(now, half_open=True) if taken >= self._probes else None

    def record_success(self, now: float, *, probe: bool = False, clock: object = None) -> None:
        """The attempt admitted at `before_attempt` succeeded.

        While closed, the success joins the window (it lowers the failure rate). A
        probe's success may close a half-open circuit (which forgets the window). A
        non-probe success while open or half-open changes nothing: the call started
        before the circuit opened.
        """
        wake = None
        with self._lock:
            self._rebase(clock, now, None)
            if probe:
                self._in_flight = max(0, self._in_flight - 1)
                if self._state == "half_open":
                    self._probe_ok += 1
                    wake = self._settle_probes(now, None)
            elif self._state == "closed":
                self._verdicts.append((now, False))
                self._expire(now)
        self._wake(wake)

    def record_failure(
        self, now: float, exc: BaseException, *, probe: bool = False, clock: object = None
    ) -> None:
        """The attempt admitted at `before_attempt` failed with ``exc``, an outage.

        Call it only for failures that say the provider is down (the engine asks
        `is_outage`); end any other attempt with `release`. While closed, the failure
        joins the window, and opens the circuit (``reset_at = now + reset_after``) if
        the window then holds ``min_calls`` verdicts or more, at least ``failure_rate``
        of them failures. A probe's failure may reopen a half-open circuit. A non-probe
        failure while open or half-open is not counted: the call started before the
        circuit opened.
        """
        wake = None
        with self._lock:
            self._rebase(clock, now, None)
            if probe:
                self._in_flight = max(0, self._in_flight - 1)
                if self._state == "half_open":
                    self._probe_failed += 1
                    wake = self._settle_probes(now, exc)
            elif self._state == "closed":
                self._verdicts.append((now, True))
                self._failed += 1
                self._expire(now)
                calls, failed = len(self._verdicts), self._failed
                if calls >= self._min_calls and failed / calls >= self._failure_rate:
                    wake = self._open(
                        now,
                        f"{failed} of {calls} calls within {self._window:g}s failed; the last "
                        f"{describe_exception(exc, limit=200)}",
                    )
        self._wake(wake)

    def release(self, *, probe: bool) -> None:
        """The attempt admitted at `before_attempt` ended with no verdict on the provider
        (cancelled, timed out by trio_mesa, a 429, or a failure that is not an outage).

        Frees the probe slot if it was a probe (the next attempt is admitted as a
        probe); nothing else changes.
        """
        wake = None
        with self._lock:
            if probe:
                self._in_flight = max(0, self._in_flight - 1)
                wake = self._changed()
        self._wake(wake)

    def watch(self, wake: Callable[[], object], refusal: CircuitOpen | None = None) -> None:
        """Call ``wake()`` (from whichever thread makes the change) the next times the
        circuit closes, opens, or gives a probe slot back, until `unwatch`.

        For an agent waiting after ``refusal`` (a `CircuitOpen` from this breaker): if
        such a change happened since it was raised, ``wake()`` is called at once, so no
        change is missed between the refusal and the watch. ``wake`` must be quick and
        must not call the breaker (e.g. ``trio_token.run_sync_soon(event.set)``).
        """
        with self._lock:
            self._watchers[wake] = None
            missed = refusal is not None and refusal._changes != self._changes
        if missed:
            wake()

    def unwatch(self, wake: Callable[[], object]) -> None:
        """Stop calling ``wake`` (no error if it was not watching)."""
        with self._lock:
            self._watchers.pop(wake, None)

    def _refusal(self, now: float, *, half_open: bool) -> CircuitOpen:
        assert self._opened_at is not None and self._reset_at is not None
        refusal = CircuitOpen(
            self._opened_at,
            self._reset_at,
            self._reason,
            half_open,
            now=now,
            opening=self._openings,
        )
        refusal._changes = self._changes
        return refusal

    def _settle_probes(
        self, now: float, exc: BaseException | None
    ) -> list[Callable[[], object]] | None:
        # Decide as soon as the verdicts in settle it, whatever the others would say.
        ok, failed, n = self._probe_ok, self._probe_failed, self._probes
        if exc is not None and failed / n >= self._failure_rate:
            last = describe_exception(exc, limit=200)
            what = "a probe call failed" if n == 1 else f"{failed} of {n} probe calls failed"
            return self._open(now, f"{what}; the last {last}")
        if (n - ok) / n < self._failure_rate:
            self._state = "closed"
            self._verdicts.clear()
            self._failed = 0
            what = "a probe call succeeded" if n == 1 else f"{ok} of {n} probe calls succeeded"
            self._event(now, "closed", what)
            return self._changed()
        return None

    def _open(self, now: float, reason: str) -> list[Callable[[], object]]:
        self._state = "open"
        self._opened_at = now
        self._reset_at = now + self._reset_after
        self._reason = reason
        self._openings += 1
        self._verdicts.clear()
        self._failed = 0
        self._event(now, "opened", reason)
        return self._changed()

    def _event(self, time: float, kind: Literal["opened", "half_open", "closed"], why: str) -> None:
        self._events.append(BreakerEvent(time, kind, why))
        self._events_recorded += 1

    def _changed(self) -> list[Callable[[], object]]:
        self._changes += 1
        return list(self._watchers)

    @staticmethod
    def _wake(wakers: list[Callable[[], object]] | None) -> None:
        # Outside the lock: a waker may take its own loop's lock.
        for wake in wakers or ():
            wake()

    def _expire(self, now: float) -> None:
        horizon = now - self._window
        verdicts = self._verdicts
        while verdicts and verdicts[0][0] <= horizon:
            if verdicts.popleft()[1]:
                self._failed -= 1

    def _rebase(self, clock: object, now: float, elapsed: float | None) -> None:
        offset = self._domain.shift(clock, now, elapsed)
        if offset:
            self._verdicts = deque((t + offset, f) for t, f in self._verdicts)
            if self._opened_at is not None and self._reset_at is not None:
                self._opened_at += offset
                self._reset_at += offset
