"""Isolation, strict mode, fail_fast and what is never isolated (KeyboardInterrupt, cancel)."""

from __future__ import annotations

import logging

import pytest
import trio
from core_agents import FLAVORS, AsyncioAgent, Model, SyncAgent, TrioAgent

import trio_mesa
from trio_mesa import AgentCancelled, AgentTimeout, Status, StepFailed

ALL_MODES = [("trio", "inline"), ("asyncio", "inline"), ("sync", "inline"), ("sync", "thread")]


@pytest.mark.parametrize(("flavor", "sync_mode"), ALL_MODES)
async def test_one_failure_leaves_every_sibling_stepped_once(flavor, sync_mode):
    model = Model()
    cls = FLAVORS[flavor]
    boom = RuntimeError("LLM timeout")
    bad = cls(model, ("raise", boom))
    good = [cls(model) for _ in range(9)]

    report = await trio_mesa.step_agents(model.agents, sync_mode=sync_mode)

    by_id = report.by_id()
    assert by_id[bad.unique_id].status is Status.FAILED
    assert by_id[bad.unique_id].exception is boom
    for agent in good:
        outcome = by_id[agent.unique_id]
        assert outcome.status is Status.OK
        assert outcome.result == f"done-{agent.unique_id}"
        assert agent.calls == agent.finished == 1
    assert report.counts[Status.OK] == 9
    assert [o.status for o in report.failed] == [Status.FAILED]


async def test_failure_does_not_cancel_slow_siblings_of_any_flavor(mock_clock):
    model = Model()
    slow = [TrioAgent(model, ("sleep", 30)), AsyncioAgent(model, ("sleep", 30))]
    bad = [
        TrioAgent(model, ("sleep_raise", 1, ValueError("bad json"))),
        AsyncioAgent(model, ("sleep_raise", 2, ConnectionError("reset"))),
        SyncAgent(model, ("raise", KeyError("x"))),
    ]

    report = await trio_mesa.step_agents(model.agents)

    assert all(not a.cancelled and a.finished == 1 for a in slow)
    assert {report.by_id()[a.unique_id].status for a in slow} == {Status.OK}
    assert {report.by_id()[a.unique_id].status for a in bad} == {Status.FAILED}
    assert report.duration == 30  # virtual time: the slow agents ran to the end


async def test_strict_waits_for_everyone_then_raises_one_leaf_per_failure(mock_clock):
    model = Model()
    errors = [ValueError("a"), RuntimeError("b")]
    failing = [
        TrioAgent(model, ("sleep_raise", 1, errors[0])),
        AsyncioAgent(model, ("raise", errors[1])),
    ]
    hanging = TrioAgent(model, ("hang",))
    slow = TrioAgent(model, ("sleep", 5))
    model.steps = 7  # normally advanced by model.step()

    with pytest.raises(StepFailed) as info:
        await trio_mesa.step_agents(model.agents, strict=True, timeout=10)

    group = info.value
    assert slow.finished == 1  # completed although others had already failed
    report = group.report
    assert len(report) == 4
    assert len(group.exceptions) == 3  # two failures and one timeout: nothing flattened
    assert {id(e) for e in group.exceptions} >= {id(e) for e in errors}
    timeouts = [e for e in group.exceptions if isinstance(e, AgentTimeout)]
    assert len(timeouts) == 1 and timeouts[0].reason == "timeout"
    # Leaves are in start order and each names its agent in a PEP 678 note.
    ids = [o.unique_id for o in report.failed]
    for uid, leaf in zip(ids, group.exceptions, strict=True):
        agent = next(a for a in [*failing, hanging] if a.unique_id == uid)
        assert (
            f"unique_id={uid!r} ({type(agent).__qualname__}) in model step 7" in leaf.__notes__[-1]
        )


async def test_step_failed_keeps_its_report_when_split():
    model = Model()
    TrioAgent(model, ("raise", ValueError("v")))
    TrioAgent(model, ("raise", KeyError("k")))
    TrioAgent(model)
    with pytest.raises(StepFailed) as info:
        await trio_mesa.step_agents(model.agents, strict=True)
    values, rest = info.value.split(ValueError)
    assert isinstance(values, StepFailed) and isinstance(rest, StepFailed)
    assert values.report is rest.report is info.value.report
    assert len(values.exceptions) == len(rest.exceptions) == 1


@pytest.mark.parametrize("strict", [False, True])
async def test_fail_fast_cancels_the_rest(mock_clock, strict):
    model = Model()
    first = TrioAgent(model, ("sleep_raise", 1, RuntimeError("429")))
    running = [TrioAgent(model, ("sleep", 10)), AsyncioAgent(model, ("hang",))]

    if strict:
        with pytest.raises(StepFailed) as info:
            await trio_mesa.step_agents(model.agents, fail_fast=True, strict=True)
        report = info.value.report
        assert len(info.value.exceptions) == 3
    else:
        report = await trio_mesa.step_agents(model.agents, fail_fast=True)

    assert report.by_id()[first.unique_id].status is Status.FAILED
    for agent in running:
        outcome = report.by_id()[agent.unique_id]
        assert outcome.status is Status.CANCELLED
        assert isinstance(outcome.exception, AgentCancelled)
        assert f"agent {first.unique_id!r} failed first" in str(outcome.exception)
        assert agent.cancelled
    assert report.duration == 1


async def test_fail_fast_keeps_waiting_agents_from_starting(mock_clock):
    model = Model()
    first = TrioAgent(model, ("sleep_raise", 1, RuntimeError("boom")))
    later = [TrioAgent(model, ("sleep", 1)) for _ in range(3)]
    report = await trio_mesa.step_agents([first, *later], fail_fast=True, max_concurrency=1)
    assert [o.status for o in report] == [Status.FAILED] + [Status.CANCELLED] * 3
    assert [o.attempts for o in report] == [1, 0, 0, 0]
    assert all(a.calls == 0 for a in later)


@pytest.mark.parametrize("flavor", ["trio", "asyncio", "sync"])
@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, SystemExit])
def test_keyboard_interrupt_propagates_itself_and_cancels_siblings(flavor, exc_type):
    model = Model()
    # Trio and asyncio raisers wait first, so their hanging siblings are surely running.
    behaviour = ("raise", exc_type()) if flavor == "sync" else ("sleep_raise", 1, exc_type())
    raiser = FLAVORS[flavor](model, behaviour)
    hanging = [TrioAgent(model, ("hang",)), AsyncioAgent(model, ("hang",))]
    with pytest.raises(exc_type) as info:
        trio_mesa.run_step([*hanging, raiser], clock=trio.testing.MockClock(autojump_threshold=0))
    assert type(info.value) is exc_type  # the exception itself, not a group
    assert raiser.calls == 1
    # Nothing left running: every sibling was cancelled, or never got to start.
    assert all(a.finished == 0 for a in hanging)
    if flavor == "sync":
        assert all(a.cancelled or a.calls == 0 for a in hanging)
    else:
        assert all(a.cancelled for a in hanging)


def test_keyboard_interrupt_from_inside_a_running_asyncio_task():
    # The agent awaits first, so the interrupt is raised from within asyncio's Task
    # machinery on the trio-asyncio loop (where a naive bridge hangs).
    model = Model()
    raiser = AsyncioAgent(model, ("sleep_raise", 1, KeyboardInterrupt()))
    hanging = AsyncioAgent(model, ("hang",))
    with pytest.raises(KeyboardInterrupt):
        trio_mesa.run_step([raiser, hanging], clock=trio.testing.MockClock(autojump_threshold=0))
    assert hanging.cancelled


async def test_cancelling_the_caller_cancels_every_agent(mock_clock):
    model = Model()
    agents = [
        TrioAgent(model, ("hang",)),
        AsyncioAgent(model, ("hang",)),
        TrioAgent(model, ("sleep", 5)),
    ]
    with trio.move_on_after(2) as scope:
        await trio_mesa.step_agents(model.agents)
    assert scope.cancelled_caught
    assert all(a.cancelled for a in agents)
    assert trio.current_time() == 2


async def test_every_failure_is_logged_once_with_agent_and_exception(caplog):
    model = Model()
    bad = AsyncioAgent(model, ("raise", RuntimeError("LLM timeout")))
    TrioAgent(model)
    SyncAgent(model)
    with caplog.at_level(logging.DEBUG, logger="trio_mesa"):
        await trio_mesa.step_agents(model.agents)
    records = [r for r in caplog.records if r.name == "trio_mesa" and r.levelno >= logging.WARNING]
    assert len(records) == 1
    (record,) = records
    assert record.levelno == logging.ERROR
    message = record.getMessage()
    assert str(bad.unique_id) in message
    assert "AsyncioAgent" in message and "RuntimeError" in message and "LLM timeout" in message
    assert record.exc_info is not None and record.exc_info[1] is bad.behaviour[1]
    assert record.agent_unique_id == bad.unique_id and record.agent_class == "AsyncioAgent"


async def test_agent_catching_cancellation_late_is_reported_by_what_it_did(mock_clock):
    # An agent that swallows the cancellation and raises instead is FAILED, not lost.
    @trio_mesa.trio_native
    class Stubborn(TrioAgent):
        async def astep(self):
            try:
                await trio.sleep_forever()
            except trio.Cancelled:
                raise ValueError("cleanup failed") from None

    model = Model()
    agent = Stubborn(model)
    report = await trio_mesa.step_agents([agent], timeout=1)
    assert report.outcomes[0].status is Status.FAILED
    assert str(report.outcomes[0].exception) == "cleanup failed"
