"""The checker catches each kind of wrong step: it is only useful if it can fail."""

from __future__ import annotations

import dataclasses

import pytest

import trio_mesa
from fault_injection import (
    FakeLLMModel,
    FaultPlan,
    FaultRule,
    ObservedStep,
    Scenario,
    check_step,
    expected_step,
)
from trio_mesa import Status, StepFailed, StepReport

SCENARIO = Scenario(
    "c", agents=4, flavors={"trio": 1}, rules=(FaultRule("rate_limit", agents=(2,)),), timeout=5
)


@pytest.fixture
def good() -> tuple:
    """A real step of SCENARIO (virtual time), its expectation and its observation."""
    plan = FaultPlan(SCENARIO, 0)
    model = FakeLLMModel(plan)
    model.steps = 1
    report = trio_mesa.run_step(
        model.agents, clock=__import__("trio").testing.MockClock(autojump_threshold=0), timeout=5
    )
    observed = ObservedStep(
        step=1,
        report=report,
        raised=None,
        work_before=dict.fromkeys(range(1, 5), 0),
        work_after=model.work_snapshot(),
        tally_before=0,
        tally_after=model.tally,
        calls_after={a.unique_id: a.llm.calls for a in model.agents},
    )
    return expected_step(plan, 1), observed, report


def test_a_correct_step_has_no_mismatch(good: tuple) -> None:
    expected, observed, _ = good
    assert check_step(expected, observed) == []


def _with_outcome(report: StepReport, uid: int, **changes) -> StepReport:
    outcomes = tuple(o._replace(**changes) if o.unique_id == uid else o for o in report.outcomes)
    return dataclasses.replace(report, outcomes=outcomes)


def test_wrong_status_is_reported(good: tuple) -> None:
    expected, observed, report = good
    observed.report = _with_outcome(report, 1, status=Status.CANCELLED)
    assert any("agent 1" in m and "expected ok" in m for m in check_step(expected, observed))


def test_wrong_exception_type_is_reported(good: tuple) -> None:
    expected, observed, report = good
    observed.report = _with_outcome(report, 2, exception=ValueError("x"))
    assert any(
        "raised ValueError, expected RateLimitError" in m for m in check_step(expected, observed)
    )


def test_missing_and_duplicate_outcomes_are_reported(good: tuple) -> None:
    expected, observed, report = good
    observed.report = dataclasses.replace(report, outcomes=report.outcomes[:-1])
    assert any("missing" in m for m in check_step(expected, observed))
    observed.report = dataclasses.replace(report, outcomes=(*report.outcomes, report.outcomes[0]))
    assert any("more than one outcome" in m for m in check_step(expected, observed))


def test_lost_and_doubled_work_are_reported(good: tuple) -> None:
    expected, observed, _ = good
    lost = {**observed.work_after, 1: 0}
    mismatches = check_step(expected, dataclasses.replace(observed, work_after=lost))
    assert any("lost the work of agent 1" in m for m in mismatches)
    doubled = {**observed.work_after, 3: 2}
    assert any(
        "2 times" in m
        for m in check_step(expected, dataclasses.replace(observed, work_after=doubled))
    )
    extra = {**observed.work_after, 2: 1}
    assert any(
        "recorded work for agent 2" in m
        for m in check_step(expected, dataclasses.replace(observed, work_after=extra))
    )


def test_doubled_calls_are_reported(good: tuple) -> None:
    expected, observed, _ = good
    observed.calls_after = {**observed.calls_after, 4: 2}
    assert any("agent 4 made 2 calls" in m for m in check_step(expected, observed))


def test_anything_left_running_is_reported(good: tuple) -> None:
    expected, observed, _ = good
    assert any(
        "still running" in m
        for m in check_step(expected, dataclasses.replace(observed, running_after={3}))
    )
    assert any(
        "asyncio task" in m
        for m in check_step(expected, dataclasses.replace(observed, pending_aio_tasks=[object()]))
    )
    assert any(
        "tasks still alive" in m
        for m in check_step(expected, dataclasses.replace(observed, leftover_tasks=["x"]))
    )


def test_abandoned_threads_may_still_run(good: tuple) -> None:
    expected, observed, report = good
    observed.report = _with_outcome(report, 3, abandoned=True)
    observed.running_after = {3}
    assert not any("still running" in m for m in check_step(expected, observed))


def test_unexpected_raise_and_missing_strict_raise_are_reported(good: tuple) -> None:
    expected, observed, report = good
    observed.raised = RuntimeError("boom")
    assert any("raised RuntimeError" in m for m in check_step(expected, observed))
    strict = dataclasses.replace(expected, raises="StepFailed")
    observed.raised = None
    assert any("expected StepFailed" in m for m in check_step(strict, observed))
    # A StepFailed whose leaves are not the failed outcomes is caught too.
    observed.raised = StepFailed("x", [ValueError("not the agent's")], report)
    assert any("leaves" in m for m in check_step(strict, observed))


def test_missing_interrupt_is_reported(good: tuple) -> None:
    expected, observed, _ = good
    interrupted = dataclasses.replace(expected, raises="KeyboardInterrupt", statuses={})
    assert any("KeyboardInterrupt" in m for m in check_step(interrupted, observed))
