"""End to end: record 20 real mesa-llm agents in-process, then replay them offline.

Twenty ``LLMAgent``s (``tests/mesa_llm_e2e.py``: CoT planning plus a tool call per
step, litellm over HTTP) run three steps on the Trio host against a clean chaos server
inside ``trio_mesa.use_cassette(path, record="all")``: trio-mesa's request seam, not a
proxy, writes every exchange. Then the server is stopped and the same seeded model runs
again, same ``api_base``, with ``record="none"``, on the Trio host and on the asyncio
host (``trio_mesa.compat.step_agents_parallel``): every agent's position, memory and
every outcome (status, exception, attempts, usage, plan, tool call) must be identical,
every exchange must be answered from the cassette, and none recorded. The server's own
log shows the seam named each agent on the wire (``X-Agent-Id``): its (agent, call)
keys are exactly the cassette's.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from test_e2e_replay import _helper

from fault_injection import chaos_server
from trio_mesa import Cassette

AGENTS = 20
STEPS = 3


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("seam-replay")
    cassette = tmp / "run.jsonl"
    spec = {"agents": AGENTS, "steps": STEPS, "timeout": 30.0, "cassette": str(cassette)}
    with ExitStack() as stack:
        server = stack.enter_context(chaos_server("clean"))
        api_base = server.api_base
        specs = [
            {"name": "record", "host": "trio", "api_base": api_base, "record": "all", **spec},
            {"name": "replay", "host": "trio", "api_base": None, "record": "none", **spec},
            {"name": "replay-asyncio", "host": "asyncio", "api_base": None, "record": "none"}
            | spec,
        ]
        with _helper(specs, tmp / "stderr.txt") as step:
            assert step() == {"ready": "replay"}
            server.stop()  # offline from here on
            records = server.records()
            assert step(api_base) == {"ready": "replay-asyncio"}
            result = step(api_base)  # the same api_base: nothing is repointed
    return {"result": result, "records": records, "cassette": cassette, "api_base": api_base}


def _run(runs: dict[str, Any], name: str) -> dict[str, Any]:
    return runs["result"]["runs"][name]


def _outcomes(run: dict[str, Any]) -> list[list[dict[str, Any]]]:
    # By unique_id: compat's step_agents_parallel keeps the list's order, run_step
    # starts agents in Mesa's shuffled order; the outcomes are the same.
    return [sorted(step["outcomes"], key=lambda o: o["unique_id"]) for step in run["steps"]]


def test_the_seam_recorded_every_agent_call_with_no_proxy(runs) -> None:
    record = _run(runs, "record")
    for step in _outcomes(record):
        assert [o["status"] for o in step] == ["ok"] * AGENTS
        assert all(o["attempts"] == 1 and o["usage"][0] == 2 for o in step)  # plan + tool
    cassette = Cassette.load(runs["cassette"])
    assert cassette.agents and sorted(cassette.agents) == list(range(1, AGENTS + 1))
    assert [len(cassette.calls(uid)) for uid in range(1, AGENTS + 1)] == [2 * STEPS] * AGENTS
    assert {e.status for e in cassette} == {200}
    assert record["cassette"] == {"replayed": 0, "recorded": 2 * STEPS * AGENTS}
    # The seam named every agent on the wire: the server keyed each request by its
    # X-Agent-Id header exactly as the cassette numbers them (the helper's warm-up,
    # made outside any step, went through untouched as agent 0).
    server_keys = {(r.agent, r.call) for r in runs["records"] if r.agent != 0}
    assert server_keys == {(e.agent, e.call) for e in cassette}
    assert len(runs["records"]) == 1 + len(cassette)


@pytest.mark.parametrize("name", ["replay", "replay-asyncio"])
def test_offline_replay_reproduces_positions_memories_and_every_outcome(runs, name) -> None:
    record, replay = _run(runs, "record"), _run(runs, name)
    assert _outcomes(replay) == _outcomes(record)  # statuses, attempts, usage, plans, moves
    assert replay["agents"] == record["agents"]  # final positions and memories
    assert replay["cassette"] == {"replayed": 2 * STEPS * AGENTS, "recorded": 0}
    assert all(step["requests"] is None for step in replay["steps"])  # no server asked


def test_a_cut_short_cassette_fails_before_the_first_step(runs, tmp_path: Path) -> None:
    import trio_mesa

    lines = Path(runs["cassette"]).read_bytes().splitlines(keepends=True)
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b"".join(lines[:5]) + lines[5][:40])
    with pytest.raises(trio_mesa.CassetteError) as err:
        trio_mesa.use_cassette(cut, record="none")
    assert err.value.line == 6 and str(cut) in str(err.value)
