"""Results a newcomer can print: short reprs, CLI-like str(), and hints for common slips."""

from __future__ import annotations

import asyncio

import mesa
import pytest
import trio

import trio_mesa
from fault_injection import SCENARIOS, FaultPlan, run_scenario
from trio_mesa import compat


@pytest.fixture(scope="module")
def result():
    return run_scenario(SCENARIOS["flaky"].replace(agents=100, steps=10), seed=1)


def test_every_result_type_has_a_repr_under_300_characters(result) -> None:
    values = [
        result,
        result.expected,
        result.steps[-1],
        result.expected.steps[-1],
        result.expected.plan,
        FaultPlan(SCENARIOS["flaky"].replace(agents=100), seed=1),
    ]
    for value in values:
        text = repr(value)
        assert len(text) < 300, (type(value).__name__, len(text))
        assert text.startswith(f"<{type(value).__name__} "), text


def test_print_result_reads_like_the_cli_summary(result) -> None:
    text = str(result)
    assert len(text) < 5_000  # it was about 100 KB: every planned call, every duration
    assert text.startswith("scenario 'flaky': 100 agents x 10 steps, seed 1")
    assert "oracle: every outcome of all 10 steps matched." in text
    assert str(result.steps[0]).startswith("step 1: 100 agents (")


class Agent(mesa.Agent):
    def step(self) -> None:
        pass


ENTRY_POINTS = {
    "run_step": lambda a: trio_mesa.run_step(a),
    "step_agents": lambda a: trio.run(trio_mesa.step_agents, a),
    "call_agents": lambda a: trio.run(trio_mesa.call_agents, a, "step"),
    "aio_step_agents": lambda a: asyncio.run(trio_mesa.aio_step_agents(a)),
    "aio_call_agents": lambda a: asyncio.run(trio_mesa.aio_call_agents(a, "step")),
    "compat.step_agents_multithreaded": compat.step_agents_multithreaded,
    "compat.step_agents_parallel_sync": compat.step_agents_parallel_sync,
    "compat.step_agents_parallel": lambda a: asyncio.run(compat.step_agents_parallel(a)),
}


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_every_entry_point_hints_at_model_agents_and_at_a_list(name) -> None:
    model = mesa.Model(rng=1)
    agent = Agent(model)
    call = ENTRY_POINTS[name]
    with pytest.raises(TypeError, match=r"\(pass model\.agents\)"):
        call(model)
    with pytest.raises(TypeError, match=r"\(pass \[agent\]\)"):
        call(agent)
