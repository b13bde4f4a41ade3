"""End to end, record once and replay forever, with real mesa-llm agents over loopback.

A clean chaos server stands in for the real provider. Twelve ``LLMAgent``s
(``tests/mesa_llm_e2e.py``, litellm over HTTP, stepped by ``trio_mesa.run_step``) run
three steps through a recording proxy (``chaos_server(upstream=..., record=...)``).
Then the upstream and the proxy are stopped and the same seeded model runs again
against ``chaos_server(replay=cassette)``: every agent's position, memory and every
`StepReport` outcome (status, exception, attempts, usage; durations are not compared)
must be identical, and no request may differ from its recording (strict mode). Then
once more with the ``flaky`` scenario overlaid on the cassette: every call's fate is
the `FaultPlan`'s, every successful reply the recording's, and every agent's outcome
is the one the server's log predicts (`test_e2e_mesa_llm.predict`: litellm's and
mesa-llm's retry rules applied to that agent's requests).

One subprocess runs all three (importing mesa_llm patches Mesa process-wide and costs
seconds); it waits on stdin for each later run's URL, so each server can be started
only once the run before it is over.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_e2e_mesa_llm import AGENTS, E2E, FAULT_TIMEOUT, FLAKY_SEED, HELPER, mismatches

from fault_injection import (
    SERVER_SCENARIOS,
    Cassette,
    ChaosServer,
    FaultKind,
    FaultPlan,
    FaultRule,
    Scenario,
    chaos_server,
)

STEPS = 3


class Runs:
    def __init__(
        self, result: dict[str, Any], servers: dict[str, ChaosServer], cassette: Path
    ) -> None:
        self.result = result
        self.servers = servers
        self.cassette = cassette
        self.e2e = E2E(servers, result)

    def run(self, name: str) -> dict[str, Any]:
        return self.result["runs"][name]


def _next_line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    line = proc.stdout.readline() if proc.stdout is not None else ""
    assert line, "the e2e helper died; see its stderr"
    return json.loads(line)


@contextmanager
def _helper(specs: list[dict[str, Any]], stderr_path: Path) -> Iterator[Any]:
    """The e2e helper running ``specs``; yields ``step(url=None)``: send the next run's
    URL (if any) and read the helper's next line. A failure kills it and shows its stderr."""
    with open(stderr_path, "w+") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(HELPER), json.dumps(specs)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        watchdog = threading.Timer(300, proc.kill)  # a broken run must not hang the suite
        watchdog.start()

        def step(url: str | None = None) -> dict[str, Any]:
            if url is not None:
                assert proc.stdin is not None
                proc.stdin.write(url + "\n")
                proc.stdin.flush()
            return _next_line(proc)

        try:
            yield step
            assert proc.wait(timeout=60) == 0
        except BaseException:
            proc.kill()
            stderr.seek(0)
            sys.stderr.write(stderr.read()[-5000:])
            raise
        finally:
            watchdog.cancel()
            proc.wait()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    tmp = tmp_path_factory.mktemp("replay")
    cassette = tmp / "run.jsonl"
    spec = {"host": "trio", "agents": AGENTS, "steps": STEPS}
    with ExitStack() as stack:
        upstream = stack.enter_context(chaos_server("clean"))
        proxy = stack.enter_context(chaos_server(upstream=upstream.api_base, record=cassette))
        specs = [
            {"name": "record", "api_base": proxy.api_base, "timeout": 30.0, **spec},
            {"name": "replay", "api_base": None, "timeout": 30.0, **spec},
            {"name": "overlay", "api_base": None, "timeout": FAULT_TIMEOUT, **spec},
        ]
        with _helper(specs, tmp / "stderr.txt") as step:
            assert step() == {"ready": "replay"}
            # Offline from here on: the provider is gone, the cassette complete.
            proxy.stop()
            upstream.stop()
            replay = stack.enter_context(chaos_server(replay=cassette))
            assert step(replay.api_base) == {"ready": "overlay"}
            overlay = stack.enter_context(chaos_server("flaky", FLAKY_SEED, replay=cassette))
            result = step(overlay.api_base)
        for server in (replay, overlay):
            assert server.wait_idle(10)
        servers = {"record": proxy, "replay": replay, "overlay": overlay, "upstream": upstream}
        yield Runs(result, servers, cassette)


def _outcomes(run: dict[str, Any]) -> list[list[dict[str, Any]]]:
    return [step["outcomes"] for step in run["steps"]]


def test_the_recording_is_a_clean_run_of_every_agent(runs) -> None:
    for step in _outcomes(runs.run("record")):
        assert [o["status"] for o in step] == ["ok"] * AGENTS
        assert all(o["attempts"] == 1 and o["usage"][0] == 2 for o in step)  # plan + tool call
    cassette = Cassette.load(runs.cassette)
    # Every agent's plan and tool call of every step, plus the helper's warm-up (agent 0).
    assert sorted(a for a in cassette.agents if a is not None) == list(range(AGENTS + 1))
    assert [len(cassette.calls(uid)) for uid in range(1, AGENTS + 1)] == [2 * STEPS] * AGENTS
    assert {e.status for e in cassette} == {200}
    assert len(runs.servers["upstream"].records()) == len(cassette) == 1 + 2 * STEPS * AGENTS


def test_replay_reproduces_positions_memories_and_every_report(runs) -> None:
    record, replay = runs.run("record"), runs.run("replay")
    assert _outcomes(replay) == _outcomes(record)  # statuses, attempts, usage, plans, moves
    assert replay["agents"] == record["agents"]  # final positions and memories
    # Strict replay: no request differed from its recording, every one was answered
    # from the cassette (the upstream was already stopped).
    log = runs.servers["replay"].records()
    assert runs.servers["replay"].log.faults() == []
    assert len(log) == 2 * STEPS * AGENTS and {r.status for r in log} == {200}
    with pytest.raises(httpx.ConnectError):
        httpx.get(runs.servers["upstream"].base_url + "/_chaos/health", timeout=2)


def test_the_positions_moved_so_the_comparison_means_something(runs) -> None:
    record = runs.run("record")
    start = {str(i + 1): [i % 8, i // 8] for i in range(AGENTS)}  # where Town places them
    assert {uid: a["pos"] for uid, a in record["agents"].items()} != start
    assert all(a["short_term"] for a in record["agents"].values())


def test_overlaid_faults_match_the_oracle_for_every_agent(runs) -> None:
    assert mismatches(runs.e2e, "overlay") == []
    records = runs.servers["overlay"].records()
    plan = FaultPlan(SERVER_SCENARIOS["flaky"], FLAKY_SEED)
    for r in records:  # the fate of every call is the plan's
        assert r.planned == plan.call(r.agent, r.call).kind.value, r
    faults = {r.fault for r in records} - {"ok"}
    assert {"hang", "malformed_json", "bad_tool_call"} <= faults
    assert "replay_exhausted" not in faults  # the recording had a reply for every success
    statuses = {o["status"] for step in _outcomes(runs.run("overlay")) for o in step}
    assert {"ok", "failed", "timed_out"} <= statuses
    # Every successful reply is the recording's (the clean upstream's), not a new one:
    # each plan an agent acted on, and each tool call it made, is one recorded for it.
    served = [r for r in records if r.fault == "ok" and r.status == 200]
    assert served and all(r.detail.startswith("recorded call ") for r in served)
    recorded: dict[int, set[str]] = {}
    for e in Cassette.load(runs.cassette):
        message = json.loads(e.content)["choices"][0]["message"]
        texts = recorded.setdefault(e.agent, set())
        texts.add(message["content"] or "")
        texts.update(tc["function"]["arguments"] for tc in message.get("tool_calls") or [])
    acted = 0
    for step in _outcomes(runs.run("overlay")):
        for o in step:
            if o["status"] == "ok":
                acted += 1
                assert o["plan_text"] in recorded[o["unique_id"]]
                for tc in o["tool_calls"]:
                    args = tc["arguments"]
                    if args in recorded[o["unique_id"]]:
                        continue
                    # bad_tool_call: the recorded arguments, cut short by the plan
                    assert any(r.startswith(args) for r in recorded[o["unique_id"]]), args
                    with pytest.raises(ValueError):
                        json.loads(args)
    assert acted >= AGENTS


#: A provider that never answers agent 3's second call (its step-1 tool call) nor agent
#: 8's third (its step-2 plan): those agents time out in those steps.
STUCK = Scenario(
    name="stuck",
    agents=AGENTS,
    latency=0.0,
    rules=(
        FaultRule(FaultKind.HANG, agents=(3,), calls=(2,)),
        FaultRule(FaultKind.HANG, agents=(8,), calls=(3,)),
    ),
    timeout=FAULT_TIMEOUT,
    real_time_scale=0.02,
)


@pytest.fixture(scope="module")
def stuck_runs(tmp_path_factory) -> tuple[dict[str, Any], dict[str, ChaosServer], Path]:
    tmp = tmp_path_factory.mktemp("stuck")
    cassette = tmp / "run.jsonl"
    spec = {"host": "trio", "agents": AGENTS, "steps": 2, "timeout": FAULT_TIMEOUT}
    with ExitStack() as stack:
        upstream = stack.enter_context(chaos_server(STUCK))
        proxy = stack.enter_context(chaos_server(upstream=upstream.api_base, record=cassette))
        specs = [
            {"name": "record", "api_base": proxy.api_base, **spec},
            {"name": "replay", "api_base": None, **spec},
        ]
        with _helper(specs, tmp / "stderr.txt") as step:
            assert step() == {"ready": "replay"}
            proxy.stop()
            upstream.stop()
            replay = stack.enter_context(chaos_server(replay=cassette))
            result = step(replay.api_base)
        assert replay.wait_idle(10)
        yield result, {"record": proxy, "replay": replay, "upstream": upstream}, cassette


def test_calls_that_timed_out_when_recorded_time_out_again_on_replay(stuck_runs) -> None:
    result, servers, cassette = stuck_runs
    record, replay = result["runs"]["record"], result["runs"]["replay"]
    timed_out = [
        (n, o["unique_id"])
        for n, step in enumerate(_outcomes(record), 1)
        for o in step
        if o["status"] != "ok"
    ]
    assert timed_out == [(1, 3), (2, 8)]
    assert {o["status"] for step in _outcomes(record) for o in step} == {"ok", "timed_out"}
    abandoned = [(e.agent, e.call) for e in Cassette.load(cassette) if e.abandoned]
    assert abandoned == [(3, 2), (8, 3)]
    # The same outcomes, positions and memories, offline; no request differed.
    assert _outcomes(replay) == _outcomes(record)
    assert replay["agents"] == record["agents"]
    log = servers["replay"].records()
    assert servers["replay"].log.faults() == []
    held = sorted((r.agent, r.call) for r in log if r.outcome == "client_disconnected")
    assert held == [(3, 2), (8, 3)]


PIN_NEIGHBOUR_ORDER = """
import json, os
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENAI_API_KEY", "sk-not-used")
from mesa import Model
from mesa.space import MultiGrid
from mesa_llm.llm_agent import LLMAgent
from mesa_llm.reasoning.cot import CoTReasoning

model = Model(rng=1)
model.grid = MultiGrid(5, 5, torus=True)
a, b, c = (LLMAgent(model, CoTReasoning, llm_model="openai/x", vision=1) for _ in range(3))
model.grid.place_agent(a, (0, 0))
model.grid.place_agent(b, (1, 1))
model.grid.place_agent(c, (1, 1))
first = list(a._build_observation()[1])
model.grid.move_agent(b, (1, 2))
model.grid.move_agent(b, (1, 1))  # b arrives after c now
print(json.dumps([first, list(a._build_observation()[1])]))
"""


def test_upstream_mesa_llm_lists_cellmates_in_the_order_they_arrived() -> None:
    # Why tests/mesa_llm_e2e.py's Walker sorts its neighbours: mesa-llm 0.3.2 lists
    # agents sharing a cell in arrival order, so under parallel stepping a prompt
    # depends on which LLM reply came back first, and a strict replay diverges.
    proc = subprocess.run(
        [sys.executable, "-c", PIN_NEIGHBOUR_ORDER], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, after = json.loads(proc.stdout.strip().splitlines()[-1])
    assert first == ["LLMAgent 2", "LLMAgent 3"]
    assert after == ["LLMAgent 3", "LLMAgent 2"]  # the same place, another prompt
