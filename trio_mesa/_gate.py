"""The seam's rate-limit gate: each LLM request waits here for a request-mode `RateLimit`.

A step whose ``rate_limit`` counts requests (``RateLimit(requests=..., tokens=...)``)
hands it to the seam (`trio_mesa._seam`); the transports (`trio_mesa._transport`) call
in here just before a request leaves (each request retry too; a call answered from a
cassette never does): the request reserves a slot and its estimated tokens
(`estimate_tokens`), waits for the slot, is sent, and its reservation is settled from
the response's ``usage``; a 429 or 503 with ``Retry-After`` closes the gate for every
holder until then.

Waiting happens where it cannot block the run and where the agent's time limit cuts
it. Every time is on the Trio run's clock (the agent's deadline is too: its ledger
carries it). An async request (a Trio task, or an asyncio task on the loop Trio drives:
trio-asyncio or the asyncio host's guest run) sleeps on its own loop. A sync request in
a worker thread (``sync_mode="thread"``) waits on the Trio thread with
``trio.from_thread.run``, in the agent's own task, so the agent's timeout and the step
deadline cancel the wait (`trio.Cancelled` goes up through the agent's code, which ends
``TIMED_OUT``); the request retry's waits go the same way (`sleep_sync`). A sync
request on the Trio thread itself (an inline agent) blocks it, as its call does anyway,
and is not cut (inline agents run to the end once started). A request whose slot would
start at or after its agent's deadline takes none and makes no request: it waits for the
deadline, which ends the agent ``TIMED_OUT``.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from typing import Any

import trio

from ._rate_limit import RateLimit, Reservation
from ._retry import retry_after_from_headers

__all__ = [
    "estimate_tokens",
    "hold",
    "loop_sleep",
    "pass_gate_async",
    "pass_gate_sync",
    "settle_response",
    "sleep_sync",
]

#: Characters per token in the estimate: OpenAI's rule of thumb for English text.
CHARS_PER_TOKEN = 4

# How long a waiter sleeps before asking again whether settled requests moved its slot
# earlier: a quarter of what is left, within these bounds (only with a token limit).
_SPELL = 0.05
_LONGEST_SPELL = 0.25


def estimate_tokens(body: Any) -> int:
    """Tokens a chat request is expected to use, reserved before it is sent.

    The characters of its ``messages`` (every string in them: text parts, tool call
    arguments, names) divided by 4 and rounded up (OpenAI's rule of thumb for English:
    no tokenizer to import, and the same for every model), plus ``max_tokens`` (or
    ``max_completion_tokens``) when given: a provider counts a request's completion
    limit against its tokens-per-minute quota before it answers. What this misses (the
    completion when no limit is given, the tool definitions, which providers bill in
    their own ways, a tokenizer that is not 4 characters a token) is learned from the
    responses' ``usage`` (`RateLimit.expected_tokens`), and each reservation is settled
    at what its request used; so an estimate only matters while its request is in
    flight. It errs low on purpose: a slot that settles later than estimated moves the
    slots after it later at once, while one that settles earlier can only be taken up
    by waiters when they next look.
    """
    if not isinstance(body, dict):
        return 0
    tokens = -(-_chars(body.get("messages")) // CHARS_PER_TOKEN)
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        tokens += limit
    return tokens


def _chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_chars(v) for v in value.values())
    if isinstance(value, list):
        return sum(_chars(v) for v in value)
    return 0


def _used_tokens(response: Any) -> int | None:
    """The total tokens a 200 response's ``usage`` reports (``None``: it reports none)."""
    try:
        reply = json.loads(response.content)
    except ValueError:
        return None
    usage = reply.get("usage") if isinstance(reply, dict) else None
    if not isinstance(usage, dict):
        return None
    total = usage.get("total_tokens")
    if not isinstance(total, int) or isinstance(total, bool):
        prompt = usage.get("prompt_tokens") or 0
        completion = usage.get("completion_tokens") or 0
        if not (isinstance(prompt, int) and isinstance(completion, int)):
            return None
        total = prompt + completion
    return max(0, total)


# -- clocks ----------------------------------------------------------------------------------

_PERF_CLOCK = object()  # the clock token of callers outside any Trio run


def _trio_clock() -> tuple[float, object] | None:
    """``(now, clock)`` of the Trio run driving this thread, or ``None`` outside one."""
    try:
        clock = trio.lowlevel.current_clock()
    except RuntimeError:
        return None
    return clock.current_time(), clock


def _now_and_clock() -> tuple[float, object]:
    found = _trio_clock()
    return found if found is not None else (time.perf_counter(), _PERF_CLOCK)


# -- async requests --------------------------------------------------------------------------


async def loop_sleep(seconds: float) -> None:
    """Sleep on the running loop: asyncio's when there is one, else Trio's."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        await trio.sleep(seconds)
    else:
        await asyncio.sleep(seconds)


async def hold() -> None:
    """Wait on the running loop until cancelled (asyncio's when there is one, else Trio's)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        await trio.sleep_forever()
    else:
        await loop.create_future()


async def pass_gate_async(limit: RateLimit, tokens: int, deadline: float) -> int:
    """Wait on the running loop until ``limit`` lets this request go; the tokens
    reserved (for `settle_response`). A slot at or after ``deadline`` is not taken:
    this then waits until the agent is cancelled (its deadline ends it)."""
    now, clock = _now_and_clock()
    if clock is _PERF_CLOCK:
        deadline = math.inf  # no Trio run here: the deadline's clock is not ours
    reservation = limit.reserve(now, tokens=tokens, deadline=deadline, clock=clock)
    if reservation is None:
        await hold()
        raise AssertionError("unreachable: hold() only ends by cancellation")
    held = [reservation.tokens]
    try:
        await _wait(limit, reservation, deadline, clock, loop_sleep, held)
    except BaseException:
        limit.settle(held[0], 0, now=_now_and_clock()[0], clock=clock)  # never sent
        raise
    return held[0]


async def _wait(
    limit: RateLimit,
    reservation: Reservation | None,
    deadline: float,
    clock: object,
    sleep: Any,
    held: list[int],
) -> None:
    # ``held[0]``: the tokens the latest reservation holds (`confirm` may take more).
    spells = limit.tokens is not None
    while reservation is not None:
        held[0] = reservation.tokens
        if reservation.start >= deadline:
            await hold()  # moved past the deadline (a hold-off, settled debt)
        now = _now_and_clock()[0]
        left = reservation.start - now
        if left > 0:
            await sleep(min(left, _LONGEST_SPELL, max(left / 4, _SPELL)) if spells else left)
            now = _now_and_clock()[0]
        reservation = limit.confirm(reservation, now, clock=clock)


# -- sync requests ---------------------------------------------------------------------------

_INLINE, _WORKER, _FOREIGN = "inline", "worker", "foreign"


def _place() -> str:
    """Where a sync request runs: on the Trio thread (an inline agent), in a Trio worker
    thread (``to_thread.run_sync``), or in a thread Trio knows nothing of."""
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        pass
    else:
        return _INLINE
    try:
        trio.from_thread.check_cancelled()
    except RuntimeError:
        return _FOREIGN
    return _WORKER


async def _pass_on_host(limit: RateLimit, tokens: int, deadline: float) -> int:
    # In the worker thread's agent task, on the Trio thread: cancelled with it.
    now, clock = _now_and_clock()
    reservation = limit.reserve(now, tokens=tokens, deadline=deadline, clock=clock)
    if reservation is None:
        await trio.sleep_forever()
    assert reservation is not None
    held = [reservation.tokens]
    try:
        await _wait(limit, reservation, deadline, clock, trio.sleep, held)
    except BaseException:
        limit.settle(held[0], 0, now=trio.current_time(), clock=clock)
        raise
    return held[0]


def pass_gate_sync(limit: RateLimit, tokens: int, deadline: float) -> int:
    """`pass_gate_async` for a sync request (see the module docstring for where it
    waits); the tokens reserved."""
    place = _place()
    if place == _WORKER:
        return trio.from_thread.run(_pass_on_host, limit, tokens, deadline)
    # Inline (or a foreign thread): the thread blocks; nothing can cut a sync call here.
    now, clock = _now_and_clock()
    reservation = limit.reserve(now, tokens=tokens, clock=clock)
    assert reservation is not None
    reserved = reservation.tokens
    while reservation is not None:
        reserved = reservation.tokens
        left = reservation.start - now
        if left > 0:
            time.sleep(left)
        # A virtual clock does not move while the thread sleeps: the slot's time has come.
        now = max(_now_and_clock()[0], reservation.start)
        reservation = limit.confirm(reservation, now, clock=clock)
    return reserved


def sleep_sync(seconds: float) -> None:
    """A sync request's wait (a request retry's backoff): on the Trio thread, in the
    agent's task, from a worker thread (the agent's time limit cuts it: `trio.Cancelled`),
    else the thread sleeps."""
    if seconds <= 0:
        return
    if _place() == _WORKER:
        trio.from_thread.run(trio.sleep, seconds)
    else:
        time.sleep(seconds)


# -- after the response ----------------------------------------------------------------------


def settle_response(
    limit: RateLimit, reserved: int, estimate: int, response: Any, agent: Any
) -> None:
    """Settle a sent request's tokens from its response and pass on a ``Retry-After``.

    A 200 with ``usage`` settles at its total (and the limit learns how far off
    ``estimate`` was); any other 4xx answer (a 429 included) at 0 (the provider refused
    it); anything else keeps the reservation (the provider may have done the work). A
    429 or 503 that asks to wait closes the gate for every holder.
    """
    status = response.status_code
    retry_after = None
    if status in (429, 503):
        retry_after = retry_after_from_headers(response.headers)
    if limit.tokens is None and not retry_after:
        return
    used: int | None = None
    learned: int | None = None
    if limit.tokens is not None:
        if status == 200:
            used = _used_tokens(response)
            learned = None if used is None else estimate
        elif 400 <= status < 500:
            used = 0
    if _place() == _WORKER:
        trio.from_thread.run_sync(
            _after, limit, reserved, used, learned, retry_after, status, agent
        )
    else:
        _after(limit, reserved, used, learned, retry_after, status, agent)


def _after(
    limit: RateLimit,
    reserved: int,
    used: int | None,
    estimate: int | None,
    retry_after: float | None,
    status: int,
    agent: Any,
) -> None:
    now, clock = _now_and_clock()
    if used is not None:
        limit.settle(reserved, used, now=now, estimate=estimate, clock=clock)
    if retry_after:
        limit.hold_off(
            now + retry_after,
            now=now,
            reason=f"agent {agent!r}: HTTP {status} (asked to wait {retry_after:g} s)",
            clock=clock,
        )
