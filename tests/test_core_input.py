"""Bad input fails before any agent runs, with an error naming the culprit."""

from __future__ import annotations

import asyncio
import math

import mesa
import pytest
import trio
from core_agents import Model, SyncAgent, TrioAgent

import trio_mesa


class NoStep(mesa.Agent):
    step = None  # type: ignore[assignment]


class SyncAstep(mesa.Agent):
    def astep(self):  # not a coroutine function
        return None


def _model_with_ok_agents() -> tuple[Model, list]:
    model = Model()
    return model, [TrioAgent(model), SyncAgent(model)]


@pytest.mark.parametrize(
    ("make_culprit", "error", "match"),
    [
        (lambda m: "not an agent", TypeError, "not a Mesa agent.*'not an agent'"),
        (lambda m: object(), TypeError, "not a Mesa agent"),
        (lambda m: NoStep(m), TypeError, r"unique_id=\d+.*NoStep.*neither an 'astep'"),
        (
            lambda m: SyncAstep(m),
            TypeError,
            r"SyncAstep.astep of agent unique_id=\d+ must be an 'async def'",
        ),
    ],
)
async def test_bad_agents_are_named_and_nothing_runs(make_culprit, error, match):
    model, good = _model_with_ok_agents()
    culprit = make_culprit(model)
    with pytest.raises(error, match=match):
        await trio_mesa.step_agents([*good, culprit])
    assert all(a.calls == 0 for a in good)


async def test_the_same_agent_twice_is_refused():
    _model, good = _model_with_ok_agents()
    with pytest.raises(ValueError, match=rf"unique_id={good[0].unique_id}.*appears twice"):
        await trio_mesa.step_agents([*good, good[0]])
    assert all(a.calls == 0 for a in good)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"timeout": -1}, ValueError, "timeout must be a non-negative"),
        ({"timeout": math.nan}, ValueError, "timeout must be a non-negative"),
        ({"deadline": -0.5}, ValueError, "deadline must be a non-negative"),
        ({"deadline": math.nan}, ValueError, "deadline must be a non-negative"),
        ({"timeout": "5"}, TypeError, "timeout must be a number"),
        ({"max_concurrency": 0}, ValueError, "max_concurrency must be a positive integer, not 0"),
        (
            {"max_concurrency": 2.5},
            TypeError,
            "max_concurrency must be a positive integer, not 2.5",
        ),
        (
            {"max_concurrency": 2, "limiter": trio.CapacityLimiter(2)},
            ValueError,
            "either max_concurrency or limiter",
        ),
        ({"limiter": 3}, TypeError, "limiter must be a trio.CapacityLimiter"),
        ({"sync_mode": "process"}, ValueError, "sync_mode must be 'inline' or 'thread'"),
        ({"max_threads": 0}, ValueError, "max_threads must be a positive int"),
    ],
)
async def test_bad_options_are_refused_before_any_agent_runs(options, error, match):
    model, good = _model_with_ok_agents()
    with pytest.raises(error, match=match):
        await trio_mesa.step_agents(model.agents, **options)
    assert all(a.calls == 0 for a in good)


async def test_a_single_agent_or_a_non_iterable_is_refused():
    _model, good = _model_with_ok_agents()
    with pytest.raises(TypeError, match="not a single agent"):
        await trio_mesa.step_agents(good[0])
    with pytest.raises(TypeError, match="iterable of Mesa agents, not 42"):
        await trio_mesa.step_agents(42)
    with pytest.raises(TypeError, match="iterable of Mesa agents"):
        await trio_mesa.step_agents("agents")


async def test_call_agents_names_a_missing_method():
    _model, good = _model_with_ok_agents()
    with pytest.raises(TypeError, match=r"unique_id=\d+.*no callable method 'speak'"):
        await trio_mesa.call_agents(good, "speak")
    with pytest.raises(TypeError, match="method name or a callable"):
        await trio_mesa.call_agents(good, 3)


def test_trio_native_refuses_plain_functions():
    with pytest.raises(TypeError, match="class or an 'async def'"):
        trio_mesa.trio_native(lambda: None)


async def test_run_step_refuses_a_running_trio_loop():
    with pytest.raises(RuntimeError, match=r"await trio_mesa\.step_agents\(\.\.\.\)"):
        trio_mesa.run_step([])


def test_run_step_refuses_a_running_asyncio_loop():
    async def main():
        with pytest.raises(RuntimeError, match=r"asyncio event loop.*aio_step_agents"):
            trio_mesa.run_step([])

    asyncio.run(main())


def test_trio_entry_points_awaited_from_asyncio_name_their_asyncio_twins():
    # Awaited on asyncio they used to fail deep inside Trio ("must be called from async
    # context", or "'RunContext' object has no attribute 'runner'"): name the fix.
    model, agents = _model_with_ok_agents()

    async def main():
        with pytest.raises(RuntimeError, match=r"from asyncio.*await trio_mesa\.aio_step_agents"):
            await trio_mesa.step_agents(agents)
        with pytest.raises(RuntimeError, match=r"from asyncio.*await trio_mesa\.aio_call_agents"):
            await trio_mesa.call_agents(agents, "step")

    asyncio.run(main())
    assert model.log == []  # refused before any agent ran


def test_empty_step_is_an_empty_report():
    report = trio_mesa.run_step([])
    assert report.outcomes == () and report.all_ok and report.step is None
