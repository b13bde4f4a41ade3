"""The asyncio-host driver (`trio_mesa.aio_step_agents`): Trio guest mode on the caller's loop.

These tests run real ``asyncio.run`` loops from sync test functions (pytest-trio owns
``async def`` tests). Sleeps are tiny and no test asserts a duration.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import threading
from typing import ClassVar

import mesa
import pytest
import sniffio
import trio

import trio_mesa
from trio_mesa import Status, StepPolicy, aio_call_agents, aio_step_agents

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


class Model(mesa.Model):
    def __init__(self) -> None:
        super().__init__(rng=7)


class Sleeper(mesa.Agent):
    """Asyncio agent: yields to the loop, then records what it saw."""

    def __init__(self, model: Model, delay: float = 0.001) -> None:
        super().__init__(model)
        self.delay = delay
        self.steps = 0
        self.library: str | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.request_id: str | None = None

    async def astep(self) -> int:
        await asyncio.sleep(self.delay)
        self.steps += 1
        self.library = sniffio.current_async_library()
        self.loop = asyncio.get_running_loop()
        self.request_id = request_id.get()
        return self.unique_id


class Failing(mesa.Agent):
    async def astep(self) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("LLM timeout")


class Forever(mesa.Agent):
    """Waits on an event nobody sets; records that it was cancelled and cleaned up."""

    started = 0
    cancelled = 0
    tasks: ClassVar[list[asyncio.Task]] = []

    async def astep(self) -> None:
        type(self).started += 1
        type(self).tasks.append(asyncio.current_task())
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            type(self).cancelled += 1
            await asyncio.sleep(0)  # cleanup that itself awaits
            raise


class Interrupting(mesa.Agent):
    async def astep(self) -> None:
        await asyncio.sleep(0)
        raise KeyboardInterrupt


class SyncFailing(mesa.Agent):
    def step(self) -> None:
        raise ValueError("bad JSON")


@pytest.fixture(autouse=True)
def _reset_forever() -> None:
    Forever.started = Forever.cancelled = 0
    Forever.tasks = []


def run(coro_fn, *args, **kwargs):
    """asyncio.run a coroutine function and also return the tasks left pending."""

    async def main():
        result = await coro_fn(*args, **kwargs)
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        return result, pending

    return asyncio.run(main())


def test_agents_run_on_the_callers_loop_and_see_asyncio() -> None:
    model = Model()
    agents = [Sleeper(model) for _ in range(20)]

    async def main():
        loop = asyncio.get_running_loop()
        report = await aio_step_agents(agents)
        return loop, report

    (loop, report), pending = run(main)
    assert [o.status for o in report] == [Status.OK] * 20
    assert [o.result for o in report] == [a.unique_id for a in agents]
    assert all(a.steps == 1 and a.loop is loop for a in agents)
    assert {a.library for a in agents} == {"asyncio"}  # never run inside a Trio tick
    assert pending == []


def test_loop_bound_objects_made_before_the_step_keep_working() -> None:
    model = Model()

    class QueueUser(mesa.Agent):
        async def astep(self) -> int:
            async with self.model.lock:
                item = await self.model.queue.get()
            await self.model.results.put(item * 2)
            return item

    agents = [QueueUser(model) for _ in range(10)]

    async def main():
        model.lock = asyncio.Lock()
        model.queue = asyncio.Queue()
        model.results = asyncio.Queue()
        for i in range(10):
            model.queue.put_nowait(i)
        async with model.lock:  # agents must wait for this lock, on this loop
            task = asyncio.ensure_future(aio_step_agents(agents))
            await asyncio.sleep(0.005)
            assert not task.done()
        report = await task
        doubled = sorted(model.results.get_nowait() for _ in range(10))
        return report, doubled

    (report, doubled), pending = run(main)
    assert report.all_ok, report
    assert sorted(o.result for o in report) == list(range(10))
    assert doubled == [2 * i for i in range(10)]
    assert pending == []


def test_a_failure_is_isolated_logged_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    model = Model()
    working = Sleeper(model)
    failing = Failing(model)
    with caplog.at_level(logging.ERROR, logger="trio_mesa"):
        report, pending = run(aio_step_agents, [failing, working])
    assert working.steps == 1
    by_id = report.by_id()
    assert by_id[working.unique_id].status is Status.OK
    assert by_id[failing.unique_id].status is Status.FAILED
    assert str(by_id[failing.unique_id].exception) == "LLM timeout"
    assert any(
        getattr(r, "agent_unique_id", None) == failing.unique_id and "LLM timeout" in r.getMessage()
        for r in caplog.records
    )
    assert pending == []


def test_strict_mode_raises_the_group_after_all_finished() -> None:
    model = Model()
    working = Sleeper(model, delay=0.005)
    failing = Failing(model)
    with pytest.raises(trio_mesa.StepFailed) as info:
        run(aio_step_agents, [failing, working], strict=True)
    assert working.steps == 1
    assert [type(e) for e in info.value.exceptions] == [RuntimeError]
    assert info.value.report.by_id()[working.unique_id].status is Status.OK


def test_cancelling_the_caller_cancels_and_waits_for_every_agent() -> None:
    model = Model()
    agents = [Forever(model) for _ in range(5)] + [Sleeper(model, delay=0)]

    async def main():
        task = asyncio.ensure_future(aio_step_agents(agents))
        while Forever.started < 5:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Every agent task finished its cleanup before the call raised.
        assert Forever.cancelled == 5
        return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    assert asyncio.run(main()) == []


def test_a_second_cancellation_does_not_cut_the_wait_short() -> None:
    model = Model()
    agents = [Forever(model) for _ in range(3)]

    async def main():
        task = asyncio.ensure_future(aio_step_agents(agents))
        while Forever.started < 3:
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert Forever.cancelled == 3
        return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    assert asyncio.run(main()) == []


def test_asyncio_timeout_around_the_call_works() -> None:
    model = Model()
    agents = [Forever(model) for _ in range(3)]

    async def main():
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.01):
                await aio_step_agents(agents)
        return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    assert asyncio.run(main()) == []
    assert Forever.cancelled == 3


def test_per_agent_timeout_cancels_the_asyncio_task() -> None:
    model = Model()
    slow = Forever(model)
    fast = Sleeper(model, delay=0)
    # Generous enough that the fast agent (two loop iterations) finishes under any load.
    report, pending = run(aio_step_agents, [slow, fast], timeout=0.25)
    assert report.by_id()[slow.unique_id].status is Status.TIMED_OUT
    assert report.by_id()[fast.unique_id].status is Status.OK
    assert Forever.cancelled == 1
    assert pending == []


def test_keyboard_interrupt_from_an_agent_propagates_as_itself() -> None:
    model = Model()
    agents = [Forever(model) for _ in range(3)] + [Interrupting(model)]
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(aio_step_agents(agents))
    assert Forever.cancelled == Forever.started
    # The thread's Trio state was cleaned up: both hosts still work afterwards.
    assert not trio.lowlevel.in_trio_run()
    model2 = Model()
    report, pending = run(aio_step_agents, [Sleeper(model2)])
    assert report.all_ok and pending == []


def test_fail_fast_discards_agents_cancelled_before_they_started() -> None:
    # The inline sync failure fires fail_fast before the asyncio agents' tasks were
    # created: their coroutines are discarded unrun (no "never awaited" warning: the
    # suite turns that warning into an error).
    model = Model()
    failing = SyncFailing(model)
    sleepers = [Sleeper(model) for _ in range(5)]
    report, pending = run(aio_step_agents, [*sleepers, failing], fail_fast=True)
    gc.collect()
    by_id = report.by_id()
    assert by_id[failing.unique_id].status is Status.FAILED
    assert {by_id[a.unique_id].status for a in sleepers} == {Status.CANCELLED}
    assert all(a.steps == 0 for a in sleepers)
    assert pending == []


def test_concurrent_and_nested_steps_share_one_loop() -> None:
    model = Model()
    inner = [Sleeper(model) for _ in range(3)]

    class Parent(mesa.Agent):
        async def astep(self) -> int:
            report = await aio_step_agents(inner)  # a step inside an agent's step
            return len(report.ok)

    first = [Sleeper(model) for _ in range(4)]
    parent = Parent(model)

    async def main():
        return await asyncio.gather(aio_step_agents(first), aio_step_agents([parent]))

    (r1, r2), pending = run(main)
    assert r1.all_ok and r2.all_ok
    assert r2.outcomes[0].result == 3
    assert all(a.steps == 1 for a in [*first, *inner])
    assert pending == []


def test_consecutive_steps_on_one_loop_and_on_new_loops() -> None:
    model = Model()
    agents = [Sleeper(model) for _ in range(3)]

    async def main():
        for _ in range(3):
            assert (await aio_step_agents(agents)).all_ok

    asyncio.run(main())
    asyncio.run(main())
    assert all(a.steps == 6 for a in agents)


def test_agents_see_the_callers_contextvars() -> None:
    model = Model()
    agents = [Sleeper(model) for _ in range(3)]

    async def main():
        request_id.set("r-42")
        return await aio_step_agents(agents)

    run(main)
    assert {a.request_id for a in agents} == {"r-42"}


def test_eager_task_factory_still_runs_agents_outside_trio() -> None:
    model = Model()
    agents = [Sleeper(model, delay=0) for _ in range(3)]

    async def main():
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)
        return await aio_step_agents(agents)

    report, _ = run(main)
    assert report.all_ok
    assert {a.library for a in agents} == {"asyncio"}


def test_sync_and_trio_native_agents_on_an_asyncio_host() -> None:
    model = Model()
    seen_threads: list[str] = []

    class Blocking(mesa.Agent):
        def step(self) -> str:
            seen_threads.append(threading.current_thread().name)
            return "sync"

    @trio_mesa.trio_native
    class TrioAgent(mesa.Agent):
        async def astep(self) -> str:
            await trio.sleep(0)
            return sniffio.current_async_library()

    agents = [Blocking(model), TrioAgent(model), Sleeper(model)]
    report, pending = run(aio_step_agents, agents, sync_mode="thread")
    assert [o.result for o in report] == ["sync", "trio", agents[2].unique_id]
    assert seen_threads and seen_threads[0] != threading.main_thread().name
    assert pending == []


def test_call_agents_keeps_return_values_and_arguments() -> None:
    model = Model()

    class Adder(mesa.Agent):
        async def add(self, x: int, *, y: int) -> int:
            await asyncio.sleep(0)
            return self.unique_id + x + y

    agents = [Adder(model) for _ in range(4)]
    report, _ = run(aio_call_agents, agents, "add", 10, y=100, policy=StepPolicy(timeout=5))
    assert [o.result for o in report] == [a.unique_id + 110 for a in agents]


def test_bad_input_fails_before_any_agent_runs() -> None:
    model = Model()
    agent = Sleeper(model)
    with pytest.raises(TypeError, match="not a Mesa agent"):
        asyncio.run(aio_step_agents([agent, object()]))
    with pytest.raises(ValueError, match="timeout"):
        asyncio.run(aio_step_agents([agent], timeout=-1))
    assert agent.steps == 0


# -- asyncio agents run as bare tasks in start batches: the same semantics as the core ------


def test_max_concurrency_limits_asyncio_agents_in_flight() -> None:
    model = Model()
    in_flight = peak = 0

    class Counting(mesa.Agent):
        async def astep(self) -> None:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.001)
            in_flight -= 1

    agents = [Counting(model) for _ in range(12)]
    report, pending = run(aio_step_agents, agents, max_concurrency=3)
    assert report.all_ok and len(report) == 12
    assert peak == 3
    assert pending == []


def test_a_shared_limiter_is_released_by_every_agent() -> None:
    model = Model()
    agents = [Sleeper(model, delay=0) for _ in range(5)] + [Failing(model)]

    async def main():
        limiter = trio.CapacityLimiter(2)
        await aio_step_agents(agents, limiter=limiter)
        await aio_step_agents(agents, limiter=limiter)  # would hang if a slot leaked
        return limiter.borrowed_tokens

    assert asyncio.run(main()) == 0


def test_fail_fast_from_an_asyncio_agent_cancels_its_siblings() -> None:
    model = Model()
    forever = [Forever(model) for _ in range(3)]
    failing = Failing(model)
    report, pending = run(aio_step_agents, [*forever, failing], fail_fast=True)
    by_id = report.by_id()
    assert by_id[failing.unique_id].status is Status.FAILED
    assert {by_id[a.unique_id].status for a in forever} == {Status.CANCELLED}
    assert "fail_fast" in str(by_id[forever[0].unique_id].exception)
    assert Forever.cancelled == 3
    assert pending == []


def test_step_deadline_times_out_running_agents() -> None:
    model = Model()
    slow = [Forever(model) for _ in range(2)]
    fast = Sleeper(model, delay=0)
    report, _ = run(aio_step_agents, [*slow, fast], deadline=0.25)
    by_id = report.by_id()
    assert by_id[fast.unique_id].status is Status.OK
    for agent in slow:
        assert by_id[agent.unique_id].status is Status.TIMED_OUT
        assert by_id[agent.unique_id].exception.reason == "deadline"


def test_agents_removed_before_their_turn_are_skipped() -> None:
    model = Model()

    class Remover(mesa.Agent):
        def step(self) -> None:
            victim.remove()

    remover = Remover(model)
    victim = Sleeper(model)
    report, _ = run(aio_step_agents, [remover, victim])
    assert report.by_id()[victim.unique_id].status is Status.SKIPPED
    assert victim.steps == 0


def test_an_agent_whose_task_is_cancelled_by_other_code_ends_cancelled_alone() -> None:
    # As with asyncio.gather(return_exceptions=True): its siblings carry on.
    model = Model()

    class SelfCancelling(mesa.Agent):
        async def astep(self) -> None:
            await asyncio.sleep(0)
            raise asyncio.CancelledError

    victim = Forever(model)
    cancelling = SelfCancelling(model)
    working = Sleeper(model, delay=0.002)

    async def main():
        step = asyncio.ensure_future(aio_step_agents([victim, cancelling, working]))
        while Forever.started < 1:
            await asyncio.sleep(0)
        Forever.tasks[0].cancel()
        report = await step
        return report, [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    report, pending = asyncio.run(main())
    by_id = report.by_id()
    assert by_id[working.unique_id].status is Status.OK
    for agent in (victim, cancelling):
        assert by_id[agent.unique_id].status is Status.CANCELLED
        assert isinstance(by_id[agent.unique_id].exception.__cause__, asyncio.CancelledError)
    assert pending == []


def test_an_agent_that_never_awaits_finishes_in_its_first_step() -> None:
    model = Model()

    class Instant(mesa.Agent):
        async def astep(self) -> str:
            return "instant"

    report, pending = run(aio_step_agents, [Instant(model) for _ in range(3)])
    assert [o.result for o in report] == ["instant"] * 3
    assert pending == []
