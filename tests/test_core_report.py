"""StepReport and AgentOutcome: plain values users can print, count, tabulate and raise."""

from __future__ import annotations

import pytest
from core_agents import AsyncioAgent, Model, SyncAgent, TrioAgent

import trio_mesa
from trio_mesa import AgentOutcome, Status, StepFailed


async def _mixed_report(mock_clock):
    model = Model()
    model.steps = 3
    ok = [TrioAgent(model), SyncAgent(model)]
    bad = AsyncioAgent(model, ("raise", ValueError("malformed JSON")))
    hung = TrioAgent(model, ("hang",))
    report = await trio_mesa.step_agents([*ok, bad, hung], timeout=2)
    return report, ok, bad, hung


async def test_report_views_and_counts(mock_clock):
    report, ok, bad, hung = await _mixed_report(mock_clock)
    assert len(report) == 4 and list(report) == list(report.outcomes)
    assert [o.agent for o in report.ok] == ok
    assert [o.agent for o in report.failed] == [bad, hung]
    assert report.counts == {
        Status.OK: 2,
        Status.FAILED: 1,
        Status.TIMED_OUT: 1,
        Status.CANCELLED: 0,
        Status.SKIPPED: 0,
    }
    assert not report.all_ok
    assert report.step == 3
    assert report.duration == 2


async def test_str_lists_every_failed_agent_with_its_exception(mock_clock):
    report, _ok, bad, _hung = await _mixed_report(mock_clock)
    text = str(report)
    first, *rows = text.splitlines()
    assert first == "step 3: 4 agents (2 ok, 1 failed, 1 timed out) in 2.000 s"
    assert len(rows) == 3  # a header and one row per agent that is not OK
    assert f"{bad.unique_id}" in rows[1] and "AsyncioAgent" in rows[1]
    assert "ValueError: malformed JSON" in rows[1]
    assert "timed_out" in rows[2] and "AgentTimeout" in rows[2]


async def test_to_records_is_one_plain_dict_per_agent(mock_clock):
    report, ok, bad, _hung = await _mixed_report(mock_clock)
    records = report.to_records()
    assert [r["unique_id"] for r in records] == [o.unique_id for o in report]
    bad_record = records[2]
    assert bad_record == {
        "step": 3,
        "unique_id": bad.unique_id,
        "agent_class": "AsyncioAgent",
        "status": "failed",
        "exception_type": "ValueError",
        "exception_message": "malformed JSON",
        "result": None,
        "duration": 0.0,
        "attempts": 1,
        "abandoned": False,
        "calls": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost": 0.0,
    }
    assert records[0]["result"] == f"done-{ok[0].unique_id}"
    pandas = pytest.importorskip("pandas")
    frame = pandas.DataFrame(records)
    assert frame["status"].value_counts().to_dict() == {"ok": 2, "failed": 1, "timed_out": 1}


async def test_raise_for_failures_raises_a_group_of_exactly_the_failures(mock_clock):
    report, _ok, bad, _hung = await _mixed_report(mock_clock)
    with pytest.raises(StepFailed) as info:
        report.raise_for_failures()
    assert info.value.report is report
    assert info.value.exceptions == (bad.behaviour[1], report.failed[1].exception)
    assert "step 3: 4 agents" in str(info.value)


def test_an_all_ok_report_does_not_raise():
    model = Model()
    report = trio_mesa.run_step([TrioAgent(model)])
    report.raise_for_failures()
    assert report.all_ok


def test_outcome_is_immutable_printable_and_comparable():
    model = Model()
    agent = TrioAgent(model)
    outcome = AgentOutcome(agent, agent.unique_id, Status.OK, None, "r", 1.5, 1)
    with pytest.raises(AttributeError):
        outcome.status = Status.FAILED  # type: ignore[misc]
    assert outcome == AgentOutcome(agent, agent.unique_id, Status.OK, None, "r", 1.5, 1)
    assert repr(outcome) == (
        f"AgentOutcome(unique_id={agent.unique_id}, status=Status.OK, result='r', "
        "duration=1.5, attempts=1)"
    )
    assert outcome.unwrap() == "r" and outcome.is_ok


def test_unwrap_raises_the_captured_exception():
    model = Model()
    agent = TrioAgent(model)
    error = ValueError("x")
    with pytest.raises(ValueError, match="x"):
        AgentOutcome(agent, agent.unique_id, Status.FAILED, error).unwrap()
    with pytest.raises(LookupError, match="skipped"):
        AgentOutcome(agent, agent.unique_id, Status.SKIPPED, attempts=0).unwrap()


async def test_rich_renders_a_table(mock_clock):
    rich_console = pytest.importorskip("rich.console")
    report, *_ = await _mixed_report(mock_clock)
    console = rich_console.Console(width=120, record=True)
    console.print(report)
    text = console.export_text()
    assert "malformed JSON" in text and "timed_out" in text and "step 3" in text


async def test_repr_is_short_whatever_the_size(mock_clock):
    report, *_ = await _mixed_report(mock_clock)
    assert repr(report) == ("<StepReport step=3 agents=4 OK=2 FAILED=1 TIMED_OUT=1 duration=2>")
    assert repr(trio_mesa.StepReport(())) == "<StepReport step=None agents=0 empty duration=0>"
