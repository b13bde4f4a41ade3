"""The fake LLM client and agents: litellm-shaped errors, virtual latencies, real Mesa state."""

from __future__ import annotations

import json

import pytest
import trio

import trio_mesa
from fault_injection import (
    AsyncioLLMAgent,
    FakeLLM,
    FakeLLMModel,
    FaultPlan,
    FaultRule,
    Fixed,
    RateLimitError,
    Scenario,
    SyncLLMAgent,
    ToolCallParseError,
    TrioLLMAgent,
    parse_tool_call,
)
from trio_mesa import Status


def _plan(**kw) -> FaultPlan:
    return FaultPlan(Scenario("t", **{"agents": 3, "flavors": {"trio": 1}, **kw}), 0)


def test_rate_limit_error_looks_like_litellms() -> None:
    llm = FakeLLM(_plan(faults={"rate_limit": 1.0}), 1)
    with pytest.raises(RateLimitError) as info:
        llm.completion("hi")
    exc = info.value
    assert exc.status_code == 429 and exc.retry_after > 0
    assert exc.llm_provider == "fake" and exc.model == "fake/agent-1"
    assert "Rate limit" in str(exc) and exc.message == str(exc)


def test_malformed_json_and_bad_tool_calls_fail_in_the_agents_parser() -> None:
    bad_json = FakeLLM(_plan(faults={"malformed_json": 1.0}), 1).completion("hi")
    with pytest.raises(json.JSONDecodeError):
        parse_tool_call(bad_json)
    bad_call = FakeLLM(_plan(faults={"bad_tool_call": 1.0}), 1).completion("hi")
    with pytest.raises(ToolCallParseError):
        parse_tool_call(bad_call)
    tool, args = parse_tool_call(FakeLLM(_plan(), 1).completion("hi"))
    assert tool == "move" and set(args) == {"dx", "dy"}


def test_model_has_real_agents_of_each_flavor_on_a_grid() -> None:
    scenario = Scenario("m", agents=9, flavors={"asyncio": 1, "trio": 1, "sync": 1})
    model = FakeLLMModel.from_scenario(scenario, 1)
    kinds = {type(a) for a in model.agents}
    assert kinds == {AsyncioLLMAgent, TrioLLMAgent, SyncLLMAgent}
    assert sorted(a.unique_id for a in model.agents) == list(range(1, 10))
    assert all(a.cell is not None and a in a.cell.agents for a in model.agents)


async def test_latencies_are_virtual_for_trio_and_asyncio_agents(mock_clock) -> None:
    # asyncio agents on a Trio host run on trio-asyncio, whose loop.time() is Trio's
    # clock: under MockClock their asyncio.sleep is virtual too.
    scenario = Scenario("v", agents=4, flavors={"asyncio": 1, "trio": 1}, latency=Fixed(30.0))
    model = FakeLLMModel.from_scenario(scenario, 0)
    model.steps = 1
    start = trio.current_time()
    report = await trio_mesa.step_agents(model.agents)
    assert trio.current_time() - start == pytest.approx(30.0, abs=1e-3)
    assert {type(o.agent) for o in report} == {AsyncioLLMAgent, TrioLLMAgent}
    for o in report:
        assert o.status is Status.OK
        assert o.duration == pytest.approx(30.0, abs=1e-3)


async def test_success_moves_the_agent_and_records_work_once(mock_clock) -> None:
    scenario = Scenario(
        "w",
        agents=6,
        flavors={"asyncio": 1, "trio": 1, "sync": 1},
        rules=(FaultRule("server_error", agents=(1, 2, 3)),),
    )
    model = FakeLLMModel.from_scenario(scenario, 0)
    model.steps = 1
    report = await trio_mesa.step_agents(model.agents)
    by_id = report.by_id()
    for uid in range(1, 7):
        agent = by_id[uid].agent
        if uid <= 3:
            assert by_id[uid].status is Status.FAILED
            assert agent.work_steps == []
        else:
            assert by_id[uid].status is Status.OK
            assert agent.work_steps == [1]
    assert model.tally == 3 and model.running == set()


async def test_hang_is_ended_by_the_timeout_in_virtual_time(mock_clock) -> None:
    scenario = Scenario(
        "h", agents=2, flavors={"asyncio": 1, "trio": 1}, rules=(FaultRule("hang"),), timeout=60
    )
    model = FakeLLMModel.from_scenario(scenario, 0)
    model.steps = 1
    report = await trio_mesa.step_agents(model.agents, timeout=60)
    assert [o.status for o in report] == [Status.TIMED_OUT, Status.TIMED_OUT]
    assert trio.current_time() == pytest.approx(60.0)
    assert model.running == set()
    assert all(t.done() for t in model.aio_tasks)


async def test_replies_are_billed_to_their_agent_and_errors_are_not(mock_clock) -> None:
    # Every flavor; agents 1-3 get a server error (not billed), 4-5 a malformed reply
    # (billed: the provider answered), the rest a good one.
    scenario = Scenario(
        "u",
        agents=9,
        flavors={"asyncio": 1, "trio": 1, "sync": 1},
        rules=(
            FaultRule("server_error", agents=(1, 2, 3)),
            FaultRule("malformed_json", agents=(4, 5)),
        ),
    )
    model = FakeLLMModel.from_scenario(scenario, 0)
    model.steps = 1
    prompts = {a.unique_id: a.prompt() for a in model.agents}
    report = await trio_mesa.step_agents(model.agents)
    good = '{"tool": "move", "arguments": {"dx": 0, "dy": 0}}'
    for o in report:
        uid = o.unique_id
        if uid <= 3:
            assert o.status is Status.FAILED and o.usage.calls == 0
            continue
        assert o.usage.calls == 1 and o.usage.cost is None
        assert o.usage.prompt_tokens == len(prompts[uid].split())
        # A malformed reply is cut off mid-object; its words are fewer, never more.
        words = len(good.split())
        assert o.usage.completion_tokens == (words if uid > 5 else words - 1)
    assert report.usage.calls == 6
    assert report.usage.prompt_tokens == sum(len(prompts[u].split()) for u in range(4, 10))
