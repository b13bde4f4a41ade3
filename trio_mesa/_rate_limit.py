"""`RateLimit`: a provider's quota, shared by every agent (and step, and model) that holds
it, with a gate any agent can close for everyone when a provider answers "retry after":
one 429 pauses the herd. Two modes: per request (``requests=`` and/or ``tokens=`` per
``per`` seconds, passed by each LLM request at the seam, tokens reserved from an
estimate and settled from the response's usage) and per attempt (``rate`` agent
attempts per ``per`` seconds). A GCRA (the token bucket written as one "theoretical
arrival time" per dimension), kept synchronous: the caller asks for a slot with its own
``now`` and sleeps with its own loop, so asyncio and Trio tasks and worker threads can
share one, in virtual time under ``trio.testing.MockClock``.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace

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
        tokens: the tokens reserved with the slot (request mode with ``tokens=``; else
            ``0``): give them to `settle` once the request's usage is known.
    """

    start: float
    epoch: int
    tokens: int = 0
    estimate: int = field(default=0, repr=False, compare=False)  # what the caller gave
    # Request mode: the start the request dimension and the gate allow, the start the
    # token bucket allowed, and the token schedule's shift when it was given (`settle`
    # moves later token starts by the difference).
    floor: float = field(default=-math.inf, repr=False, compare=False)
    token_start: float = field(default=-math.inf, repr=False, compare=False)
    shift: float = field(default=0.0, repr=False, compare=False)


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
    """A quota shared by every agent that holds it: per request, or per agent attempt.

    **Per request** (``RateLimit(requests=50)``, ``RateLimit(requests=500,
    tokens=30_000, per=60)``): the quota as a provider publishes it. Every LLM request
    an agent makes inside a step passes the gate at trio-mesa's request seam, just
    before it is sent (each request retry too), so a step that makes two requests
    counts two, whatever the agent's reasoning does. ``requests`` is the requests
    allowed per ``per`` seconds, ``tokens`` the tokens (prompt plus completion) per
    ``per`` seconds; give either or both. Each is a bucket holding one period's worth
    (``requests`` requests, ``tokens`` tokens), full at first and refilled evenly over
    ``per``, which is how a provider's own bucket works: ``RateLimit(requests=50)``
    lets 50 requests go at once, then one every 20 ms. A provider that enforces a
    per-minute quota over shorter periods (OpenAI: 600 RPM may be enforced as 10 a
    second) is written over that shorter period: ``RateLimit(requests=10, per=1)``.

    A request reserves its tokens from an estimate before it is sent (see
    `trio_mesa._gate.estimate_tokens`), corrected by what earlier requests used for
    their estimates (`expected_tokens`: the completion, mostly), and the
    reservation is settled from the response's ``usage`` (`settle`): tokens it did not
    use are given back, tokens beyond the reservation taken, and every slot handed out
    after it moves by the difference. A request the provider refused (a 4xx answer)
    gives its tokens back.

    **Per attempt** (``RateLimit(rate, per=1.0, burst=None)``): at most ``rate`` agent
    attempts start per ``per`` seconds, each attempt of an agent's whole step passing
    the gate first. Use it for agents whose calls do not pass the seam (a provider
    litellm reaches without ``litellm.aclient_session``, an SDK made without
    ``trio_mesa.async_http_client``, a non-HTTP tool), or to pace steps rather than
    requests. Slots are spaced ``per / rate`` seconds apart (the emission interval); up
    to ``burst`` slots may be taken at the same instant when the limit has been idle
    long enough to have saved them. Formally (GCRA): among any ``k`` consecutive starts,
    the last is at least ``(k - burst) * per / rate`` seconds after the first; so any
    half-open window ``[t, t + per)`` holds at most ``burst + ceil(rate) - 1`` starts
    (``rate`` starts when ``burst=1`` and ``rate`` is an integer). ``burst=None``
    (default) means ``1``: starts strictly spaced, never two at the same instant.

    In both modes a request (or attempt) answered with a ``Retry-After`` closes the gate
    for every holder until then (`hold_off`); after it, starts resume one at a time.

    Slots are handed out first come, first served, in the order of `reserve` calls.
    One RateLimit is meant to be shared, like a ``trio.CapacityLimiter``: between the
    agents of a step, between steps, and between models calling the same provider. It
    is a mutable object; every method is synchronous, takes the caller's ``now``
    (seconds on its clock: ``trio.current_time()``), never sleeps, and holds a
    ``threading.Lock`` only for a few arithmetic operations: safe to call from any
    thread and from asyncio and Trio tasks.

    The engine's loop for one request (or attempt)::

        reservation = limit.reserve(now(), tokens=estimate, deadline=deadline)
        if reservation is None:
            ...  # its start would be at or after the deadline: nothing was taken
        while reservation is not None:
            await sleep_until(reservation.start)     # cancellable, on the caller's loop
            reservation = limit.confirm(reservation, now())
        # send the request; then limit.settle(tokens_reserved, tokens_used, now=now())

    A slot is spent when it is handed out: a caller cancelled while waiting does not
    give its request slot back (its tokens it may, with ``settle(..., 0)``), so the
    limit errs on the slow side.

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
        TypeError, ValueError: on construction, ``rate``, ``requests`` or ``per`` not a
            finite number ``> 0``, ``tokens`` not an int ``>= 1``, ``burst`` not
            ``None`` or an int ``>= 1``, ``rate`` given with ``requests`` or
            ``tokens`` (the two modes), neither given, or ``burst`` given in request
            mode (the message names the field and value).
    """

    def __init__(
        self,
        rate: float | None = None,
        per: float = 1.0,
        burst: int | None = None,
        *,
        requests: float | None = None,
        tokens: int | None = None,
    ) -> None:
        self._per = 1.0  # replaced below; set first for __repr__ on a failed check
        self._requests: float | None = None
        self._tokens: int | None = None
        per_request = requests is not None or tokens is not None
        if rate is not None and per_request:
            raise TypeError(
                "RateLimit takes either rate (per agent attempt) or requests/tokens (per "
                f"request), not both (rate={rate!r}, requests={requests!r}, tokens={tokens!r})"
            )
        if rate is None and not per_request:
            raise TypeError(
                "RateLimit needs rate (agent attempts per period) or requests and/or "
                "tokens (per LLM request): e.g. RateLimit(requests=50, per=1.0)"
            )
        self._per = check_seconds("per", per, positive=True)
        self._per_request = per_request
        if per_request:
            if burst is not None:
                raise TypeError(
                    f"burst={burst!r}: in request mode the bucket holds one period's worth; "
                    "for a smaller burst write the quota over a shorter period "
                    "(RateLimit(requests=10, per=1.0) rather than requests=600, per=60)"
                )
            self._rate = 0.0
            self._burst = 0
            if requests is not None:
                self._requests = check_number(
                    "requests", requests, minimum=0, above=True, what="a number of requests"
                )
            if tokens is not None:
                self._tokens = check_count("tokens", tokens, maximum=10**15)
            # Requests: a bucket of max(1, requests), one start per `interval`.
            rate_for_interval = self._requests if self._requests is not None else math.inf
            self._interval = self._per / rate_for_interval
            self._tolerance = 0.0
            if self._requests is not None:
                self._check_interval(self._interval, "requests", requests)
                self._tolerance = (max(1.0, self._requests) - 1.0) * self._interval
            self._token_interval = 0.0
            if self._tokens is not None:
                self._token_interval = self._per / self._tokens
                self._check_interval(self._token_interval, "tokens", tokens)
        else:
            self._rate = check_number("rate", rate, minimum=0, above=True, what="a number of calls")
            self._burst = 1 if burst is None else check_count("burst", burst)
            self._interval = self._per / self._rate
            self._check_interval(self._interval, "rate", rate)
            # A slot may start `tolerance` before the theoretical arrival time: the burst.
            self._tolerance = (self._burst - 1) * self._interval
            self._token_interval = 0.0
        self._lock = threading.Lock()
        self._domain = ClockDomain()
        self._tat = -math.inf  # theoretical arrival time of the next slot
        self._token_tat = -math.inf  # the token bucket's (request mode with tokens)
        # Request mode: the request bucket as the starts really given spend it (`confirm`
        # checks it at the door: a slot the token bucket held back must not let the
        # request schedule's saved-up slots out in a burst).
        self._sent_tat = -math.inf
        self._shift = 0.0  # what settling moved the token schedule by, in all
        self._gate = -math.inf  # no start before this (the latest hold-off's end)
        self._epoch = 0
        self._reservations = 0
        self._voided = 0
        self._tokens_reserved = 0
        self._tokens_used = 0
        # Settled requests whose usage was known: n, sums of estimates x, usage y,
        # x*x and x*y (a least-squares line from estimate to usage).
        self._fit = [0, 0.0, 0.0, 0.0, 0.0]
        self._last_hold_off: HoldOff | None = None

    def _check_interval(self, interval: float, name: str, value: object) -> None:
        if not math.isfinite(interval) or interval == 0:
            raise ValueError(
                f"per / {name} must be a finite, positive interval, not "
                f"per={self._per!r} / {name}={value!r}"
            )

    def __repr__(self) -> str:
        if self._per_request:
            parts = []
            if self._requests is not None:
                parts.append(f"requests={self._requests:g}")
            if self._tokens is not None:
                parts.append(f"tokens={self._tokens}")
            return f"RateLimit({', '.join(parts)}, per={self._per:g})"
        return f"RateLimit(rate={self._rate:g}, per={self._per:g}, burst={self._burst})"

    @property
    def per_request(self) -> bool:
        """Whether each LLM request passes the gate at the seam (``requests=`` or
        ``tokens=`` given), rather than each agent attempt (``rate``)."""
        return self._per_request

    @property
    def requests(self) -> float | None:
        """Requests allowed per ``per`` seconds (request mode), or ``None``."""
        return self._requests

    @property
    def tokens(self) -> int | None:
        """Tokens allowed per ``per`` seconds (request mode), or ``None``."""
        return self._tokens

    @property
    def rate(self) -> float:
        """Starts allowed per ``per`` seconds: ``rate`` (attempt mode) or ``requests``
        (request mode; infinite when only ``tokens`` is limited)."""
        if self._per_request:
            return self._requests if self._requests is not None else math.inf
        return self._rate

    @property
    def per(self) -> float:
        """The period ``rate`` (or ``requests`` and ``tokens``) is counted over, in seconds."""
        return self._per

    @property
    def burst(self) -> int:
        """Starts allowed at the same instant after an idle spell: ``burst`` (attempt
        mode, ``1`` by default), or ``requests`` rounded down, at least 1 (request mode)."""
        if self._per_request:
            return max(1, int(self._requests)) if self._requests is not None else 0
        return self._burst

    @property
    def interval(self) -> float:
        """``per / rate``: seconds between consecutive slots once the burst is used
        (``0`` in request mode with only ``tokens``)."""
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
    def tokens_reserved(self) -> int:
        """Tokens reserved so far by `reserve` (request mode with ``tokens``), at the
        estimates given (re-reservations by `confirm` not counted again)."""
        return self._tokens_reserved

    @property
    def tokens_used(self) -> int:
        """Tokens `settle` was told were used, summed."""
        return self._tokens_used

    @property
    def expected_ratio(self) -> float:
        """Tokens used per token estimated, over the settled requests whose usage was
        known (``1.0`` before the first)."""
        n, sx, sy, _, _ = self._fit
        return sy / sx if n and sx else 1.0

    def expected_tokens(self, estimate: int) -> int:
        """What a request estimated at ``estimate`` tokens is expected to use, learned
        from the settled requests whose usage was known: the least-squares line from
        estimate to usage once they had estimates of different sizes (a fixed part,
        the completion, and a part that grows with the prompt), else the estimate
        times `expected_ratio`, else the estimate itself. `reserve` reserves this, and
        `confirm` takes it again, with what was learned since, just before the start."""
        with self._lock:
            return self._expected(estimate)

    def _expected(self, estimate: int) -> int:
        n, sx, sy, sxx, sxy = self._fit
        if not n or not estimate:
            return estimate
        spread = n * sxx - sx * sx
        if n >= 2 and spread > 1e-9 * n * sxx:
            slope = (n * sxy - sx * sy) / spread
            if slope >= 0:
                return max(0, math.ceil(slope * estimate + (sy - slope * sx) / n))
        return math.ceil(estimate * sy / sx) if sx else estimate

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

    def reserve(
        self,
        now: float,
        *,
        tokens: int = 0,
        deadline: float = math.inf,
        clock: object = None,
    ) -> Reservation | None:
        """Take the next start slot; the caller may start at ``reservation.start``.

        ``start`` is the earliest time ``>= now`` that keeps the spacing after every
        slot handed out before it, leaves room in the token bucket for ``tokens`` (the
        request's estimate: request mode with ``tokens=``; ignored otherwise), and is
        not before the end of a hold-off; it equals ``now`` when the limit has room.
        Then sleep until ``start`` and call `confirm`: a hold-off may have been set
        meanwhile, or settled requests may have moved the slot.

        Returns ``None``, and takes nothing, when that start would be at or after
        ``deadline`` (same clock): the caller's time would run out first. With the
        default ``deadline`` a slot is always returned.
        """
        with self._lock:
            self._rebase(clock, now, None)
            if self._per_request:
                if tokens and self._tokens is not None:
                    estimate = check_count("tokens", tokens, minimum=0, maximum=10**15)
                    # Corrected by what settled requests used (a completion the
                    # estimate could not know, another tokenizer).
                    tokens = self._expected(estimate)
                else:
                    estimate = tokens = 0
                reservation = self._reserve_request(now, tokens, deadline, estimate)
                if reservation is not None:
                    self._tokens_reserved += tokens
                return reservation
            if max(now, self._tat - self._tolerance, self._gate) >= deadline:
                return None
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
        returned. In request mode with ``tokens``, a slot whose start the token bucket
        decided moves by what `settle` calls made since it was handed out (later for
        tokens used beyond their estimates, earlier for tokens given back): the
        returned reservation says when; a caller that sleeps in short spells learns of
        an earlier start sooner. Woken early (``now < start``), the same reservation
        comes back (attempt mode).
        """
        with self._lock:
            self._rebase(clock, now, None)
            if reservation.epoch != self._epoch and reservation.start < self._gate:
                self._voided += 1
                if self._per_request:
                    renewed = self._reserve_request(
                        now, reservation.tokens, math.inf, reservation.estimate
                    )
                    assert renewed is not None
                    return renewed
                return self._reserve(now)
            if self._per_request and self._tokens is not None:
                start = max(
                    reservation.floor,
                    reservation.token_start + (self._shift - reservation.shift),
                )
                if now < start:
                    return (
                        reservation
                        if start == reservation.start
                        else replace(reservation, start=start)
                    )
                # About to start: take the tokens again with what settled requests
                # taught since the slot was handed out (the difference moves this
                # slot and every later one, as a settlement does); the caller confirms
                # once more and settles the returned reservation's tokens.
                door = self._sent_tat - self._tolerance
                if self._requests is not None and now < door:
                    return replace(reservation, start=door)
                again = self._expected(reservation.estimate)
                if again != reservation.tokens:
                    moved = (again - reservation.tokens) * self._token_interval
                    self._token_tat = max(self._token_tat, now) + moved
                    self._shift += moved
                    self._tokens_reserved += again - reservation.tokens
                    return replace(
                        reservation, tokens=again, start=max(start + moved, reservation.floor)
                    )
                if self._requests is not None:
                    self._sent_tat = max(self._sent_tat, now) + self._interval
                return None
            if now < reservation.start:
                return reservation
            return None

    def settle(
        self,
        reserved: int,
        used: int,
        *,
        now: float,
        estimate: int | None = None,
        clock: object = None,
    ) -> None:
        """A request that reserved ``reserved`` tokens (its `Reservation.tokens`) used
        ``used`` (its response's ``usage``: prompt plus completion; ``0`` for a request
        never sent, or refused).

        The difference is given back to the token bucket (``used < reserved``) or taken
        from it (``used > reserved``, the bucket may go into debt), and every slot
        handed out and not yet started moves by it (`confirm` tells its holder). A no-op
        without ``tokens``.

        ``estimate``: the ``tokens`` the request gave `reserve`, when ``used`` is a
        real count (an answer's ``usage``). The limit then learns from it: every later
        reservation takes `expected_tokens` of its estimate (what estimates miss:
        mostly the completion, whose length a request cannot say, and a tokenizer
        other than 4 characters a token), so a request in flight is counted at about
        what it will use.
        ``None``: nothing learned (a request refused, never sent, or whose usage is
        unknown).

        Raises:
            TypeError, ValueError: ``reserved``, ``used`` or ``estimate`` not an int
                ``>= 0``.
        """
        check_count("reserved", reserved, minimum=0, maximum=10**15)
        check_count("used", used, minimum=0, maximum=10**15)
        if estimate is not None:
            check_count("estimate", estimate, minimum=0, maximum=10**15)
        if self._tokens is None:
            return
        with self._lock:
            self._rebase(clock, now, None)
            self._tokens_used += used
            if estimate:
                fit = self._fit
                fit[0] += 1
                fit[1] += estimate
                fit[2] += used
                fit[3] += estimate * estimate
                fit[4] += estimate * used
            moved = (used - reserved) * self._token_interval
            if moved:
                # A full bucket (tat in the past) is taken as full now, not fuller.
                self._token_tat = max(self._token_tat, now) + moved
                self._shift += moved

    def hold_off(self, until: float, *, now: float, reason: str = "", clock: object = None) -> bool:
        """Close the gate for everyone sharing this limit: no start before ``until``.

        Call it when a failure says to wait (a 429's ``Retry-After``: ``until = now +
        retry_after``). Slots handed out later start at ``until`` or after; slots
        already handed out that fall before ``until`` are voided at their `confirm`.
        After the gate reopens, starts resume one at a time, ``interval`` apart, even
        with a burst: the provider has just said we were too fast. (The token bucket
        is not emptied: it resumes at ``until`` with what it held.)

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
            self._sent_tat = max(self._sent_tat, until + self._tolerance)
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

    def _reserve_request(
        self, now: float, tokens: int, deadline: float, estimate: int = 0
    ) -> Reservation | None:
        # Weighted GCRA per dimension: a request may start once the request bucket holds
        # one request and the token bucket `tokens` (all of it, if it asks for more than
        # the bucket holds: it then leaves the bucket in debt).
        floor = max(now, self._gate)
        if self._requests is not None:
            floor = max(floor, self._tat - self._tolerance)
        token_start = -math.inf
        if self._tokens is not None:
            room = (self._tokens - min(tokens, self._tokens)) * self._token_interval
            token_start = self._token_tat - room
        start = max(floor, token_start)
        if start >= deadline:
            return None
        # Each bucket keeps its own schedule (a slot's start in it, not the later start
        # the other bucket may impose): when settled tokens move the token schedule,
        # the request schedule does not hold the moved slots back.
        if self._requests is not None:
            self._tat = max(self._tat, floor) + self._interval
        if self._tokens is not None:
            self._token_tat = max(self._token_tat, token_start, now) + tokens * self._token_interval
        self._reservations += 1
        return Reservation(start, self._epoch, tokens, estimate, floor, token_start, self._shift)

    def _rebase(self, clock: object, now: float, elapsed: float | None) -> None:
        offset = self._domain.shift(clock, now, elapsed)
        if offset:
            # -inf stays -inf: nothing stored yet.
            self._tat += offset
            self._token_tat += offset
            self._sent_tat += offset
            self._gate += offset
