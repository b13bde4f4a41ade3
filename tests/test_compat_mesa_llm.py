"""mesa-llm 0.3.2's own parallel-stepping tests, and the crash bug report, on trio_mesa.compat.

The first four tests reproduce mesa-llm's ``tests/test_parallel_stepping.py`` with only
the import swapped; its ``@pytest.mark.asyncio`` test becomes an ``asyncio.run`` (our
suite's async tests belong to pytest-trio). The real file was also run by hand against
trio_mesa.compat with pytest-asyncio (see CONTRIBUTING.md).
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from mesa.agent import Agent, AgentSet
from mesa.model import Model

from trio_mesa import Status
from trio_mesa.compat import (
    disable_automatic_parallel_stepping,
    enable_automatic_parallel_stepping,
    step_agents_multithreaded,
    step_agents_parallel,
    step_agents_parallel_sync,
)


class DummyModel(Model):
    def __init__(self):
        super().__init__(rng=42)
        self.parallel_stepping = False


class SyncAgent(Agent):
    def __init__(self, model):
        super().__init__(model)
        self.counter = 0

    def step(self):
        self.counter += 1


class AsyncAgent(Agent):
    def __init__(self, model):
        super().__init__(model)
        self.counter = 0

    async def astep(self):
        self.counter += 1


def test_step_agents_parallel():
    async def body():
        m = DummyModel()
        a1 = SyncAgent(m)
        a2 = AsyncAgent(m)
        await step_agents_parallel([a1, a2])
        assert a1.counter == 1
        assert a2.counter == 1

    asyncio.run(body())


def test_step_agents_multithreaded():
    m = DummyModel()
    a1 = SyncAgent(m)
    a2 = AsyncAgent(m)
    step_agents_multithreaded([a1, a2])
    assert a1.counter == 1
    assert a2.counter == 1


def test_automatic_parallel_shuffle_do():
    disable_automatic_parallel_stepping()  # Ensure clean state
    m = DummyModel()
    m.parallel_stepping = True
    a1 = SyncAgent(m)
    agents = AgentSet([a1], random=m.random)
    enable_automatic_parallel_stepping("asyncio")
    agents.shuffle_do("step")
    assert a1.counter == 1
    disable_automatic_parallel_stepping()
    agents.shuffle_do("step")
    assert a1.counter == 2
    disable_automatic_parallel_stepping()


def test_step_agents_parallel_sync_in_running_loop():
    m = DummyModel()
    a1 = SyncAgent(m)
    a2 = AsyncAgent(m)

    async def wrapper():
        step_agents_parallel_sync([a1, a2])

    asyncio.run(wrapper())
    assert a1.counter == 1
    assert a2.counter == 1


# -- the bug report: one failing agent crashed the whole step ---------------------------


class FailingAgent(Agent):
    async def astep(self):
        raise RuntimeError("LLM timeout")


class WorkingAgent(Agent):
    def __init__(self, model):
        super().__init__(model)
        self.stepped = 0

    async def astep(self):
        await asyncio.sleep(0)
        self.stepped += 1
        return "done"


def _check(report, failing, working, caplog):
    assert working.stepped == 1
    outcome = report.by_id()[failing.unique_id]
    assert outcome.status is Status.FAILED
    assert isinstance(outcome.exception, RuntimeError)
    assert str(outcome.exception) == "LLM timeout"
    assert report.by_id()[working.unique_id].status is Status.OK
    assert [o.unique_id for o in report.failed] == [failing.unique_id]
    assert "LLM timeout" in str(report) and str(failing.unique_id) in str(report)
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(logged) == 1
    assert logged[0].agent_unique_id == failing.unique_id
    assert f"agent {failing.unique_id!r}" in logged[0].getMessage()
    assert "RuntimeError: LLM timeout" in logged[0].getMessage()


@pytest.mark.parametrize("path", ["step_agents_parallel", "step_agents_multithreaded", "do_async"])
def test_bug_report_failing_agent_next_to_working_agent(path, caplog):
    m = DummyModel()
    failing = FailingAgent(m)
    working = WorkingAgent(m)
    with caplog.at_level(logging.ERROR, logger="trio_mesa"):
        if path == "step_agents_parallel":
            report = asyncio.run(step_agents_parallel([failing, working]))
        elif path == "step_agents_multithreaded":
            report = step_agents_multithreaded([failing, working])
        else:
            results = asyncio.run(_do_async(AgentSet([failing, working], random=m.random)))
            assert isinstance(results[0], RuntimeError) and results[1] == "done"
            report = results.report
    _check(report, failing, working, caplog)


async def _do_async(agent_set):
    return await agent_set.do_async("astep")
