"""A step with no timeout names, once, an agent that runs far longer than the others.

"Far longer" is ``max(SLOW_AFTER, SLOW_FACTOR x median)`` of the agents of the step that
finished (60 s and 10x): every test here checks the virtual instant of the warning.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator

import pytest
import trio
from core_agents import Model, SyncAgent, TrioAgent

import trio_mesa
from trio_mesa import Status
from trio_mesa import _slow_agents as slow_agents
from trio_mesa._slow_agents import SLOW_AFTER, SLOW_FACTOR


class Warnings(logging.Handler):
    """The slow-agent records, each with the virtual time it was logged at."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[tuple[float, logging.LogRecord]] = []
        self.then: list = []  # called with each record (to release a blocked thread)

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "trio_mesa_event", None) == "slow_agent":
            self.seen.append((trio.current_time(), record))
            for action in self.then:
                action(record)


class _Sleeps:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def wait(self) -> None:
        time.sleep(self.seconds)


class _Released:
    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def wait(self) -> None:
        self.event.wait(30)


@pytest.fixture
def slow_warnings() -> Iterator[Warnings]:
    handler = Warnings()
    log = logging.getLogger("trio_mesa")
    log.addHandler(handler)
    try:
        yield handler
    finally:
        log.removeHandler(handler)


def test_the_documented_bound() -> None:
    assert (SLOW_AFTER, SLOW_FACTOR) == (60.0, 10.0)


async def test_an_agent_far_slower_than_the_rest_is_named_once(mock_clock, slow_warnings):
    model = Model()
    for _ in range(8):
        TrioAgent(model, ("sleep", 20))  # median 20 s: the bound is 200 s
    hung = TrioAgent(model, ("sleep", 1000))
    TrioAgent(model, ("sleep", 900))  # slow too, and still: one warning a step
    report = await trio_mesa.step_agents(model.agents)
    assert report.all_ok and report.duration == 1000  # a warning changes no outcome
    (when, record), *more = slow_warnings.seen
    assert more == []
    assert when == 200
    assert record.levelno == logging.WARNING
    assert record.agent_unique_id in (hung.unique_id, hung.unique_id + 1)
    assert record.agent_class == "TrioAgent" and not hasattr(record, "agent_status")
    message = record.getMessage()
    assert message.startswith(
        f"agent {record.agent_unique_id} (TrioAgent) has run 200 s (over 10x the median "
        "20 s of 8 agents done); with no timeout the step waits for ever"
    )
    assert "set timeout= (compat: configure(timeout=...))" in message


async def test_with_no_agent_finished_the_bound_is_slow_after(mock_clock, slow_warnings):
    model = Model()
    TrioAgent(model, ("sleep", 5000))
    await trio_mesa.step_agents(model.agents)
    ((when, record),) = slow_warnings.seen
    assert when == SLOW_AFTER
    assert "(no other agent done yet)" in record.getMessage()


async def test_the_clock_starts_when_the_agent_starts(mock_clock, slow_warnings):
    # One slot: the hung agent starts at 10 s, once the first one is done; its bound is
    # then max(60, 10 x 10) = 100 s of its own running time.
    model = Model()
    quick = TrioAgent(model, ("sleep", 10))
    hung = TrioAgent(model, ("sleep", 5000))
    await trio_mesa.step_agents([quick, hung], max_concurrency=1, shuffle=False)
    ((when, record),) = slow_warnings.seen
    assert (when, record.agent_unique_id) == (10 + 100, hung.unique_id)


async def test_a_quick_step_never_warns_and_ends_with_its_agents(mock_clock, slow_warnings):
    model = Model()
    for _ in range(3):
        TrioAgent(model, ("sleep", 10))
    TrioAgent(model, ("sleep", 99))  # under 10 x the median of 10 s
    report = await trio_mesa.step_agents(model.agents)
    assert slow_warnings.seen == []
    assert report.duration == 99  # the watch did not keep the step waiting


@pytest.mark.parametrize("timeout", [1000, math.inf])  # inf: "no limit" said on purpose
async def test_a_step_with_a_timeout_is_not_watched(mock_clock, slow_warnings, timeout):
    model = Model()
    TrioAgent(model, ("sleep", 500))
    report = await trio_mesa.step_agents(model.agents, timeout=timeout)
    assert report.all_ok and slow_warnings.seen == []


async def test_a_slow_worker_thread_is_named_and_said_to_be_unkillable(slow_warnings, monkeypatch):
    # A thread's time is real time, so this one runs on the real clock, with the bound
    # cut to 50 ms: the thread ends once the warning was logged (the wait's limit only
    # keeps a missing warning from hanging the test suite).
    monkeypatch.setattr(slow_agents, "SLOW_AFTER", 0.05)
    release = threading.Event()
    slow_warnings.then.append(lambda record: release.set())
    model = Model()
    blocked = SyncAgent(model, ("block", _Released(release)))
    start = trio.current_time()
    report = await trio_mesa.step_agents(model.agents, sync_mode="thread")
    assert [o.status for o in report] == [Status.OK]
    ((when, record),) = slow_warnings.seen
    assert when - start >= 0.05 and record.agent_unique_id == blocked.unique_id
    message = record.getMessage()
    assert "worker thread, which cannot be killed" in message
    assert "abandon_threads=True lets a timeout stop the wait" in message


async def test_in_virtual_time_the_watch_never_moves_the_clock_for_a_thread(
    mock_clock, slow_warnings
):
    # Autojump moves a MockClock to the next deadline whenever every task waits, and a
    # task waiting on a worker thread waits: a watch sleeping towards SLOW_AFTER would
    # make a thread that works for 20 real ms look 60 virtual seconds long, and warn.
    model = Model()
    SyncAgent(model, ("block", _Sleeps(0.02)))
    TrioAgent(model, ("sleep", 1))
    report = await trio_mesa.step_agents(model.agents, sync_mode="thread")
    assert [o.status for o in report] == [Status.OK, Status.OK]
    assert report.outcomes[0].duration <= 1.0
    assert trio.current_time() == 1.0
    assert slow_warnings.seen == []
