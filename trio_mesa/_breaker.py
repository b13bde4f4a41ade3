"""`CircuitBreaker`: after enough transient failures in a short window, stop calling a
failing provider for a while, so agents fail at once with `CircuitOpen` instead of each
waiting for its own timeout; then let a few probe calls through to find out whether it
has recovered. Like `RateLimit` it never sleeps and never reads the caller's clock:
every method takes ``now``, so asyncio and Trio tasks (and threads) can share one.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Literal, NamedTuple

from ._checks import check_count, check_seconds
from ._clock_domain import ClockDomain
from ._text import describe_exception

__all__ = ["BreakerEvent", "BreakerState", "CircuitBreaker", "CircuitOpen"]

BreakerState = Literal["closed", "open", "half_open"]


class BreakerEvent(NamedTuple):
    """One change of a `CircuitBreaker`'s state, for the report.

    Attributes:
        time: when, on the clock of the call that recorded it (the clock of that
            ``trio.run``; times of events from different runs are not comparable).
        kind: ``"opened"``, ``"half_open"`` or ``"closed"``.
        reason: for ``"opened"``, the failure that opened it (``"RateLimitError: ..."``)
            and how many failures in how long; otherwise what happened.
    """

    time: float
    kind: Literal["opened", "half_open", "closed"]
    reason: str


class CircuitOpen(Exception):
    """Raised by `CircuitBreaker.before_attempt` instead of making a call.

    No call was made: an agent whose attempt raises this ends ``FAILED`` with it (it is
    never retried by the default `is_transient`).

    Attributes:
        opened_at: when the circuit (last) opened, on the caller's clock.
        reset_at: when it half-opens (or half-opened) and admits probe calls.
        reason: the last failure before it opened, as ``"TypeName: message"``.
        half_open: ``True`` if the circuit was half-open and its probes were all taken.
    """

    def __init__(
        self, opened_at: float, reset_at: float, reason: str, half_open: bool = False
    ) -> None:
        if half_open:
            message = (
                f"circuit half-open since t={reset_at:.3f}, every probe call in flight; "
                f"opened at t={opened_at:.3f} after {reason}"
            )
        else:
            message = (
                f"circuit open since t={opened_at:.3f} after {reason}; "
                f"half-opens at t={reset_at:.3f}"
            )
        super().__init__(message)
        self.opened_at = opened_at
        self.reset_at = reset_at
        self.reason = reason
        self.half_open = half_open

    def __reduce__(self) -> tuple[type[CircuitOpen], tuple[float, float, str, bool]]:
        return (type(self), (self.opened_at, self.reset_at, self.reason, self.half_open))


class CircuitBreaker:
    """Fail fast while a provider is failing; probe to find out when it is back.

    * **closed** (the start): every attempt may go ahead. `record_failure` counts
      transient failures; ``failures`` of them within ``window`` seconds open it.
    * **open**: `before_attempt` raises `CircuitOpen`; no call may be made. After
      ``reset_after`` seconds it becomes half-open.
    * **half-open**: up to ``probes`` attempts at a time are let through as probes;
      others get `CircuitOpen`. A probe that succeeds closes the circuit (and forgets
      the failures counted); a probe that fails (transiently) opens it again for
      another ``reset_after``.

    One breaker is meant to be shared, like a ``trio.CapacityLimiter``: by every agent
    of a step, across steps, and across models that call the same provider. It is a
    mutable object; every method is synchronous, takes the caller's ``now`` (seconds on
    its own clock, e.g. ``trio.current_time()``, virtual under ``MockClock``) and
    never blocks on anything but a ``threading.Lock`` held for a few operations, so it
    is safe to call from any thread and from asyncio and Trio tasks. Transitions
    happen inside calls: the open -> half-open change is made by the first
    `before_attempt` at or after ``reset_at`` (`state_at` tells the state at a time).

    Only the engine's verdicts move it: it is told about transient failures
    (`record_failure`), successes (`record_success`) and attempts that ended with
    neither (`release`: cancelled, our own timeout, a failure that is not transient).
    `before_attempt` returns whether the attempt is a probe, and the engine passes that
    back, so that a slow call started before the circuit opened cannot close or reopen
    it by finishing late.

    Across runs: each ``trio.run`` has its own clock. Pass the run's clock object
    (``trio.lowlevel.current_clock()``) as ``clock=`` or call `rebase` at the start of
    each step; on a new clock, stored times move by the real time elapsed (see
    `RateLimit.rebase`, which works the same way). Event times are not moved.

    Raises:
        TypeError, ValueError: on construction, a field of the wrong type or out of
            range (the message names it): ``failures`` and ``probes`` ints ``>= 1``,
            ``window`` finite and ``> 0``, ``reset_after`` finite and ``>= 0``.
    """

    def __init__(
        self, failures: int = 5, window: float = 10.0, reset_after: float = 30.0, probes: int = 1
    ) -> None:
        self._failures = check_count("failures", failures)
        self._window = check_seconds("window", window, positive=True)
        self._reset_after = check_seconds("reset_after", reset_after)
        self._probes = check_count("probes", probes)
        self._lock = threading.Lock()
        self._domain = ClockDomain()
        self._state: BreakerState = "closed"
        self._recent: deque[float] = deque()  # times of counted failures, oldest first
        self._opened_at: float | None = None
        self._reset_at: float | None = None
        self._reason = ""
        # Probes admitted and not yet back. Not reset when a probe's verdict moves the
        # state: other probes of that half-open spell are still calling the provider,
        # and while they are, they take their slots in the next one.
        self._in_flight = 0
        self._events: list[BreakerEvent] = []

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(failures={self._failures}, window={self._window}, "
            f"reset_after={self._reset_after}, probes={self._probes}, state={self._state!r})"
        )

    @property
    def failures(self) -> int:
        """Transient failures within ``window`` seconds that open the circuit."""
        return self._failures

    @property
    def window(self) -> float:
        """Seconds a failure counts for: one recorded at ``t`` counts until ``t + window``."""
        return self._window

    @property
    def reset_after(self) -> float:
        """Seconds the circuit stays open before it half-opens."""
        return self._reset_after

    @property
    def probes(self) -> int:
        """Probe attempts admitted at a time while half-open."""
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
        """Why it last opened: the failure, and how many in how long (``""`` if never)."""
        return self._reason

    @property
    def events(self) -> list[BreakerEvent]:
        """A copy of every state change so far, oldest first. To report one step, note
        ``len(breaker.events)`` when it starts and take the events after that index."""
        with self._lock:
            return list(self._events)

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
                    raise CircuitOpen(self._opened_at, self._reset_at, self._reason)
                self._state = "half_open"
                self._events.append(
                    BreakerEvent(
                        self._reset_at, "half_open", f"{self._reset_after:g}s after opening"
                    )
                )
            if self._in_flight >= self._probes:
                raise CircuitOpen(self._opened_at, self._reset_at, self._reason, half_open=True)
            self._in_flight += 1
            return True

    def record_success(self, now: float, *, probe: bool = False, clock: object = None) -> None:
        """The attempt admitted at `before_attempt` succeeded.

        A probe's success closes a half-open circuit and clears the failure count.
        A non-probe success changes nothing (failures age out of the window on their
        own; a late success of a call started before the circuit opened proves little).
        """
        with self._lock:
            self._rebase(clock, now, None)
            if not probe:
                return
            self._in_flight = max(0, self._in_flight - 1)
            if self._state == "half_open":
                self._state = "closed"
                self._recent.clear()
                self._events.append(BreakerEvent(now, "closed", "a probe call succeeded"))

    def record_failure(
        self, now: float, exc: BaseException, *, probe: bool = False, clock: object = None
    ) -> None:
        """The attempt admitted at `before_attempt` failed transiently with ``exc``.

        Call it only for failures that say the provider is unwell (the engine uses its
        `Retry`'s verdict, by default `is_transient`). While closed, the failure is
        counted; the ``failures``-th within ``window`` seconds opens the circuit
        (``reset_at = now + reset_after``). A failed probe re-opens a half-open circuit.
        A non-probe failure while open or half-open is not counted: the circuit is
        already open and the call started before it opened.
        """
        with self._lock:
            self._rebase(clock, now, None)
            if probe:
                self._in_flight = max(0, self._in_flight - 1)
                if self._state == "half_open":
                    self._open(
                        now, exc, f"a probe call failed: {describe_exception(exc, limit=200)}"
                    )
                return
            if self._state != "closed":
                return
            self._recent.append(now)
            horizon = now - self._window
            while self._recent and self._recent[0] <= horizon:
                self._recent.popleft()
            if len(self._recent) >= self._failures:
                n = len(self._recent)
                self._open(
                    now,
                    exc,
                    f"{n} transient failure{'s' if n != 1 else ''} within "
                    f"{self._window:g}s, the last {describe_exception(exc, limit=200)}",
                )

    def release(self, *, probe: bool) -> None:
        """The attempt admitted at `before_attempt` ended with no verdict on the provider
        (cancelled, timed out by trio_mesa, or failed in a way that is not transient).

        Frees the probe slot if it was a probe; the state does not change, so the next
        attempt is admitted as a probe.
        """
        with self._lock:
            if probe:
                self._in_flight = max(0, self._in_flight - 1)

    def _open(self, now: float, exc: BaseException, reason: str) -> None:
        self._state = "open"
        self._opened_at = now
        self._reset_at = now + self._reset_after
        self._reason = reason
        self._recent.clear()
        self._events.append(BreakerEvent(now, "opened", reason))

    def _rebase(self, clock: object, now: float, elapsed: float | None) -> None:
        offset = self._domain.shift(clock, now, elapsed)
        if offset:
            self._recent = deque(t + offset for t in self._recent)
            if self._opened_at is not None and self._reset_at is not None:
                self._opened_at += offset
                self._reset_at += offset
