"""Done when (issue 11): 20 real mesa-llm agents run 5 steps through `trio_mesa.simulate`
against the chaos server, and the run's per-agent token ledger equals what the server
billed, agent by agent (the run happens in a subprocess: see ``simulate_e2e.py``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HELPER = Path(__file__).with_name("simulate_e2e.py")
AGENTS, STEPS = 20, 5


def test_the_run_ledger_equals_what_the_chaos_server_billed() -> None:
    from fault_injection import chaos_server

    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    with chaos_server("clean", seed=11) as server:
        proc = subprocess.run(
            [sys.executable, str(HELPER), server.api_base, str(AGENTS), str(STEPS)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr[-5000:]
        assert server.wait_idle(10)
        records = server.records()
    run = json.loads(proc.stdout.strip().splitlines()[-1])
    assert run["steps"] == STEPS
    assert run["reports_per_step"] == [1] * STEPS
    assert run["agent_steps"] == AGENTS * STEPS
    assert run["counts"]["ok"] == AGENTS * STEPS, run["summary"]
    billed: dict[int, list[int]] = {}
    for r in records:
        assert r.agent is not None and r.outcome == "sent"
        if r.agent == 0:  # the warm-up call, made before the run
            continue
        b = billed.setdefault(r.agent, [0, 0, 0])
        b[0] += 1
        b[1] += r.prompt_tokens
        b[2] += r.completion_tokens
    ledger = {int(k): v for k, v in run["ledger"].items()}
    assert len(ledger) == AGENTS
    assert ledger == billed
    # two requests per agent per step (CoT: a plan, then a tool call)
    assert all(v[0] == 2 * STEPS for v in ledger.values())
