"""End to end: 12 real mesa-llm agents, SIGKILLed, resumed, billed once.

Twelve ``LLMAgent``s (tests/mesa_llm_e2e.py's `Town`: CoT planning plus a tool call
per step, litellm over HTTP) run three steps against a clean chaos server through
``trio_mesa.simulate(checkpoint=DIR)`` in a child process (tests/mesa_llm_durable.py).
The child is SIGKILLed in step 2, either when every agent of that step has been
answered but before the step was recorded (its ledger line and snapshot unwritten) or
mid-step (after 5 agents' outcomes, other agents' requests in flight), then
``trio_mesa.resume(DIR)`` in a new child redoes step 2 from the snapshot of step 1,
its calls answered from the run's cassette, and runs step 3. The same run uninterrupted
against a second server is the reference: every outcome, position and memory must be
equal, and the provider must have been billed every call of the run once, plus once
more only for the calls it had received but whose answers died with the child. The
chaos server answers a call by the client's call number (trio-mesa's seam sends it
when recording), so a call asked again gets the answer it got the first time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fault_injection import chaos_server
from trio_mesa import Cassette

HERE = Path(__file__).parent
CHILD = [sys.executable, str(HERE / "mesa_llm_durable.py")]
ENV = {**os.environ, "PYTHONPATH": f"{HERE.parent}{os.pathsep}{HERE}"}
AGENTS, STEPS, KILL_AT = 12, 3, 2


def _memories(run: dict[str, Any]) -> str:
    # The chaos server names a tool call by its own request counter over all agents
    # ("call_chaos_17"): the order requests arrived in, which differs between any two
    # runs (network timing), interrupted or not. Everything else must be equal.
    return re.sub(r"call_chaos_\d+", "call_chaos_N", json.dumps(run["agents"], sort_keys=True))


def _last_json(text: str) -> dict[str, Any]:
    return json.loads(text.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[dict[str, Any], int]:
    tmp = tmp_path_factory.mktemp("whole")
    with chaos_server("clean") as server:
        whole = subprocess.run(
            [*CHILD, "run", str(tmp / "whole"), server.api_base, str(AGENTS), str(STEPS)],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        assert whole.returncode == 0, whole.stderr[-3000:]
        billed = len(server.records())
    assert billed == AGENTS * STEPS * 2  # a plan and a tool call per agent-step
    return _last_json(whole.stdout), billed


@pytest.mark.parametrize("outcomes", [None, 5], ids=["all-answered", "mid-step"])
def test_killed_and_resumed_mesa_llm_run_equals_the_uninterrupted_one_billed_once(
    tmp_path: Path, uninterrupted: tuple[dict[str, Any], int], outcomes: int | None
) -> None:
    want, billed_whole = uninterrupted
    directory = tmp_path / "run"
    kill = [str(KILL_AT)] + ([] if outcomes is None else [str(outcomes)])
    with chaos_server("clean") as server:
        child = subprocess.Popen(
            [*CHILD, "run", str(directory), server.api_base, str(AGENTS), str(STEPS), *kill],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**ENV, "KILL_ME": "1"},
            text=True,
        )
        try:
            assert child.stdout is not None and child.stderr is not None
            line = child.stdout.readline()
            assert json.loads(line)["killable"] == KILL_AT, child.stderr.read()[-3000:]
            child.send_signal(signal.SIGKILL)
            assert child.wait(timeout=60) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        at_kill = {(r.agent, r.call) for r in server.records()}
        kept = {
            (e.agent, e.call) for e in Cassette.load(directory / "cassette.jsonl", complete=False)
        }
        if outcomes is None:
            assert len(at_kill) == AGENTS * KILL_AT * 2 and at_kill == kept  # step 2 answered
        resumed = subprocess.run(
            [*CHILD, "resume", str(directory)],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        records = server.records()
    got = _last_json(resumed.stdout)
    assert got["resumed_after"] == [KILL_AT - 1]
    assert got["steps"] == want["steps"]  # statuses, attempts, usage of every agent-step
    assert _memories(got) == _memories(want)  # final positions and memories
    # Billing: every call of the run reached the provider, and the only ones it got
    # twice are those it had received when the child died but whose answers never
    # reached the cassette (in flight); every call the cassette held was replayed.
    keys = [(r.agent, r.call) for r in records]
    assert len(set(keys)) == billed_whole
    twice = {k for k in keys if keys.count(k) > 1}
    assert twice == at_kill - kept
    assert len(keys) == billed_whole + len(twice)
