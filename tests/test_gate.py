"""The seam's rate-limit gate (`trio_mesa._gate`): a request-mode `RateLimit` passed by
every LLM request, in virtual time (``MockClock``), with fake providers behind the seam's
own transports: exact request times, tokens reserved and settled from usage, a 429's
``Retry-After`` pausing everyone, deadlines that end agents without a request, worker
threads waiting on the Trio thread, one gate shared between steps. The same against the
chaos server's real quota over loopback HTTP is in ``tests/test_chaos_quota.py``."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from mesa import Agent, Model

import trio_mesa
from trio_mesa import RateLimit, Retry, Status, trio_native
from trio_mesa._gate import estimate_tokens
from trio_mesa._transport import SeamAsyncTransport, SeamTransport

URL = "http://provider.test/v1/chat/completions"


def _body(chars: int = 400, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "x" * chars}], **extra}


class Provider:
    """A provider that answers at once: it notes when (virtual time) each request arrived,
    and answers the n-th request (1-based) with ``status[n]`` (a 429 with Retry-After 2),
    else 200 with a usage of ``total`` tokens."""

    def __init__(self, total: int = 100, status: dict[int, int] | None = None) -> None:
        self.total = total
        self.status = status or {}
        self.times: list[float] = []
        self.agents: list[str] = []

    def answer(self, request: httpx.Request, now: float) -> httpx.Response:
        self.times.append(now)
        self.agents.append(request.headers.get("x-agent-id", ""))
        code = self.status.get(len(self.times), 200)
        if code != 200:
            headers = {"retry-after": "2"} if code == 429 else {}
            return httpx.Response(code, headers=headers, json={"error": {}})
        reply = {
            "choices": [{"message": {"role": "assistant", "content": "ok"}}],
            "usage": {"prompt_tokens": self.total - 1, "completion_tokens": 1},
        }
        return httpx.Response(200, json=reply)


class AsyncFake(httpx.AsyncBaseTransport):
    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await trio.lowlevel.checkpoint()
        return self.provider.answer(request, trio.current_time())


class SyncFake(httpx.BaseTransport):
    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.provider.answer(request, trio.from_thread.run_sync(trio.current_time))


class Caller(Agent):
    """Makes ``model.calls`` requests per step through the seam's async transport."""

    @trio_native
    async def astep(self) -> None:
        for _ in range(self.model.calls):
            r = await self.model.aclient.post(URL, json=self.model.body)
            r.raise_for_status()
            self.model.done.append(self.unique_id)


class SyncCaller(Agent):
    def step(self) -> None:
        for _ in range(self.model.calls):
            r = self.model.client.post(URL, json=self.model.body)
            r.raise_for_status()
            self.model.done.append(self.unique_id)


class World(Model):
    def __init__(
        self, provider: Provider, n: int, calls: int = 1, kinds: tuple[type, ...] = (Caller,)
    ) -> None:
        super().__init__(rng=1)
        self.provider = provider
        self.calls = calls
        self.body = _body()
        self.done: list[int] = []
        self.aclient = httpx.AsyncClient(transport=SeamAsyncTransport(AsyncFake(provider)))
        self.client = httpx.Client(transport=SeamTransport(SyncFake(provider)))
        for i in range(n):
            kinds[i % len(kinds)](self)


def _run(fn: Any, threads: bool = False) -> Any:
    trio_mesa.track_usage()  # the seam learns the agent from its ledger
    # Virtual time jumps as soon as every task waits; a task waiting for a worker
    # thread waits too, so with threads the clock jumps only after Trio has been idle
    # for 0.3 real seconds (a thread's work here takes microseconds).
    clock = trio.testing.MockClock(autojump_threshold=0.3 if threads else 0)
    return trio.run(fn, clock=clock)


def _step(model: World, **options: Any) -> trio_mesa.StepReport:
    async def main() -> trio_mesa.StepReport:
        return await trio_mesa.step_agents(model.agents, **options)

    return _run(main, threads=options.get("sync_mode") == "thread")


# -- requests --------------------------------------------------------------------------------


def test_100_agents_making_2_requests_each_are_spaced_exactly() -> None:
    provider = Provider()
    model = World(provider, 100, calls=2)
    limit = RateLimit(requests=10, per=1.0)
    report = _step(model, rate_limit=limit)
    assert report.all_ok, str(report)
    # A bucket of 10 requests, full at first, refilled one every 0.1 s: 10 at t=0, then
    # one per 0.1 s: the 200th request at 19.0 s. Not 100 agent attempts: 200 requests.
    assert provider.times == pytest.approx([0.0] * 10 + [0.1 * k for k in range(1, 191)])
    assert report.duration == pytest.approx(19.0)
    assert limit.reservations == 200
    assert [o.attempts for o in report] == [1] * 100
    assert sorted(provider.agents) == sorted([str(uid) for uid in range(1, 101)] * 2)


class Spy(RateLimit):
    """Notes the time (on the Trio clock, wherever the caller runs) of every start given."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.starts: list[float] = []

    def confirm(self, reservation: Any, now: float, *, clock: object = None) -> Any:
        again = super().confirm(reservation, now, clock=clock)
        if again is None:
            self.starts.append(now)
        return again


def test_the_gate_is_shared_between_steps_and_with_worker_threads() -> None:
    provider = Provider()
    model = World(provider, 8, kinds=(Caller, SyncCaller))
    limit = Spy(requests=4, per=1.0)

    async def main() -> list[trio_mesa.StepReport]:
        first = await trio_mesa.step_agents(model.agents, rate_limit=limit, sync_mode="thread")
        second = await trio_mesa.step_agents(model.agents, rate_limit=limit, sync_mode="thread")
        return [first, second]

    reports = _run(main)
    assert all(r.all_ok for r in reports)
    assert len(provider.times) == limit.reservations == 16
    # Trio tasks and worker threads alike passed one bucket across both steps, on the
    # Trio thread (a virtual clock jumps while threads run, so when each thread asked
    # varies; the spacing does not): any k consecutive starts span (k - 4) * 0.25 s.
    starts = sorted(limit.starts)
    assert len(starts) == 16 and starts[:4] == [0.0] * 4
    for k in range(5, 17):
        for i in range(16 - k + 1):
            assert starts[i + k - 1] - starts[i] >= (k - 4) * 0.25


# -- tokens ----------------------------------------------------------------------------------


def test_estimate_counts_characters_over_4_plus_max_tokens() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "a" * 10},
            {"role": "user", "content": [{"type": "text", "text": "b" * 7}]},
        ],
        "tools": [{"type": "function", "function": {"name": "go", "parameters": {}}}],
        "max_tokens": 50,
    }
    # Every string of the messages: "system" 6 + 10 + "user" 4 + "text" 4 + 7 = 31
    # characters, 8 tokens rounded up, plus the 50 the completion may use. The tools
    # are left to what the limit learns from usage.
    assert estimate_tokens(body) == 8 + 50
    assert estimate_tokens({"messages": "not a list", "max_tokens": True}) == 3
    assert estimate_tokens(None) == 0


def test_tokens_used_beyond_the_estimate_are_taken_from_the_bucket() -> None:
    provider = Provider(total=100)  # every answer reports 100 tokens
    model = World(provider, 1, calls=4)
    model.body = _body(196)  # "user" + 196 characters: 50 tokens estimated
    limit = RateLimit(tokens=100, per=1.0)
    report = _step(model, rate_limit=limit)
    assert report.all_ok
    # Without settling, two 50-token requests would fit at t=0 and one go every 0.5 s.
    # The first, settled at 100, empties the bucket (100 a second), and teaches the
    # limit that requests use twice their estimate: the next reserve 100 each, so one
    # goes a second.
    assert provider.times == [0.0, 1.0, 2.0, 3.0]
    assert limit.expected_ratio == 2.0
    assert (limit.tokens_reserved, limit.tokens_used) == (50 + 3 * 100, 400)


def test_tokens_reserved_and_not_used_are_given_back() -> None:
    provider = Provider(total=150)
    model = World(provider, 1, calls=7)
    model.body = _body(396, max_tokens=400)  # 100 + 400 reserved, 150 used
    limit = RateLimit(tokens=1000, per=1.0)
    report = _step(model, rate_limit=limit)
    assert report.all_ok
    # Held at 500 each, the bucket of 1000 would let two go at once, then one every
    # 0.5 s. The first gives 350 back and teaches the limit to reserve 150: the bucket
    # holds six more, and then one goes every 0.15 s.
    assert provider.times == pytest.approx([0.0] * 6 + [0.05])
    assert limit.expected_ratio == 0.3
    assert (limit.tokens_reserved, limit.tokens_used) == (500 + 6 * 150, 1050)


# -- Retry-After and deadlines ---------------------------------------------------------------


def test_a_429_with_retry_after_pauses_every_holder() -> None:
    provider = Provider(status={3: 429})  # the third request: 429, Retry-After 2
    model = World(provider, 8)
    limit = RateLimit(requests=4, per=1.0)
    report = _step(
        model, rate_limit=limit, request_retry=Retry(attempts=2, initial=0.1, jitter=False)
    )
    assert report.all_ok, str(report)
    # Four at t=0 (the bucket), one refused with Retry-After 2: nobody else starts before
    # 2.0, and then one at a time, 0.25 s apart; the refused one is sent again among them.
    assert provider.times == [0.0, 0.0, 0.0, 0.0, 2.0, 2.25, 2.5, 2.75, 3.0]
    assert limit.hold_offs == 1 and "HTTP 429" in limit.last_hold_off.reason  # type: ignore[union-attr]
    assert report.usage.request_retries == 1


@pytest.mark.parametrize("kind", [Caller, SyncCaller])
def test_a_slot_past_the_deadline_ends_the_agent_timed_out_without_a_request(kind) -> None:
    provider = Provider()
    model = World(provider, 3, kinds=(kind,))
    limit = RateLimit(requests=1, per=10.0)  # the second request's slot: t=10
    report = _step(model, rate_limit=limit, timeout=5.0, sync_mode="thread")
    assert [o.status for o in report].count(Status.OK) == 1
    assert [o.status for o in report].count(Status.TIMED_OUT) == 2
    assert provider.times == [0.0]  # the others made no request
    assert limit.reservations == 1  # and took no slot: the next is still free at 10
    assert report.duration == 5.0
    assert all(o.duration == 5.0 for o in report if o.status is Status.TIMED_OUT)


def test_a_hold_off_past_the_deadline_ends_the_waiting_agents_at_it() -> None:
    provider = Provider(status={1: 429})
    model = World(provider, 3)
    limit = RateLimit(requests=1, per=1.0)
    # The first request is refused with Retry-After 2; the deadline is 1.5.
    report = _step(model, rate_limit=limit, deadline=1.5)
    assert sorted(o.status.name for o in report) == ["FAILED", "TIMED_OUT", "TIMED_OUT"]
    assert provider.times == [0.0]
    assert report.duration == 1.5


def test_a_worker_threads_request_retry_wait_is_cut_by_its_timeout() -> None:
    provider = Provider(status={1: 500})
    model = World(provider, 1, kinds=(SyncCaller,))
    report = _step(
        model,
        sync_mode="thread",
        timeout=5.0,
        request_retry=Retry(attempts=2, initial=3.0, jitter=False, max_delay=3.0),
        rate_limit=RateLimit(requests=1, per=1.0),
    )
    (outcome,) = report
    # The retry's 3 s wait runs on the Trio thread, in the agent's task, in virtual
    # time; then the retry passes the gate (its slot, t=1, is long free).
    assert outcome.status is Status.OK and provider.times == [0.0, 3.0]
    cut = World(Provider(status={1: 500}), 1, kinds=(SyncCaller,))
    report = _step(
        cut,
        sync_mode="thread",
        timeout=2.0,
        request_retry=Retry(attempts=2, initial=3.0, jitter=False, max_delay=3.0),
    )
    (outcome,) = report
    assert outcome.status is Status.TIMED_OUT
    assert outcome.duration == 2.0  # virtual: the thread did not sleep 3 real seconds
    assert cut.provider.times == [0.0]


def test_requests_outside_any_agent_pass_ungated() -> None:
    provider = Provider()
    limit = RateLimit(requests=1, per=100.0)

    async def main() -> None:
        client = httpx.AsyncClient(transport=SeamAsyncTransport(AsyncFake(provider)))
        for _ in range(3):
            (await client.post(URL, json=_body())).raise_for_status()

    _run(main)
    assert provider.times == [0.0, 0.0, 0.0] and limit.reservations == 0


def test_a_per_attempt_limit_still_gates_attempts_not_requests() -> None:
    provider = Provider()
    model = World(provider, 4, calls=2)
    report = _step(model, rate_limit=RateLimit(2))  # 2 attempts a second
    assert report.all_ok
    # Attempts 0.5 s apart; each makes its two requests at once.
    assert sorted(provider.times) == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0, 1.5, 1.5]


def test_usage_and_reports_are_unchanged_by_the_gate() -> None:
    provider = Provider(total=42)
    model = World(provider, 2)
    report = _step(model, rate_limit=RateLimit(requests=5, tokens=1000))
    assert [o.usage.total_tokens for o in report] == [42, 42]
    assert json.loads(json.dumps(report.usage.to_dict()))["calls"] == 2
    assert math.isclose(report.duration, 0.0)
