"""Every named scenario matches its oracle, the same way on every run.

Trio-host runs are in virtual time (``MockClock``), so each takes milliseconds whatever
its latencies; only the real-time runs at the bottom sleep (a few steps of 30 agents).
"""

from __future__ import annotations

import gc
from typing import Any

import pytest

import trio_mesa
from fault_injection import SCENARIOS, expected_run, mesa_llm_baseline, run_scenario
from trio_mesa import Status

NAMES = sorted(SCENARIOS)


@pytest.mark.parametrize("name", NAMES)
def test_named_scenario_matches_the_oracle_on_trio(name: str) -> None:
    result = run_scenario(SCENARIOS[name])
    assert result.mismatches == []
    assert len(result.steps) == len(result.expected.steps)


@pytest.mark.parametrize("name", ["flaky", "mixed-flavors", "slow-tail"])
def test_same_seed_same_outcome_table_on_every_run(name: str) -> None:
    first = run_scenario(SCENARIOS[name], seed=11, steps=3)
    second = run_scenario(SCENARIOS[name], seed=11, steps=3)
    assert first.outcome_table() == second.outcome_table()
    assert first.to_json() == second.to_json()
    other = run_scenario(SCENARIOS[name], seed=12, steps=3)
    assert other.outcome_table() != first.outcome_table()


def test_every_scenario_exercises_what_its_name_says() -> None:
    def totals(name: str) -> dict[Status, int]:
        out = dict.fromkeys(Status, 0)
        for step in expected_run(SCENARIOS[name]).steps:
            for status, n in step.counts.items():
                out[status] += n
        return out

    assert totals("hung-agent")[Status.TIMED_OUT] > 0
    assert totals("slow-tail")[Status.TIMED_OUT] > 0
    assert totals("dead-agent")[Status.FAILED] == 2 * SCENARIOS["dead-agent"].steps
    storm = expected_run(SCENARIOS["rate-limit-storm"]).steps
    assert sum(s.counts[Status.FAILED] for s in storm[2:5]) > 40
    flaky = totals("flaky")
    share = flaky[Status.FAILED] / sum(flaky.values())
    assert 0.02 < share < 0.1
    assert all(s.raises == "StepFailed" for s in expected_run(SCENARIOS["strict"]).steps)
    assert expected_run(SCENARIOS["interrupt"]).interrupted_at == 3


def test_strict_leaves_are_exactly_the_planned_failures() -> None:
    result = run_scenario(SCENARIOS["strict"])
    assert result.matched
    assert [s.raised for s in result.steps] == ["StepFailed"] * SCENARIOS["strict"].steps
    for step, exp in zip(result.steps, result.expected.steps, strict=True):
        failed = {u for u, s in step.statuses.items() if s is not Status.OK}
        assert failed == set(exp.failures)


def test_interrupt_propagates_and_ends_the_run() -> None:
    result = run_scenario(SCENARIOS["interrupt"])
    assert result.matched
    assert [s.raised for s in result.steps] == [None, None, "KeyboardInterrupt"]


def test_overrides_and_the_mesa_llm_baseline() -> None:
    result = run_scenario(SCENARIOS["flaky"], agents=7, steps=2, strict=True, seed=3)
    assert result.matched
    assert len(result.steps) == 2 and all(len(s.statuses) == 7 for s in result.steps)
    baseline = mesa_llm_baseline(expected_run(SCENARIOS["dead-agent"]))
    assert baseline["stopped_at"] == 1 and baseline["completed_steps"] == 0
    hung = mesa_llm_baseline(expected_run(SCENARIOS["hung-agent"]))
    assert hung["model_seconds"] == float("inf") and "hangs forever" in hung["why"]


def test_real_time_on_the_trio_host_matches_too() -> None:
    result = run_scenario(SCENARIOS["mixed-flavors"], steps=3, real_time=True)
    assert result.mismatches == []
    assert (
        result.outcome_table() == run_scenario(SCENARIOS["mixed-flavors"], steps=3).outcome_table()
    )


@pytest.mark.parametrize(
    ("host", "real_time"), [("trio", False), ("trio", True), ("asyncio", True)]
)
def test_automatic_gc_is_off_only_while_a_real_time_step_runs(
    monkeypatch: pytest.MonkeyPatch, host: str, real_time: bool
) -> None:
    # A full collection paused a CI run's event loop for longer than the 0.2 s its
    # scaled-down steps allowed, and timed out a whole step: real-time steps hold it off.
    from trio_mesa import compat

    seen: list[bool] = []

    def spy(real: Any) -> Any:
        async def step(*args: Any, **kwargs: Any) -> Any:
            seen.append(gc.isenabled())
            return await real(*args, **kwargs)

        return step

    monkeypatch.setattr(trio_mesa, "step_agents", spy(trio_mesa.step_agents))
    monkeypatch.setattr(compat, "step_agents_parallel", spy(compat.step_agents_parallel))
    assert gc.isenabled()
    result = run_scenario(SCENARIOS["mixed-flavors"], host=host, steps=2, real_time=real_time)
    assert result.mismatches == []
    assert seen == [not real_time] * 2
    assert gc.isenabled()
