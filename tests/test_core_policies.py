"""Per-agent timeout, whole-step deadline, concurrency limits and worker threads."""

from __future__ import annotations

import logging
import threading

import pytest
import trio
from core_agents import AsyncioAgent, Model, SyncAgent, TrioAgent

import trio_mesa
from trio_mesa import AgentTimeout, Status


@pytest.mark.parametrize("cls", [TrioAgent, AsyncioAgent])
async def test_timeout_stops_only_the_slow_agent(mock_clock, cls):
    model = Model()
    slow = cls(model, ("sleep", 100))
    hung = cls(model, ("hang",))
    quick = [cls(model, ("sleep", 3)) for _ in range(4)]

    report = await trio_mesa.step_agents(model.agents, timeout=5)

    for agent in (slow, hung):
        outcome = report.by_id()[agent.unique_id]
        assert outcome.status is Status.TIMED_OUT
        assert isinstance(outcome.exception, AgentTimeout)
        assert outcome.exception.reason == "timeout" and outcome.exception.limit == 5
        assert outcome.duration == 5 and outcome.attempts == 1
        assert agent.cancelled
    for agent in quick:
        assert report.by_id()[agent.unique_id].status is Status.OK
        assert report.by_id()[agent.unique_id].duration == 3
    assert report.duration == 5


async def test_timeout_counts_from_the_agents_start_not_the_queue(mock_clock):
    model = Model()
    agents = [TrioAgent(model, ("sleep", 4)) for _ in range(3)]
    report = await trio_mesa.step_agents(agents, timeout=5, max_concurrency=1)
    assert [o.status for o in report] == [Status.OK] * 3
    assert report.duration == 12


async def test_deadline_stops_running_agents_and_reports_everyone(mock_clock):
    model = Model()
    agents = [TrioAgent(model, ("sleep", s)) for s in (1, 2, 3, 4)]
    agents.append(AsyncioAgent(model, ("hang",)))

    report = await trio_mesa.step_agents(agents, deadline=2.5)

    assert [o.status for o in report] == [Status.OK] * 2 + [Status.TIMED_OUT] * 3
    for outcome in report.outcomes[2:]:
        assert outcome.exception.reason == "deadline"
        assert outcome.exception.limit == 2.5
        assert outcome.attempts == 1
    assert report.duration == 2.5


async def test_deadline_keeps_queued_agents_from_starting(mock_clock):
    model = Model()
    agents = [TrioAgent(model, ("sleep", 1)) for _ in range(5)]
    report = await trio_mesa.step_agents(agents, deadline=2.5, max_concurrency=1)
    assert [o.status for o in report] == [Status.OK] * 2 + [Status.TIMED_OUT] * 3
    assert [o.attempts for o in report] == [1, 1, 1, 0, 0]
    assert [a.calls for a in agents] == [1, 1, 1, 0, 0]
    assert all("before it started" in str(o.exception) for o in report.outcomes[3:])


async def test_deadline_and_timeout_each_name_themselves(mock_clock):
    model = Model()
    agents = [TrioAgent(model, ("hang",)), TrioAgent(model, ("sleep", 1))]
    report = await trio_mesa.step_agents(agents, max_concurrency=1, timeout=2, deadline=3.5)
    first, second = report.outcomes
    assert first.exception.reason == "timeout" and first.duration == 2
    assert second.status is Status.OK
    report = await trio_mesa.step_agents(agents, max_concurrency=1, timeout=2, deadline=1.5)
    assert report.outcomes[0].exception.reason == "deadline"
    assert report.outcomes[1].attempts == 0


@pytest.mark.parametrize("limit", [1, 3, 7])
async def test_max_concurrency_is_never_exceeded(mock_clock, limit):
    in_flight = 0
    peak = 0

    @trio_mesa.trio_native
    class Counted(TrioAgent):
        async def astep(self):
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await trio.sleep(1)
            in_flight -= 1

    model = Model()
    for _ in range(20):
        Counted(model)
    report = await trio_mesa.step_agents(model.agents, max_concurrency=limit)
    assert peak == limit
    assert report.counts[Status.OK] == 20
    assert report.duration == -(-20 // limit)  # ceil(20 / limit) rounds of 1 s


async def test_shared_limiter_bounds_two_models_stepped_at_once(mock_clock):
    in_flight = 0
    peak = 0

    class Counted(AsyncioAgent):
        async def astep(self):
            nonlocal in_flight, peak
            import asyncio

            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(1)
            in_flight -= 1

    limiter = trio.CapacityLimiter(4)
    models = [Model(seed=s) for s in (1, 2)]
    for model in models:
        for _ in range(10):
            Counted(model)
    reports = []

    async def step(model):
        reports.append(await trio_mesa.step_agents(model.agents, limiter=limiter))

    async with trio.open_nursery() as nursery:
        for model in models:
            nursery.start_soon(step, model)
    assert peak == 4
    assert sum(r.counts[Status.OK] for r in reports) == 20
    assert limiter.borrowed_tokens == 0


async def test_thread_mode_runs_sync_agents_concurrently():
    # A barrier for all ten only opens if all ten steps are running at the same time.
    barrier = threading.Barrier(10, timeout=30)
    model = Model()
    agents = [SyncAgent(model, ("barrier", barrier)) for _ in range(10)]
    report = await trio_mesa.step_agents(model.agents, sync_mode="thread")
    assert report.counts[Status.OK] == 10
    assert not barrier.broken
    assert all(a.finished == 1 for a in agents)


async def test_max_threads_bounds_worker_threads():
    lock = threading.Lock()
    in_flight = 0
    peak = 0

    class Counted(SyncAgent):
        def step(self):
            nonlocal in_flight, peak
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            threading.Event().wait(0.01)
            with lock:
                in_flight -= 1

    model = Model()
    for _ in range(12):
        Counted(model)
    report = await trio_mesa.step_agents(model.agents, sync_mode="thread", max_threads=3)
    assert report.counts[Status.OK] == 12
    assert 1 <= peak <= 3


async def test_inline_sync_agents_run_on_the_trio_thread_in_start_order():
    model = Model()
    threads = []

    class Recording(SyncAgent):
        def step(self):
            threads.append(threading.get_ident())
            return super().step()

    for _ in range(6):
        Recording(model)
    report = await trio_mesa.step_agents(model.agents)
    assert set(threads) == {threading.get_ident()}
    assert model.log == [o.unique_id for o in report]


async def test_thread_outliving_its_timeout_is_waited_for_by_default(mock_clock, caplog):
    # Threads cannot be cancelled: by default the step waits for the thread and keeps
    # what it did, and says so in the log.
    release = threading.Event()
    model = Model()
    blocked = SyncAgent(model, ("block", release))

    @trio_mesa.trio_native
    class Releaser(TrioAgent):
        async def astep(self):
            try:
                await trio.sleep(10)
            finally:  # cancelled by its own 1 s timeout, after the thread's timeout fired
                release.set()

    Releaser(model)
    with caplog.at_level(logging.WARNING, logger="trio_mesa"):
        report = await trio_mesa.step_agents(model.agents, sync_mode="thread", timeout=1)
    outcome = report.by_id()[blocked.unique_id]
    assert outcome.status is Status.OK
    assert outcome.result == f"done-{blocked.unique_id}"
    assert outcome.abandoned is False and report.abandoned == ()
    assert blocked.finished == 1  # it ran to the end before the step returned
    overran = [r for r in caplog.records if "cannot be interrupted" in r.getMessage()]
    assert len(overran) == 1 and str(blocked.unique_id) in overran[0].getMessage()


async def test_abandoned_thread_is_reported_loudly(mock_clock, caplog):
    release = threading.Event()
    model = Model()
    blocked = SyncAgent(model, ("block", release))
    TrioAgent(model)
    with caplog.at_level(logging.WARNING, logger="trio_mesa"):
        report = await trio_mesa.step_agents(
            model.agents, sync_mode="thread", timeout=1, abandon_threads=True
        )
    try:
        outcome = report.by_id()[blocked.unique_id]
        assert outcome.status is Status.TIMED_OUT
        assert outcome.abandoned is True
        assert report.abandoned == (outcome,)
        assert blocked.finished == 0  # still running when the step returned
        assert "WARNING: 1 agent thread(s) still running" in str(report)
        assert any("ABANDONED" in r.getMessage() for r in caplog.records)
        assert report.to_records()[report.outcomes.index(outcome)]["abandoned"] is True
    finally:
        release.set()


async def test_inline_sync_agents_are_not_interrupted_by_timeout(mock_clock):
    model = Model()
    agent = SyncAgent(model)
    report = await trio_mesa.step_agents([agent], timeout=0.5)
    assert report.outcomes[0].status is Status.OK


async def test_a_shared_limiter_tells_concurrent_steps_of_the_same_agents_apart(mock_clock):
    # Two steps calling the same method of the same agents at once, one shared limiter:
    # each call must hold its own token (a limiter refuses a borrower holding one).
    class Thinker(TrioAgent):
        @trio_mesa.trio_native
        async def think(self):
            await trio.sleep(1)
            return self.unique_id

    model = Model()
    agents = [Thinker(model) for _ in range(3)]
    limiter = trio.CapacityLimiter(10)
    policy = trio_mesa.StepPolicy(limiter=limiter)
    reports = []

    async def call():
        reports.append(await trio_mesa.call_agents(agents, "think", policy=policy))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        nursery.start_soon(call)
    assert [r.counts[Status.OK] for r in reports] == [3, 3]
    assert limiter.borrowed_tokens == 0
    assert trio.current_time() == 1  # all six calls ran at once
