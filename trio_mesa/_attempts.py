"""The attempts of one agent's call, through the step's meters: rate limit, breaker, retry.

A launcher whose step has a `Retry`, a `RateLimit` or a `CircuitBreaker` runs each agent
through `Meters.run` instead of calling it once. Before every attempt the agent passes
the rate limit's gate (sleeping on its own loop until its slot) and asks the breaker;
after a failure the breaker hears the verdict (`is_outage`: a 429 is not one), a wait
the failure asks for closes the rate limit's gate for everyone, and the retry decides
whether and when to try again. Each launcher passes its own ``invoke`` (how one attempt
runs), ``sleep`` and ``park`` (its loop's), so one loop serves Trio tasks, worker
threads, inline agents and asyncio tasks.

An agent refused by an open circuit waits for it to half-open (and, half-open, for the
probe's verdict) when its time limit ends after the circuit half-opens, then passes the
gate again: when a probe closes the circuit, the waiting herd starts at the rate limit's
pace. It ends ``FAILED`` with the `CircuitOpen` (no call made, the failure that made it
want a retry as its ``__cause__``) when the circuit half-opens only after its time
limit, or when the circuit opened again after the step's agents waited for it once
(the probe failed): waiting for every probe would hold the step as long as the outage.

Time limits win over retries: every attempt and every wait runs inside the agent's
cancel scope (its start plus ``timeout``, capped by the step ``deadline``), so the
``timeout`` bounds the agent's whole turn, all attempts and waits included; and a wait
that would end at or after that deadline is not begun: the agent ends ``FAILED`` with its
last exception, with a note saying why it gave up.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ._breaker import CircuitBreaker, CircuitOpen
from ._rate_limit import RateLimit, Reservation
from ._recorder import OutcomeRecorder
from ._retry import Retry, is_outage, retry_after_of
from ._text import add_note, describe_exception, safe_repr


class Meters:
    """The step's per-call policies, shared by every agent of the step."""

    __slots__ = ("breaker", "rate_limit", "recorder", "retry", "seed", "waited_on")

    def __init__(
        self,
        retry: Retry | None,
        rate_limit: RateLimit | None,
        breaker: CircuitBreaker | None,
        recorder: OutcomeRecorder,
        seed: str,
    ) -> None:
        self.retry = retry
        self.rate_limit = rate_limit
        self.breaker = breaker
        self.recorder = recorder
        self.seed = seed  # the jitter's: a seeded model draws the same waits every run
        # The circuit's opening this step's agents waited for (0: none yet): a step
        # waits for one probe, not for every probe of an outage.
        self.waited_on = 0

    def start_turns(
        self, entries: list[Any], batch: list[int], start: float, deadline: float
    ) -> dict[int, AgentCall]:
        """The turns of a batch's agents (by index), with the rate limit's first slot
        for each taken now, in start order.

        Tasks started together run in no fixed order (Trio's scheduler may reverse a
        batch), so slots taken from the tasks themselves would go to agents in an order
        that changes from run to run; taken here, they follow Mesa's shuffled order,
        which a seeded model reproduces.
        """
        turns = {i: AgentCall(i, entries[i][0], start, deadline) for i in batch}
        limit = self.rate_limit
        if limit is not None:
            t = self.recorder.now()
            for turn in turns.values():
                turn.reservation = limit.reserve(t)
        return turns

    async def run(
        self,
        call: AgentCall,
        invoke: Callable[[], Awaitable[Any]],
        sleep: Callable[[float], Awaitable[Any]],
        park: Park,
    ) -> None:
        """Make attempts until one succeeds or no retry is left; record the outcome.

        ``sleep`` and ``park`` wait on the caller's loop: ``park(breaker, refusal,
        seconds)`` until the breaker changes or ``seconds`` pass (`park_trio`).
        Cancellation (the agent's deadline, ``fail_fast``, the caller) propagates out of
        the attempt or the wait in progress; ``call.attempts`` then says how many calls
        were started, for the launcher to record.
        """
        recorder = self.recorder
        now = recorder.now
        retry, limit, breaker = self.retry, self.rate_limit, self.breaker
        i, agent, start, deadline = call.i, call.agent, call.start, call.deadline
        reservation: Reservation | None = call.reservation
        while True:
            # The breaker first: an agent it refuses waits without taking a rate-limit
            # slot (a waiting herd's slots would delay real calls), and a probe holds
            # its probe slot through the gate.
            probe = False
            if breaker is not None:
                try:
                    probe = breaker.before_attempt(now())
                except CircuitOpen as refusal:  # no call made
                    if not await self._wait_out(call, refusal, park):
                        return
                    reservation = None  # a slot after the wait, not a stale one
                    continue
            if limit is not None:
                try:
                    if reservation is None:
                        reservation = limit.reserve(now())
                    while reservation is not None:
                        await sleep(max(0.0, reservation.start - now()))
                        reservation = limit.confirm(reservation, now())
                except BaseException:
                    if breaker is not None and probe:
                        breaker.release(probe=True)
                    raise
                if breaker is not None and not probe:
                    closed_on = breaker.refusal(now())
                    if closed_on is not None:  # it opened while this agent was at the gate
                        if not await self._wait_out(call, closed_on, park):
                            return
                        continue
            call.attempts += 1
            try:
                result = await invoke()
            except Exception as exc:
                call.last = exc
                if breaker is not None:
                    if is_outage(exc):
                        breaker.record_failure(now(), exc, probe=probe)
                    else:
                        breaker.release(probe=probe)
                asked = retry_after_of(exc) if limit is not None else None
                if limit is not None and asked is not None and asked > 0:
                    t = now()
                    limit.hold_off(t + asked, now=t, reason=_reason(agent, exc, asked))
                if retry is not None and retry.should_retry(exc):
                    if call.attempts < retry.attempts:
                        delay = retry.delay(call.attempts, exc, call.rng(self.seed))
                        if now() + delay < deadline:
                            await sleep(delay)
                            continue
                        add_note(
                            exc,
                            f"trio-mesa: gave up after {call.attempts} attempt(s): the next "
                            f"wait ({delay:.3g} s) would end past the agent's time limit",
                        )
                    else:
                        add_note(
                            exc,
                            f"trio-mesa: gave up after {call.attempts} attempt(s) "
                            f"(Retry(attempts={retry.attempts}))",
                        )
                recorder.failed(i, agent, exc, start, attempts=call.attempts)
                return
            except BaseException:
                if breaker is not None:
                    breaker.release(probe=probe)
                raise
            if breaker is not None:
                breaker.record_success(now(), probe=probe)
            recorder.ok(i, agent, result, now() - start, call.attempts)
            return

    async def _wait_out(self, call: AgentCall, refusal: CircuitOpen, park: Park) -> bool:
        """Wait until the circuit that refused ``call`` may let it through, if its time
        allows (``True``: try again); else record its outcome (``False``)."""
        t = self.recorder.now()
        why = _refused(refusal, self.waited_on, t, call.deadline)
        if why:
            _end_refused(refusal, why, call.last, call.attempts)
            self.recorder.failed(call.i, call.agent, refusal, call.start, attempts=call.attempts)
            return False
        self.waited_on = refusal.opening
        wait = math.inf if refusal.half_open else refusal.reset_at - t
        assert self.breaker is not None  # only a breaker refuses
        await park(self.breaker, refusal, wait)
        return True


#: ``park(breaker, refusal, seconds)``: wait on the caller's loop until ``breaker``
#: changes (`CircuitBreaker.watch`) or ``seconds`` (maybe ``inf``) pass.
type Park = Callable[[CircuitBreaker, CircuitOpen, float], Awaitable[None]]


async def park_trio(breaker: CircuitBreaker, refusal: CircuitOpen, seconds: float) -> None:
    """`Park` for a Trio task: the wake-up may come from any thread (a breaker shared
    with a run in another thread), so it goes through the run's token."""
    woken = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def wake() -> None:
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(woken.set, idempotent=True)

    breaker.watch(wake, refusal)
    try:
        with trio.move_on_after(seconds):
            await woken.wait()
    finally:
        breaker.unwatch(wake)


def _refused(refusal: CircuitOpen, waited_on: int, now: float, deadline: float) -> str:
    """Why an agent refused by an open circuit ends now (``""``: it waits instead)."""
    if waited_on and refusal.opening != waited_on:
        # The step's agents waited for the circuit once, and it opened again (the probe
        # failed, or it closed and reopened): the provider is still down, and waiting
        # for every probe would hold the step as long as the outage (inline sync
        # agents, one after another, would each wait a whole reset_after).
        return "this step waited for the circuit once already, and it opened again"
    if not refusal.half_open and refusal.reset_at >= deadline:
        return (
            f"the circuit half-opens in {refusal.reset_at - now:.3f} s, past the agent's "
            f"time limit ({max(0.0, deadline - now):.3f} s left)"
        )
    return ""


def _end_refused(refusal: CircuitOpen, why: str, last: BaseException | None, attempts: int) -> None:
    # The agent's outcome is the refusal; the failure that made it want another
    # attempt stays attached, and says whether the agent was refused a retry.
    if last is not None:
        refusal.__cause__ = last
        last_failure = describe_exception(last, limit=200)
        why += f"; refused a retry after {attempts} attempt(s), the last: {last_failure}"
    add_note(refusal, f"trio-mesa: no call made: {why}")


class AgentCall:
    """One agent's turn under `Meters`: where it is, and how many calls it has started."""

    __slots__ = (
        "_rng",
        "agent",
        "attempts",
        "deadline",
        "i",
        "last",
        "reservation",
        "start",
    )

    def __init__(self, i: int, agent: Any, start: float, deadline: float) -> None:
        self.i = i
        self.agent = agent
        self.start = start
        self.deadline = deadline
        self.attempts = 0
        self.reservation: Reservation | None = None  # a first slot taken in start order
        self.last: BaseException | None = None  # the latest failure: a refusal's cause
        self._rng: random.Random | None = None

    def rng(self, seed: str) -> random.Random:
        """The agent's jitter draws: seeded by the step and the agent, in no shared
        stream (the model's own RNG, which orders the next shuffle, is never touched)."""
        if self._rng is None:
            self._rng = random.Random(f"{seed}:{self.agent.unique_id!r}")
        return self._rng


def _reason(agent: Any, exc: BaseException, asked: float) -> str:
    return (
        f"agent {safe_repr(agent.unique_id)}: {describe_exception(exc, limit=200)} "
        f"(asked to wait {asked:g} s)"
    )


__all__ = ["AgentCall", "Meters", "Park", "park_trio"]
