"""The child process of tests/test_durable_kill.py: a checkpointed fault-injection run
that stops at every marker until the parent says go, so the parent can SIGKILL it at a
chosen point: mid-step (after an agent's outcome) or between steps (after a step's
report, before or while its ledger line and snapshot are written).

    python tests/durable_child.py run DIR SCENARIO SEED AGENTS STEPS
    python tests/durable_child.py resume DIR

Each marker is a line ``marker N WHAT`` on stdout; the child then reads one line from
stdin (end of file: run on freely). ``done`` is printed when the run ends.
"""

from __future__ import annotations

import os
import sys

from trio.testing import MockClock

import trio_mesa
from fault_injection import SCENARIOS, FakeLLMModel, expected_run


class Markers:
    """An outcome hook that prints a marker and waits for the parent's go (it is saved
    with the run's policy, so a resumed child stops at markers too)."""

    def __init__(self) -> None:
        self.n = 0

    def __getstate__(self) -> dict[str, int]:
        return {"n": 0}

    def on_outcome(self, outcome: trio_mesa.AgentOutcome) -> None:
        self._mark(f"outcome {outcome.unique_id}")

    def on_report(self, report: trio_mesa.StepReport) -> None:
        self._mark(f"report {report.step}")

    def _mark(self, what: str) -> None:
        # Hooks are called on the Trio thread, one at a time. Inert outside the test's
        # children (`python -m fault_injection resume` loads this hook with the policy).
        if os.environ.get("DURABLE_CHILD") != "1":
            return
        self.n += 1
        sys.stdout.write(f"marker {self.n} {what}\n")
        sys.stdout.flush()
        sys.stdin.readline()


def main(argv: list[str]) -> None:
    clock = MockClock(autojump_threshold=0)
    if argv[0] == "run":
        directory, name, seed, agents, steps = argv[1:]
        scenario = SCENARIOS[name].replace(agents=int(agents), steps=int(steps))
        plan = expected_run(scenario, int(seed)).plan
        model = FakeLLMModel(plan)
        model.cli_run = {"real_time": False}  # `python -m fault_injection resume` reads it
        policy = scenario.policy()
        policy = policy.replace(hooks=(*policy.hooks, Markers()))
        trio_mesa.simulate(
            model, scenario.steps, policy=policy, clock=clock, checkpoint=directory, progress=False
        )
    else:
        trio_mesa.resume(argv[1], clock=clock)
    sys.stdout.write("done\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
