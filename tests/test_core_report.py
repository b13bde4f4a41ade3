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
    report, _ok, bad, hung = await _mixed_report(mock_clock)
    text = str(report)
    first, *rows = text.splitlines()
    assert first == "step 3: 4 agents (2 ok, 1 failed, 1 timed out) in 2.000 s"
    # two lines per kind of failure: what happened, then to whom
    assert rows == [
        "  1 failed: ValueError: malformed JSON",
        f"    agent {bad.unique_id} (AsyncioAgent)",
        "  1 timed out: AgentTimeout: its timeout of 2.0 s elapsed",
        f"    agent {hung.unique_id} (TrioAgent)",
    ]


class RateLimitError(Exception):
    pass


class _Agent:
    def __init__(self, uid):
        self.unique_id = uid


def _outcome(uid, exc, status=Status.FAILED):
    return AgentOutcome(_Agent(uid), uid, status, exc)


def test_str_groups_identical_failures_and_fits_80_columns():
    # 100 agents, 60 rate limited with one long message naming each agent and call (as
    # the chaos server and providers do), 30 with a multi-line error, 10 ok.
    long = "Rate limit reached for gpt-4o-mini on requests per min (RPM): Limit 500. " * 4
    outcomes = [
        _outcome(u, RateLimitError(f"{long}(agent {u}, call {u % 3 + 1})")) for u in range(60)
    ]
    outcomes += [_outcome(u, ValueError("bad JSON:\n{'a': 1")) for u in range(60, 90)]
    outcomes += [_outcome(u, None, Status.OK) for u in range(90, 100)]
    report = trio_mesa.StepReport(tuple(outcomes), step=4, duration=30.0)
    lines = str(report).splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert lines == [
        "step 4: 100 agents (10 ok, 90 failed) in 30.000 s",
        "  60 failed, e.g. RateLimitError: Rate limit reached for gpt-4o-mini on reque...",
        "    agents 0-59 (_Agent)",
        "  30 failed: ValueError: bad JSON: {'a': 1",
        "    agents 60-89 (_Agent)",
    ]
    # every detail is still there, agent by agent
    records = report.to_records()
    assert records[7]["exception_message"] == f"{long}(agent 7, call 2)"
    assert report.outcomes[61].exception.args == ("bad JSON:\n{'a': 1",)


def test_str_abbreviates_ids_that_do_not_fit():
    ids = list(range(0, 400, 3))  # no runs: every id on its own
    outcomes = tuple(_outcome(u, RateLimitError("slow down")) for u in ids)
    text = str(trio_mesa.StepReport(outcomes))
    _summary, head, who = text.splitlines()
    assert head == "  134 failed: RateLimitError: slow down"
    assert who.startswith("    agents 0, 3, 6, 9, ") and who.endswith(" more (_Agent)")
    shown = who.removeprefix("    agents ").split(" and ")[0].split(", ")
    left = int(who.split(" and ")[1].split()[0])
    assert len(shown) + left == 134 and len(who) <= 80


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
        "prompt_tokens": None,  # nothing recorded: unknown, not free
        "completion_tokens": None,
        "cost": None,
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
