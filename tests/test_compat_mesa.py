"""trio_mesa.compat on Mesa 3.5 agent sets: the shuffle_do patch, do_async, threading mode."""

from __future__ import annotations

import asyncio
import logging
import threading
import warnings

import mesa
import pytest
from mesa.agentset import AbstractAgentSet, AgentSet, _HardKeyAgentSet

from trio_mesa import AgentTimeout, Status, StepReport, _auto_stepping, compat
from trio_mesa.compat import AgentResults

MESA_SHUFFLE_DO = {cls: cls.__dict__["shuffle_do"] for cls in (AgentSet, _HardKeyAgentSet)}


class Model(mesa.Model):
    def __init__(self, seed: int = 3, parallel: bool = True) -> None:
        super().__init__(rng=seed)
        self.parallel_stepping = parallel
        self.log: list[int] = []


class Stepper(mesa.Agent):
    def step(self) -> None:
        self.model.log.append(self.unique_id)


class AsyncStepper(mesa.Agent):
    async def astep(self) -> None:
        await asyncio.sleep(0)
        self.model.log.append(self.unique_id)


class Other(mesa.Agent):
    async def astep(self) -> None:
        self.model.log.append(-self.unique_id)


@pytest.fixture
def automatic():
    compat.enable_automatic_parallel_stepping()
    yield
    compat.disable_automatic_parallel_stepping()


def test_disable_restores_mesas_functions_exactly() -> None:
    compat.enable_automatic_parallel_stepping("threading")
    assert AgentSet.shuffle_do is not MESA_SHUFFLE_DO[AgentSet]
    assert _HardKeyAgentSet.shuffle_do is not MESA_SHUFFLE_DO[_HardKeyAgentSet]
    compat.enable_automatic_parallel_stepping("asyncio")  # twice: still one layer
    assert AgentSet.shuffle_do.__wrapped__ is MESA_SHUFFLE_DO[AgentSet]
    compat.disable_automatic_parallel_stepping()
    for cls, original in MESA_SHUFFLE_DO.items():
        assert cls.__dict__["shuffle_do"] is original


def test_bad_mode_patches_nothing() -> None:
    with pytest.raises(ValueError, match="mode"):
        compat.enable_automatic_parallel_stepping("processes")
    assert AgentSet.shuffle_do is MESA_SHUFFLE_DO[AgentSet]


@pytest.mark.parametrize("which", ["model.agents", "agents_by_type", "AgentSet"])
def test_every_kind_of_set_steps_in_parallel(automatic, which: str) -> None:
    model = Model()
    in_flight = 0
    peak = 0

    class Counting(mesa.Agent):
        async def astep(self) -> None:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.001)
            in_flight -= 1
            self.model.log.append(self.unique_id)

    agents = [Counting(model) for _ in range(6)]
    target = {
        "model.agents": lambda: model.agents,
        "agents_by_type": lambda: model.agents_by_type[Counting],
        "AgentSet": lambda: AgentSet(agents, random=model.random),
    }[which]()
    assert target.shuffle_do("step") is target
    assert sorted(model.log) == sorted(a.unique_id for a in agents)
    assert peak == 6  # all in flight at once: Mesa alone would step them one by one


def test_order_and_rng_use_match_mesa(automatic) -> None:
    # Inline sync agents run in start order, so the log shows the order directly.
    def run(patched: bool) -> tuple[list[int], float]:
        model = Model(seed=11, parallel=patched)
        for _ in range(30):
            Stepper(model)
        with compat.policy(sync_mode="inline"):
            model.agents.shuffle_do("step")
        return model.log, model.random.random()

    assert run(patched=True) == run(patched=False)


def test_other_shuffle_do_calls_behave_as_in_mesa(automatic) -> None:
    model = Model()
    agents = [Stepper(model) for _ in range(3)]
    seen: list[int] = []
    model.agents.shuffle_do(lambda a: seen.append(a.unique_id))
    assert sorted(seen) == sorted(a.unique_id for a in agents)

    class WithArg(mesa.Agent):
        def step(self, n: int = 1) -> None:
            self.model.log.append(n)

    model2 = Model()
    WithArg(model2)
    model2.agents.shuffle_do("step", 5)  # arguments: Mesa's path
    assert model2.log == [5]
    sequential = Model(parallel=False)
    Other(sequential)
    sequential.agents.shuffle_do("step")  # astep not called: Mesa calls step()
    assert sequential.log == []


def test_a_model_without_the_flag_steps_sequentially_and_says_so_once(
    automatic, monkeypatch
) -> None:
    # mesa-llm 0.3.2 (the contract) steps in parallel only models with
    # parallel_stepping = True, and the rest sequentially without a word; compat keeps
    # that, but a model with no such attribute at all gets one warning per process.
    monkeypatch.setattr(_auto_stepping, "_warned_flag_unset", False)

    class Unflagged(mesa.Model):
        def __init__(self) -> None:
            super().__init__(rng=3)
            self.log: list[int] = []

    threads: set[str] = set()

    class WhereAmI(mesa.Agent):
        def step(self) -> None:
            threads.add(threading.current_thread().name)

    model = Unflagged()
    for _ in range(3):
        WhereAmI(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.agents.shuffle_do("step")
        model.agents.shuffle_do("step")
        opted_out = Model(parallel=False)
        WhereAmI(opted_out)
        opted_out.agents.shuffle_do("step")
    assert threads == {threading.current_thread().name}  # Mesa's own, sequential
    (warning,) = caught
    assert warning.category is UserWarning and warning.filename == __file__
    message = str(warning.message)
    assert "Unflagged has no `parallel_stepping` attribute" in message
    assert "self.parallel_stepping = True" in message


def test_agents_removed_during_the_step_are_skipped(automatic) -> None:
    model = Model()

    class Remover(mesa.Agent):
        def step(self) -> None:
            for other in list(self.model.agents):
                if other is not self:
                    other.remove()
            self.model.log.append(self.unique_id)

    for _ in range(5):
        Remover(model)
    with compat.policy(sync_mode="inline"):  # one after another, as Mesa would
        model.agents.shuffle_do("step")
    assert len(model.log) == 1  # the first one removed the rest before their turn


def test_a_failure_in_shuffle_do_is_logged_not_raised(automatic, caplog) -> None:
    model = Model()

    class Failing(mesa.Agent):
        async def astep(self) -> None:
            raise RuntimeError("LLM timeout")

    failing = Failing(model)
    working = AsyncStepper(model)
    with caplog.at_level(logging.ERROR, logger="trio_mesa"):
        model.agents.shuffle_do("step")
    assert model.log == [working.unique_id]
    assert [r.agent_unique_id for r in caplog.records] == [failing.unique_id]


def test_threading_mode_runs_100_blocking_agents_at_once(automatic) -> None:
    compat.enable_automatic_parallel_stepping("threading")
    model = Model()
    # A barrier of 100 only opens if all 100 sync agents block in it together; with too
    # few threads it times out and every agent fails (no timing assertion needed).
    barrier = threading.Barrier(100, timeout=30)

    class Blocking(mesa.Agent):
        def step(self) -> str:
            barrier.wait()
            self.model.log.append(self.unique_id)
            return threading.get_ident()

    for _ in range(100):
        Blocking(model)
    model.agents.shuffle_do("step")
    assert len(model.log) == 100
    report = compat.step_agents_multithreaded(list(model.agents))
    assert report.all_ok, report
    assert len({o.result for o in report}) == 100  # 100 distinct worker threads


def test_threading_mode_async_agents_share_one_loop() -> None:
    model = Model()
    loops = []

    class LoopSeer(mesa.Agent):
        async def astep(self) -> None:
            await asyncio.sleep(0)
            loops.append(asyncio.get_running_loop())

    for _ in range(10):
        LoopSeer(model)
    assert compat.step_agents_multithreaded(list(model.agents)).all_ok
    assert len(loops) == 10 and len(set(map(id, loops))) == 1


def test_do_async_exists_on_every_agent_set_and_keeps_order() -> None:
    model = Model()

    class Answerer(mesa.Agent):
        async def ask(self, question: str, *, suffix: str = "") -> str:
            await asyncio.sleep(0)
            if self.unique_id == 2:
                raise RuntimeError("LLM timeout")
            return f"{self.unique_id}:{question}{suffix}"

    agents = [Answerer(model) for _ in range(4)]
    sets = [model.agents, model.agents_by_type[Answerer], AgentSet(agents, random=model.random)]

    async def main():
        return [await s.do_async("ask", "q", suffix="!") for s in sets]

    for results in asyncio.run(main()):
        assert isinstance(results, AgentResults) and isinstance(results.report, StepReport)
        assert results[0] == "1:q!" and results[2:] == ["3:q!", "4:q!"]
        assert isinstance(results[1], RuntimeError)
        assert [o.unique_id for o in results.report.failed] == [2]
    assert AbstractAgentSet.do_async is AgentSet.do_async is _HardKeyAgentSet.do_async


def test_do_async_slots_for_timeouts_and_missing_methods() -> None:
    model = Model()

    class Slow(mesa.Agent):
        async def think(self) -> None:
            await asyncio.Event().wait()

    Slow(model)

    async def main():
        with compat.policy(timeout=0.01):
            results = await model.agents.do_async("think")
        assert isinstance(results[0], AgentTimeout)
        assert results.report.outcomes[0].status is Status.TIMED_OUT
        with pytest.raises(TypeError, match="no callable method 'nope'"):
            await model.agents.do_async("nope")

    asyncio.run(main())


def test_sync_entry_points_inside_a_running_loop() -> None:
    model = Model()
    agents = [Stepper(model), AsyncStepper(model)]

    async def main():
        report = compat.step_agents_parallel_sync(agents)  # blocks this loop, as mesa-llm
        report2 = compat.step_agents_multithreaded(agents)
        return report, report2

    r1, r2 = asyncio.run(main())
    assert r1.all_ok and r2.all_ok
    assert sorted(model.log) == sorted([a.unique_id for a in agents] * 2)


def test_step_agents_parallel_overlaps_blocking_sync_agents_by_default() -> None:
    # mesa-llm's step_agents_parallel ran sync step()s one after another; a barrier for
    # all of them only opens if every step is running at the same time.
    barrier = threading.Barrier(8, timeout=30)

    class Blocking(mesa.Agent):
        def step(self) -> None:
            barrier.wait()

    model = Model()
    agents = [Blocking(model) for _ in range(8)]
    report = asyncio.run(compat.step_agents_parallel(agents))
    assert report.counts[Status.OK] == 8 and not barrier.broken
