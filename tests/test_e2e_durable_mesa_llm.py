"""End to end: 12 real mesa-llm agents, SIGKILLed, resumed, billed once.

Twelve ``LLMAgent``s (tests/mesa_llm_e2e.py's `Town`: CoT planning plus a tool call
per step, litellm over HTTP) run three steps against a clean chaos server through
``trio_mesa.simulate(checkpoint=DIR)`` in a child process (tests/mesa_llm_durable.py).
The child is SIGKILLed in step 2 when every agent of that step has been answered but
before the step was recorded (its ledger line and snapshot unwritten), then
``trio_mesa.resume(DIR)`` in a new child redoes step 2 from the snapshot of step 1,
its calls answered from the run's cassette, and runs step 3. The same run uninterrupted
against a second server is the reference: every outcome, position and memory must be
equal, and the first server must have been billed exactly the requests the
uninterrupted run made, none twice.
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

from fault_injection import chaos_server

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


def test_killed_and_resumed_mesa_llm_run_equals_the_uninterrupted_one_billed_once(
    tmp_path: Path,
) -> None:
    with chaos_server("clean") as reference_server:
        whole = subprocess.run(
            [
                *CHILD,
                "run",
                str(tmp_path / "whole"),
                reference_server.api_base,
                str(AGENTS),
                str(STEPS),
            ],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        assert whole.returncode == 0, whole.stderr[-3000:]
        billed_whole = len(reference_server.records())
    want = _last_json(whole.stdout)
    assert billed_whole == AGENTS * STEPS * 2  # a plan and a tool call per agent-step

    directory = tmp_path / "run"
    with chaos_server("clean") as server:
        child = subprocess.Popen(
            [*CHILD, "run", str(directory), server.api_base, str(AGENTS), str(STEPS), str(KILL_AT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**ENV, "KILL_ME": "1"},
            text=True,
        )
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
            assert json.loads(line) == {"killable": KILL_AT}, child.stderr.read()[-3000:]
            child.send_signal(signal.SIGKILL)
            assert child.wait(timeout=60) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        billed_before = len(server.records())
        assert billed_before == AGENTS * KILL_AT * 2  # step 2 was fully answered
        resumed = subprocess.run(
            [*CHILD, "resume", str(directory)],
            capture_output=True,
            text=True,
            env=ENV,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        billed = len(server.records())
    got = _last_json(resumed.stdout)
    assert got["resumed_after"] == [KILL_AT - 1]
    assert got["steps"] == want["steps"]  # statuses, attempts, usage of every agent-step
    assert _memories(got) == _memories(want)  # final positions and memories
    # Step 2 was redone from the cassette: only step 3 reached the provider again.
    assert billed == billed_whole
