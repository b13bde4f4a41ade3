"""Property: any mix of agents yields exactly one outcome per agent, with the implied status."""

from __future__ import annotations

import pytest
import trio.testing
from core_agents import FLAVORS, Model
from hypothesis import given, settings
from hypothesis import strategies as st

import trio_mesa
from trio_mesa import Status, StepFailed

TIMEOUT = 10

# Sleeps never land exactly on the timeout or deadline, where either could win.
_durations = st.sampled_from([0.5, 1, 2, 3, 5, 8, 9.5, 11, 15, 30])
_async_behaviour = st.one_of(
    st.just(("ok",)),
    st.builds(lambda m: ("raise", RuntimeError(m)), st.text(max_size=5)),
    st.builds(lambda d: ("sleep", d), _durations),
    st.builds(lambda d: ("sleep_raise", d, ValueError("late")), _durations),
    st.just(("hang",)),
)
_sync_behaviour = st.one_of(st.just(("ok",)), st.builds(lambda: ("raise", KeyError("k"))))
_agent_spec = st.one_of(
    st.tuples(st.sampled_from(["trio", "asyncio"]), _async_behaviour),
    st.tuples(st.just("sync"), _sync_behaviour),
)


def _expected(behaviour: tuple, limit: float) -> Status:
    kind = behaviour[0]
    if kind == "ok":
        return Status.OK
    if kind == "raise":
        return Status.FAILED
    if kind == "hang":
        return Status.TIMED_OUT
    if behaviour[1] >= limit:
        return Status.TIMED_OUT
    return Status.OK if kind == "sleep" else Status.FAILED


@settings(max_examples=200, deadline=None)
@given(
    specs=st.lists(_agent_spec, min_size=0, max_size=12),
    max_concurrency=st.one_of(st.none(), st.integers(1, 4)),
    deadline=st.one_of(st.none(), st.sampled_from([4, 12])),
    sync_mode=st.sampled_from(["inline", "thread"]),
    strict=st.booleans(),
)
def test_every_agent_gets_exactly_the_status_its_behaviour_implies(
    specs, max_concurrency, deadline, sync_mode, strict
):
    if max_concurrency is not None:
        deadline = None  # with a queue, who starts before the deadline is scheduling
    model = Model()
    agents = [FLAVORS[flavor](model, behaviour) for flavor, behaviour in specs]
    limit = TIMEOUT if deadline is None else min(TIMEOUT, deadline)
    expected = {a.unique_id: _expected(a.behaviour, limit) for a in agents}
    planned_failures = sorted(uid for uid, s in expected.items() if s is not Status.OK)

    options = dict(
        timeout=TIMEOUT,
        deadline=deadline,
        max_concurrency=max_concurrency,
        sync_mode=sync_mode,
        strict=strict,
        clock=trio.testing.MockClock(autojump_threshold=0),
    )
    if strict and planned_failures:
        with pytest.raises(StepFailed) as info:
            trio_mesa.run_step(model.agents, **options)
        report = info.value.report
        assert len(info.value.exceptions) == len(planned_failures)
    else:
        report = trio_mesa.run_step(model.agents, **options)

    assert sorted(o.unique_id for o in report) == sorted(expected)  # one outcome each
    assert {o.unique_id: o.status for o in report} == expected
    assert sorted(o.unique_id for o in report.failed) == planned_failures
    for agent in agents:
        assert agent.calls == 1  # nothing lost, nothing doubled
        assert agent.finished == (expected[agent.unique_id] is Status.OK)
