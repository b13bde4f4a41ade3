"""Usage attribution: `Usage`, `record_usage` on every flavor and host, and litellm's
calls attributed agent by agent against what the chaos server billed."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from mesa import Agent, Model

import trio_mesa
from trio_mesa import Retry, Status, Usage, record_usage

HELPER = Path(__file__).with_name("litellm_usage_e2e.py")


@pytest.fixture(autouse=True)
def _tracking() -> None:
    trio_mesa.track_usage()


def test_usage_sums_and_keeps_unknown_cost_unknown() -> None:
    priced = Usage(calls=2, prompt_tokens=10, completion_tokens=4, known_cost=0.5)
    unpriced = Usage(calls=1, prompt_tokens=3, completion_tokens=1, unpriced_calls=1)
    assert (priced + priced).cost == 1.0
    total = priced + unpriced
    assert total == Usage(3, 13, 5, 0.5, 1)
    assert total.cost is None and total.known_cost == 0.5 and total.total_tokens == 18
    assert sum([priced, unpriced], Usage()) == total
    assert not Usage() and not Usage().recorded and Usage().cost is None  # unknown, not free
    assert "cost unknown for 1 call(s), $0.5000 for the rest" in str(total)
    assert total.to_dict()["cost"] is None


def test_record_usage_outside_a_step_records_nothing() -> None:
    assert record_usage(prompt_tokens=5) is False


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"prompt_tokens": -1}, ValueError),
        ({"completion_tokens": 1.5}, TypeError),
        ({"cost": -0.1}, ValueError),
        ({"cost": "free"}, TypeError),
        ({"prompt_tokens": True}, TypeError),
    ],
)
def test_record_usage_rejects_bad_figures(kwargs, error) -> None:
    with pytest.raises(error, match=r"trio_mesa\.record_usage\(\)"):
        record_usage(**kwargs)


def _figures(agent: Agent) -> tuple[int, int, float | None]:
    uid = agent.unique_id
    return 10 * uid, uid, (0.25 * uid if uid % 2 else None)


class TrioCaller(Agent):
    @trio_mesa.trio_native
    async def astep(self) -> None:
        for _ in range(2):
            await trio.sleep(0.01 * self.unique_id)
            p, c, cost = _figures(self)
            record_usage(prompt_tokens=p, completion_tokens=c, cost=cost)


class AioCaller(Agent):
    async def astep(self) -> None:
        for _ in range(2):
            await asyncio.sleep(0.001 * self.unique_id)
            p, c, cost = _figures(self)
            # A task started from the agent's task copies its context: still this agent.
            await asyncio.create_task(_report(p, c, cost))


async def _report(p: int, c: int, cost: float | None) -> None:
    record_usage(prompt_tokens=p, completion_tokens=c, cost=cost)


class SyncCaller(Agent):
    def step(self) -> None:
        for _ in range(2):
            p, c, cost = _figures(self)
            record_usage(prompt_tokens=p, completion_tokens=c, cost=cost)


def _model(n: int = 4) -> Model:
    model = Model(rng=3)
    for _ in range(n):
        TrioCaller(model)
        AioCaller(model)
        SyncCaller(model)
    return model


def _check(report: trio_mesa.StepReport) -> None:
    assert report.all_ok
    for o in report:
        p, c, cost = _figures(o.agent)
        expected = Usage(
            2, 2 * p, 2 * c, 0.0 if cost is None else 2 * cost, 0 if cost is not None else 2
        )
        assert o.usage == expected, (o, expected)
    assert report.usage == sum((o.usage for o in report), Usage())
    assert report.usage.calls == 2 * len(report)


@pytest.mark.parametrize("sync_mode", ["inline", "thread"])
@pytest.mark.parametrize("metered", [False, True])
def test_record_usage_is_attributed_per_agent_on_the_trio_host(sync_mode, metered) -> None:
    options = {"retry": Retry(attempts=2)} if metered else {}
    report = trio_mesa.run_step(
        _model().agents,
        sync_mode=sync_mode,
        clock=trio.testing.MockClock(autojump_threshold=0),
        **options,
    )
    _check(report)


@pytest.mark.parametrize("sync_mode", ["inline", "thread"])
@pytest.mark.parametrize("metered", [False, True])
def test_record_usage_is_attributed_per_agent_on_the_asyncio_host(sync_mode, metered) -> None:
    options = {"retry": Retry(attempts=2)} if metered else {}
    model = _model()
    report = asyncio.run(trio_mesa.aio_step_agents(model.agents, sync_mode=sync_mode, **options))
    _check(report)


def test_an_inline_agent_ledger_does_not_leak_into_the_caller() -> None:
    model = Model(rng=1)
    SyncCaller(model)

    async def main() -> bool:
        await trio_mesa.step_agents(model.agents)
        return record_usage(prompt_tokens=1)

    assert trio.run(main) is False


def test_usage_of_a_failed_agent_is_kept() -> None:
    class Spender(Agent):
        def step(self) -> None:
            record_usage(prompt_tokens=7, completion_tokens=3, cost=0.1)
            raise ValueError("malformed JSON")

    model = Model(rng=1)
    Spender(model)
    (outcome,) = trio_mesa.run_step(model.agents).outcomes
    assert outcome.status is Status.FAILED
    assert outcome.usage == Usage(1, 7, 3, 0.1, 0)
    record = trio_mesa.run_step(model.agents).to_records()[0]
    assert (record["calls"], record["prompt_tokens"], record["cost"]) == (1, 7, 0.1)


def test_untracked_steps_have_no_ledgers(monkeypatch) -> None:
    from trio_mesa import _usage

    monkeypatch.setattr(_usage.switch, "on", False)
    report = trio_mesa.run_step(_model(1).agents)
    assert all(o.usage is report.outcomes[0].usage and not o.usage for o in report)


@pytest.fixture(scope="module")
def litellm_runs():
    from fault_injection import chaos_server

    with chaos_server("clean", seed=5) as server:
        proc = subprocess.run(
            [sys.executable, str(HELPER), server.api_base],
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert proc.returncode == 0, proc.stderr[-5000:]
        assert server.wait_idle(10)
        yield json.loads(proc.stdout.strip().splitlines()[-1]), server.records()


def test_litellm_usage_equals_what_the_server_billed_agent_by_agent(litellm_runs) -> None:
    result, records = litellm_runs
    start = 0
    assert [run["name"] for run in result["runs"]] == ["trio", "asyncio", "threads"]
    for run in result["runs"]:
        billed: dict[int, list[int]] = {}
        for r in records[start : run["requests"]]:
            assert r.agent is not None and r.outcome == "sent"
            b = billed.setdefault(r.agent, [0, 0, 0])
            b[0] += 1
            b[1] += r.prompt_tokens
            b[2] += r.completion_tokens
        start = run["requests"]
        ledger = {int(k): v for k, v in run["usage"].items()}
        assert ledger == {k: [*v, run["cost"]] for k, v in billed.items()}, run["name"]
        assert len(ledger) == result["agents"]
        # Every agent's prompt differs in length: a mix-up would show.
        assert len({v[1] for v in ledger.values()}) == result["agents"]
