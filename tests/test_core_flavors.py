"""Flavors: Trio-native, asyncio via a lazily imported trio-asyncio, sync; and call_agents."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest
import trio
from core_agents import AsyncioAgent, Model, SyncAgent, TrioAgent

import trio_mesa
from trio_mesa import Flavor, Status
from trio_mesa._flavor import flavor_of, step_plan


def _run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_importing_trio_mesa_does_not_import_trio_asyncio():
    out = _run_python(
        """
        import sys, trio_mesa
        print("trio_asyncio" in sys.modules)
        """
    )
    assert out == "False"


def test_trio_asyncio_is_imported_only_when_a_trio_host_meets_an_asyncio_agent():
    out = _run_python(
        """
        import sys, mesa, trio, trio_mesa

        class A(mesa.Agent):
            def step(self): pass

        @trio_mesa.trio_native
        class T(mesa.Agent):
            async def astep(self): await trio.sleep(0)

        class Aio(mesa.Agent):
            async def astep(self): pass

        m = mesa.Model(rng=1)
        A(m); T(m)
        trio_mesa.run_step(m.agents)
        before = "trio_asyncio" in sys.modules
        Aio(m)
        report = trio_mesa.run_step(m.agents)
        print(before, "trio_asyncio" in sys.modules, report.all_ok)
        """
    )
    assert out == "False True True"


def test_flavor_detection():
    model = Model()
    assert step_plan(TrioAgent(model)) == ("astep", Flavor.TRIO)
    assert step_plan(AsyncioAgent(model)) == ("astep", Flavor.ASYNCIO)
    assert step_plan(SyncAgent(model)) == ("step", Flavor.SYNC)

    class Sub(TrioAgent):  # the class mark is inherited
        async def astep(self):
            await trio.sleep(0)

    assert step_plan(Sub(model)) == ("astep", Flavor.TRIO)

    class MethodMarked(AsyncioAgent):
        @trio_mesa.trio_native
        async def astep(self):
            await trio.sleep(0)

    assert step_plan(MethodMarked(model)) == ("astep", Flavor.TRIO)

    async def aio_fn(agent):
        return agent

    assert flavor_of(aio_fn) is Flavor.ASYNCIO
    assert flavor_of(trio_mesa.trio_native(aio_fn)) is Flavor.TRIO


async def test_asyncio_agents_share_one_loop_per_step_and_run_concurrently(mock_clock):
    loops = set()

    class Recording(AsyncioAgent):
        async def astep(self):
            loops.add(asyncio.get_running_loop())
            await asyncio.sleep(1)

    model = Model()
    for _ in range(50):
        Recording(model)
    report = await trio_mesa.step_agents(model.agents)
    assert report.counts[Status.OK] == 50
    assert len(loops) == 1
    assert report.duration == 1  # fifty 1 s sleeps overlapped


async def test_run_in_executor_may_return_a_coroutine(mock_clock):
    # litellm's acompletion does exactly this; trio-asyncio's default executor refuses it.
    class LitellmLike(AsyncioAgent):
        async def astep(self):
            async def reply():
                await asyncio.sleep(0.5)
                return "completion"

            loop = asyncio.get_running_loop()
            coro = await loop.run_in_executor(None, lambda: reply())
            return await coro

    model = Model()
    report = await trio_mesa.step_agents([LitellmLike(model)])
    assert report.outcomes[0].status is Status.OK
    assert report.outcomes[0].result == "completion"


async def test_upstream_trio_asyncio_executor_still_rejects_a_coroutine_result():
    # Pins the trio-asyncio behaviour PassThroughExecutor works around: its default
    # TrioExecutor runs jobs via trio.to_thread.run_sync, which refuses a coroutine
    # return value. If this starts passing upstream, the workaround can go.
    import trio_asyncio

    async def reply():
        return "completion"

    async def aio_main():
        coro = None

        def make():
            nonlocal coro
            coro = reply()
            return coro

        try:
            await asyncio.get_running_loop().run_in_executor(None, make)
        finally:
            assert coro is not None
            coro.close()

    async with trio_asyncio.open_loop():
        with pytest.raises(TypeError, match="Trio expected a sync function"):
            await trio_asyncio.aio_as_trio(aio_main)()


async def test_an_existing_trio_asyncio_loop_is_reused():
    import trio_asyncio

    seen = []

    class Recording(AsyncioAgent):
        async def astep(self):
            seen.append(asyncio.get_running_loop())

    model = Model()
    Recording(model)
    async with trio_asyncio.open_loop() as loop:
        await trio_mesa.step_agents(model.agents)
    assert seen == [loop]


async def test_a_reused_trio_asyncio_loop_gets_batched_callbacks_and_keeps_working(mock_clock):
    # trio-asyncio's own main loop runs one callback per Trio pass: a step inside the
    # caller's open_loop() installs batching on that loop (once), without losing what
    # was queued before, or the loop's timers and callbacks after the step.
    import trio_asyncio

    from trio_mesa._trio_asyncio_batching import is_installed

    class Sleeper(AsyncioAgent):
        async def astep(self):
            await asyncio.sleep(0.01)
            return asyncio.get_running_loop()

    model = Model()
    agents = [Sleeper(model) for _ in range(3)]
    ran = []
    async with trio_asyncio.open_loop() as loop:
        assert not is_installed(loop)
        for i in range(3):
            loop.call_soon(ran.append, i)  # queued before the swap
        first = await trio_mesa.step_agents(agents)
        assert is_installed(loop)
        second = await trio_mesa.step_agents(agents)
        fired = trio.Event()
        loop.call_later(0.01, fired.set)
        loop.call_soon(ran.append, 3)
        with trio.fail_after(5):  # virtual time: fails only if the timer never fires
            await fired.wait()
    assert ran == [0, 1, 2, 3]
    for report in (first, second):
        assert [o.status for o in report] == [Status.OK] * 3
        assert {o.result for o in report} == {loop}


async def test_on_a_reused_loop_run_in_executor_may_return_a_coroutine_as_litellm_needs():
    # litellm's acompletion gets a coroutine back from run_in_executor; trio-asyncio's
    # stock executor rejects that (pinned above), so a reused loop gets ours, once.
    import trio_asyncio

    from trio_mesa._executor import PassThroughExecutor

    async def reply():
        return "ok"

    class LitellmLike(AsyncioAgent):
        async def astep(self):
            coro = await asyncio.get_running_loop().run_in_executor(None, lambda: reply())
            return await coro

    model = Model()
    LitellmLike(model)
    async with trio_asyncio.open_loop() as loop:
        report = await trio_mesa.step_agents(model.agents)
        assert type(loop._default_executor) is PassThroughExecutor
    [outcome] = report
    assert (outcome.status, outcome.result) == (Status.OK, "ok")


async def test_a_reused_loop_keeps_an_executor_its_owner_chose():
    import trio_asyncio

    class Mine(trio_asyncio.TrioExecutor):
        pass

    model = Model()
    AsyncioAgent(model)
    async with trio_asyncio.open_loop() as loop:
        mine = Mine()
        loop.set_default_executor(mine)
        await trio_mesa.step_agents(model.agents)
        assert loop._default_executor is mine


async def test_call_agents_keeps_results_and_passes_arguments():
    class Speaker(SyncAgent):
        def say(self, word, *, times=1, timeout=None):
            return f"{self.unique_id}:{word * times}:{timeout}"

        async def asay(self, word):
            await asyncio.sleep(0)
            if self.unique_id == 2:
                raise ValueError("malformed JSON")
            return word.upper()

        @trio_mesa.trio_native
        async def tsay(self, word):
            await trio.sleep(0)
            return word[::-1]

    model = Model()
    agents = [Speaker(model) for _ in range(3)]

    # `timeout` here is the method's own keyword, not a step option.
    report = await trio_mesa.call_agents(agents, "say", "ab", times=2, timeout=9)
    assert [o.result for o in report] == [f"{a.unique_id}:abab:9" for a in agents]

    report = await trio_mesa.call_agents(agents, "asay", "hi")
    assert [o.status for o in report] == [Status.OK, Status.FAILED, Status.OK]
    assert [o.result for o in report] == ["HI", None, "HI"]

    report = await trio_mesa.call_agents(agents, "tsay", "abc")
    assert [o.result for o in report] == ["cba"] * 3

    report = await trio_mesa.call_agents(agents, lambda agent, k: agent.unique_id * k, 10)
    assert [o.result for o in report] == [a.unique_id * 10 for a in agents]


async def test_call_agents_takes_a_policy(mock_clock):
    class Slow(AsyncioAgent):
        async def think(self, seconds):
            await asyncio.sleep(seconds)
            return seconds

    model = Model()
    agents = [Slow(model) for _ in range(2)]
    policy = trio_mesa.StepPolicy(timeout=3)
    report = await trio_mesa.call_agents(agents, "think", 1, policy=policy)
    assert [o.status for o in report] == [Status.OK, Status.OK]
    report = await trio_mesa.call_agents(agents, "think", 5, policy=policy)
    assert [o.status for o in report] == [Status.TIMED_OUT, Status.TIMED_OUT]


@pytest.mark.parametrize("sync_mode", ["inline", "thread"])
def test_run_step_works_from_plain_sync_code(sync_mode):
    model = Model()
    agents = [TrioAgent(model), AsyncioAgent(model), SyncAgent(model)]
    report = trio_mesa.run_step(model.agents, sync_mode=sync_mode)
    assert report.counts[Status.OK] == 3
    assert all(a.finished == 1 for a in agents)
