"""SIGKILL at random moments, resumed each time, gives the run that was never stopped.

A fault-injection run with a checkpoint directory runs in a child process
(tests/durable_child.py) that stops at a marker after every agent outcome and every
agent-set step until the parent says go. The parent kills it (SIGKILL) at a seeded
random marker, either at once (the child is mid-step, or has just finished a step and
not yet written its ledger line) or after letting it run on a seeded few milliseconds
(anywhere: in the ledger write, the snapshot, the manifest), then resumes it in a new
child, kills that, and so on; `python -m fault_injection resume DIR` ends the run.
Every step's outcomes in the ledger and the model in the final snapshot must equal an
uninterrupted in-process run's, and the CLI's check against the oracle must pass.
Virtual time (MockClock) throughout; the kill moments decide nothing the assertions
read.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from trio.testing import MockClock

import trio_mesa
from fault_injection import SCENARIOS, FakeLLMModel, expected_run
from trio_mesa._checkpoint import RunDirectory
from trio_mesa._text import exception_message

ROOT = Path(__file__).parent.parent
CHILD = [sys.executable, str(ROOT / "tests" / "durable_child.py")]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
MARKED = {**ENV, "DURABLE_CHILD": "1"}
KILLS_PER_RUN = 7


def outcomes_of(step: trio_mesa.ModelStep) -> list[tuple[Any, ...]]:
    return [
        (
            o.unique_id,
            type(o.agent).__name__,
            o.status,
            None if o.exception is None else type(o.exception).__name__,
            None if o.exception is None else exception_message(o.exception),
            o.result,
            o.attempts,
            o.usage,
            round(o.duration, 9),
        )
        for o in step.outcomes
    ]


def state_of(model: FakeLLMModel) -> dict[str, Any]:
    agents = sorted(model.agents, key=lambda a: a.unique_id)
    return {
        "steps": model.steps,
        "tally": model.tally,
        "work": model.work_snapshot(),
        "cells": {a.unique_id: a.cell.coordinate for a in agents},
        "calls": {a.unique_id: a.llm.calls for a in agents},
        "collected": model.datacollector.get_model_vars_dataframe().to_dict(),
        "random": model.random.getstate(),
    }


def uninterrupted(name: str, seed: int, agents: int, steps: int) -> tuple[Any, FakeLLMModel]:
    scenario = SCENARIOS[name].replace(agents=agents, steps=steps)
    model = FakeLLMModel(expected_run(scenario, seed).plan)
    report = trio_mesa.simulate(
        model,
        steps,
        policy=scenario.policy(),
        clock=MockClock(autojump_threshold=0),
        progress=False,
    )
    return report, model


def snapshot_step(directory: Path) -> int:
    try:
        manifest = json.loads((directory / "manifest.json").read_bytes())
    except FileNotFoundError:
        return 0
    return int(manifest["snapshots"][-1][0])


def run_child(args: list[str], rng: random.Random, markers_left: int) -> tuple[str, int]:
    """Run a child to a seeded random marker and SIGKILL it there (or a few ms later);
    ``("done", n)`` if it finished first. ``n``: markers seen."""
    target = rng.randint(1, max(1, markers_left))
    late = rng.random() < 0.5
    delay = rng.uniform(0.0, 0.01)
    child = subprocess.Popen(
        [*CHILD, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=MARKED,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    seen = 0
    try:
        for line in child.stdout:
            if line.startswith("done"):
                child.wait(timeout=60)
                return "done", seen
            assert line.startswith("marker "), line
            seen += 1
            if seen < target:
                child.stdin.write("\n")
                child.stdin.flush()
                continue
            if late:
                # Let it run on to its next marker at most (where it waits again), and
                # kill it a seeded moment later: in an agent, a ledger write, a
                # snapshot, the manifest... (where is not asserted).
                child.stdin.write("\n")
                child.stdin.flush()
                time.sleep(delay)
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=60)
            assert child.returncode == -signal.SIGKILL
            return "killed", seen
        child.wait(timeout=60)
        raise AssertionError(f"the child ended without 'done' (exit {child.returncode})")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


@pytest.mark.parametrize(
    ("name", "seed", "agents", "steps"),
    [("flaky", 3, 12, 6), ("mixed-flavors", 5, 9, 5), ("hung-agent", 2, 8, 5)],
)
def test_sigkill_at_random_moments_then_resume_equals_the_uninterrupted_run(
    tmp_path: Path, name: str, seed: int, agents: int, steps: int
) -> None:
    want, model = uninterrupted(name, seed, agents, steps)
    directory = tmp_path / "run"
    rng = random.Random(f"{name}/{seed}")
    args = ["run", str(directory), name, str(seed), str(agents), str(steps)]
    kills = 0
    for _ in range(KILLS_PER_RUN):
        # Markers left from the newest snapshot: every agent's outcome and the step's
        # report, per step still to run (a step the ledger has past it is redone).
        # Within the next two steps, so that the kills spread over the whole run.
        left = min(steps - snapshot_step(directory), 2) * (agents + 1)
        how, _ = run_child(args, rng, left)
        assert how == "killed"
        kills += 1
        args = ["resume", str(directory)]
        if not (directory / "manifest.json").exists():
            args = ["run", str(directory), name, str(seed), str(agents), str(steps)]
            for leftover in directory.iterdir():  # killed before the run began
                leftover.unlink()
    assert kills == KILLS_PER_RUN  # 3 runs: 21 kill points
    done = subprocess.run(
        [sys.executable, "-m", "fault_injection", "resume", str(directory), "--json"],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        env=ENV,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["mismatches"] == []
    assert len(result["resumed_after"]) == kills  # each kill, then resumed
    run_dir = RunDirectory.open("test", directory)
    got = run_dir.ledger_steps(steps)
    assert [s.step for s in got] == list(range(1, steps + 1))
    for mine, theirs in zip(got, want.steps, strict=True):
        assert outcomes_of(mine) == outcomes_of(theirs), mine.step
    final_step, final_model, _ = run_dir.newest_snapshot()
    assert final_step == steps
    assert state_of(final_model) == state_of(model)
    expected = expected_run(SCENARIOS[name].replace(agents=agents, steps=steps), seed)
    for step, exp in zip(got, expected.steps, strict=True):
        assert {o.unique_id: o.status for o in step.outcomes} == exp.statuses
