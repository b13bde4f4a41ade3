"""End to end: real mesa-llm agents, litellm and HTTP on loopback, stepped by trio-mesa.

Twelve ``LLMAgent`` subclasses with ``CoTReasoning`` (``tests/mesa_llm_e2e.py``) call
the chaos server (in this process) through litellm, stepped (a) by
``trio_mesa.compat.step_agents_parallel`` from asyncio, (b) by ``trio_mesa.run_step``
on a Trio host through trio-asyncio, and (c) by ``trio_mesa.step_agents`` inside the
caller's own ``trio_asyncio.open_loop()`` (clean run only). One subprocess runs every
case (importing mesa_llm patches Mesa's AgentSet process-wide, and costs seconds: once
is enough).

The server's log is the oracle: for every agent in every step, `predict` reads that
agent's requests and says how its step must end, given how litellm and mesa-llm retry:
litellm's OpenAI client makes up to 3 attempts on 408, 429, 5xx and dropped connections;
mesa-llm's ``ModuleLLM`` then retries rate limits and timeouts with a 1 s+ backoff and no
end (so only the per-agent timeout stops it); everything else ends the step with an
exception. Dropped connections are not retried by mesa-llm: litellm 1.106 raises them as
``InternalServerError``, not the ``APIConnectionError`` mesa-llm retries (pinned by
``test_dropped_connections_fail_fast_not_retried_forever``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from fault_injection import ChaosServer, FaultKind, RequestRecord, Scenario, chaos_server

HELPER = Path(__file__).with_name("mesa_llm_e2e.py")
AGENTS = 12
#: This seed's first two calls give (see test_the_flaky_seed_covers_every_ending):
#: agent 9 a hang, agent 12 a malformed body, agents 1, 3, 5 a retried error, agent 11
#: invalid tool-call arguments.
FLAKY_SEED = 134
#: Per-agent timeout of the fault runs: above a litellm retry chain (~1.5 s), and what a
#: hung agent costs its step.
FAULT_TIMEOUT = 2.5

SDK_RETRIED = {"rate_limit", "timeout", "connection_error", "server_error", "service_unavailable"}
SDK_ATTEMPTS = 3  # litellm passes max_retries=2 to the OpenAI client
MESA_LLM_RETRIED = {"rate_limit", "timeout"}
ERROR_NAMES = {
    "connection_error": "InternalServerError",  # litellm 1.106: "Connection error."
    "malformed_json": "InternalServerError",  # litellm's name for an unparseable body
    "content_filter": "BadRequestError",
    "server_error": "InternalServerError",
    "service_unavailable": "ServiceUnavailableError",
}

RUNS = {
    "clean-asyncio": ("clean", None, "asyncio", 2, 30.0),
    "clean-trio": ("clean", None, "trio", 2, 30.0),
    "clean-trio-own-loop": ("clean", None, "trio-own-loop", 2, 30.0),
    "flaky-asyncio": ("flaky", FLAKY_SEED, "asyncio", 2, FAULT_TIMEOUT),
    "flaky-trio": ("flaky", FLAKY_SEED, "trio", 2, FAULT_TIMEOUT),
    "storm-trio": ("rate-limit-storm", 3, "trio", 1, FAULT_TIMEOUT),
    "dead-asyncio": (
        Scenario(name="dead", agents=AGENTS, faults={FaultKind.CONNECTION_ERROR: 1.0}),
        None,
        "asyncio",
        1,
        FAULT_TIMEOUT,
    ),
}


class E2E:
    def __init__(self, servers: dict[str, ChaosServer], result: dict[str, Any]) -> None:
        self.servers = servers
        self.result = result

    def steps(self, run: str) -> list[dict[str, Any]]:
        return self.result["runs"][run]["steps"]

    def step_records(self, run: str) -> list[dict[int | None, list[RequestRecord]]]:
        """Per step, each agent's requests in call order."""
        records = self.servers[run].records()
        out, start = [], 0
        for step in self.steps(run):
            by_agent: dict[int | None, list[RequestRecord]] = {}
            for r in records[start : step["requests"]]:
                by_agent.setdefault(r.agent, []).append(r)
            out.append(by_agent)
            start = step["requests"]
        return out


@pytest.fixture(scope="module")
def e2e() -> E2E:
    with ExitStack() as stack:
        servers = {
            name: stack.enter_context(chaos_server(scenario, seed))
            for name, (scenario, seed, *_rest) in RUNS.items()
        }
        runs = [
            {
                "name": name,
                "host": host,
                "api_base": servers[name].api_base,
                "agents": AGENTS,
                "steps": steps,
                "timeout": timeout,
            }
            for name, (_s, _seed, host, steps, timeout) in RUNS.items()
        ]
        proc = subprocess.run(
            [sys.executable, str(HELPER), json.dumps(runs)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-5000:]
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        for server in servers.values():
            assert server.wait_idle(10)
        yield E2E(servers, result)


def predict(records: list[RequestRecord]) -> tuple[str, str | None]:
    """How an agent's step ends, from its requests in that step: (status, exception name)."""
    attempts = 0
    for r in records:
        if r.fault == "hang" or r.outcome == "client_disconnected":
            return "timed_out", "AgentTimeout"
        if r.fault in ("ok", "bad_tool_call"):
            attempts = 0
        elif r.fault in SDK_RETRIED:
            attempts += 1
            if attempts == SDK_ATTEMPTS:
                attempts = 0
                if r.fault not in MESA_LLM_RETRIED:
                    return "failed", ERROR_NAMES[r.fault]
        else:
            return "failed", ERROR_NAMES[r.fault]
    last = records[-1]
    if last.fault in ("ok", "bad_tool_call") and last.tool is not None:
        return "ok", None  # its tool-call reply arrived: nothing else can fail
    return "timed_out", "AgentTimeout"  # stopped while retrying, or between two calls


def mismatches(e2e: E2E, run: str) -> list[str]:
    out = []
    for n, (step, by_agent) in enumerate(
        zip(e2e.steps(run), e2e.step_records(run), strict=True), 1
    ):
        assert None not in by_agent, "every request was attributed to its agent"
        outcomes = {o["unique_id"]: o for o in step["outcomes"]}
        assert set(outcomes) == set(by_agent) == set(range(1, AGENTS + 1))
        for uid, records in sorted(by_agent.items()):
            expected = predict(records)
            o = outcomes[uid]
            if (o["status"], o["exception"]) != expected:
                faults = [(r.call, r.fault, r.outcome) for r in records]
                out.append(
                    f"step {n} agent {uid}: {o['status']} {o['exception']}, log says "
                    f"{expected} from {faults}"
                )
    return out


# -- clean: every agent plans, acts, and shows it ----------------------------------------


@pytest.mark.parametrize("run", ["clean-asyncio", "clean-trio", "clean-trio-own-loop"])
def test_clean_every_agent_ok_and_planned(e2e, run) -> None:
    steps = e2e.steps(run)
    assert len(steps) == 2
    for n, (step, by_agent) in enumerate(zip(steps, e2e.step_records(run), strict=True), 1):
        assert len(step["outcomes"]) == AGENTS
        for o in step["outcomes"]:
            uid = o["unique_id"]
            assert o["status"] == "ok", o
            # The reply made it into the agent: its plan is ours, for this agent and step,
            # and the tool call it made is the one we sent.
            assert o["plan_step"] == n
            assert f"agent_unique_id: {uid}" in o["plan_text"]
            assert "Action: call move_one_step" in o["plan_text"]
            plan_request, tool_request = by_agent[uid]
            assert (plan_request.tool, tool_request.tool) == (None, "move_one_step")
            [call] = o["tool_calls"]
            assert call["name"] == "move_one_step"
            [response] = o["tool_responses"]
            assert response.startswith(f"agent {uid} moved to ")
    assert all(r.fault == "ok" and r.outcome == "sent" for r in e2e.servers[run].records())


# -- flaky: the report agrees with the fault log -----------------------------------------


@pytest.mark.parametrize("run", ["flaky-asyncio", "flaky-trio", "storm-trio", "dead-asyncio"])
def test_report_agrees_with_the_fault_log(e2e, run) -> None:
    assert mismatches(e2e, run) == []
    assert e2e.servers[run].log.faults()  # the scenario did strike


def test_the_flaky_seed_covers_every_ending(e2e) -> None:
    for run in ("flaky-asyncio", "flaky-trio"):
        first = {o["unique_id"]: o for o in e2e.steps(run)[0]["outcomes"]}
        records = e2e.step_records(run)[0]
        assert first[9]["status"] == "timed_out"  # hung: only the timeout ended it
        assert records[9][-1].fault == "hang"
        assert first[12]["status"] == "failed"  # a malformed body: litellm raises
        assert first[12]["exception"] == "InternalServerError"
        for uid in (1, 3, 5):  # faults litellm's client retried past
            assert first[uid]["status"] == "ok"
            assert records[uid][0].fault != "ok"
        # Invalid tool-call arguments: mesa-llm catches them and records the error as
        # the tool's response (in red: mesa-llm 0.3.2 keeps the ANSI colour codes in
        # the text the agent's memory sends to the model next time).
        assert first[11]["status"] == "ok"
        [response] = first[11]["tool_responses"]
        assert "Invalid JSON in function arguments" in response
        assert "\x1b[31m" in response


def test_same_seed_same_faults_on_both_hosts(e2e) -> None:
    def faults(run: str) -> set[tuple[Any, ...]]:
        return {(r.agent, r.call, r.fault, r.detail) for r in e2e.servers[run].log.faults()}

    assert faults("flaky-asyncio") == faults("flaky-trio")

    def statuses(run: str) -> list[dict[int, str]]:
        return [{o["unique_id"]: o["status"] for o in s["outcomes"]} for s in e2e.steps(run)]

    assert statuses("flaky-asyncio") == statuses("flaky-trio")


def test_a_rate_limit_storm_ends_in_timeouts_not_a_hung_step(e2e) -> None:
    [step] = e2e.steps("storm-trio")
    statuses = {o["status"] for o in step["outcomes"]}
    assert statuses <= {"ok", "timed_out"} and "timed_out" in statuses
    retried = [
        records
        for records in e2e.step_records("storm-trio")[0].values()
        if len(records) > SDK_ATTEMPTS  # mesa-llm retried after litellm gave up
    ]
    assert retried


def test_dropped_connections_fail_fast_not_retried_forever(e2e) -> None:
    # Upstream: litellm 1.106 raises openai's APIConnectionError as InternalServerError,
    # so mesa-llm 0.3.2's retry-forever (on litellm.APIConnectionError) never applies to
    # a connection that drops: the agent fails after litellm's own 3 attempts.
    [step] = e2e.steps("dead-asyncio")
    assert {(o["status"], o["exception"]) for o in step["outcomes"]} == {
        ("failed", "InternalServerError")
    }
    assert all("Connection error" in o["message"] for o in step["outcomes"])
    for records in e2e.step_records("dead-asyncio")[0].values():
        assert len(records) == SDK_ATTEMPTS
        assert {r.outcome for r in records} == {"dropped"}
