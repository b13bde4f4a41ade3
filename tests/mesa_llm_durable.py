"""Child process of tests/test_e2e_durable_mesa_llm.py: real mesa-llm agents in a run
kept by ``trio_mesa.simulate(checkpoint=DIR)``, that the test SIGKILLs and resumes.

    python tests/mesa_llm_durable.py run DIR API_BASE AGENTS STEPS [KILL_AT_STEP [OUTCOMES]]
    python tests/mesa_llm_durable.py resume DIR

With ``KILL_AT_STEP`` (and ``KILL_ME=1`` in the environment), the child prints
``{"killable": step, ...}`` in that step, after ``OUTCOMES`` agents' outcomes (other
agents' requests in flight) or, without it, when every agent has been answered (the
report is in, its ledger line and snapshot not yet written), and waits there for a line
on stdin: the test kills it then. At the end it prints one
JSON document: every step's outcomes and every agent's final position and memory.
(Importing mesa_llm patches Mesa for the whole process: never in the test process.)
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENAI_API_KEY", "sk-chaos-not-a-real-key")

from mesa_llm_e2e import Town, _final_view

import trio_mesa


class DurableTown(Town):
    """`Town` with a model step: every agent once, through ``shuffle_do`` (which
    ``simulate`` steps concurrently)."""

    def step(self) -> None:
        self.agents.shuffle_do("step")


class StopAt:
    """A hook: in step ``step``, after ``outcomes`` agents' outcomes (``None``: at the
    step's report, every agent answered), say so on stdout and wait (to be killed).
    Active only in a child started with ``KILL_ME=1`` (not in the resumed run)."""

    def __init__(self, step: int | None, outcomes: int | None) -> None:
        self.step = step
        self.outcomes = outcomes
        self.reports = 0
        self.seen = 0

    def on_outcome(self, outcome: trio_mesa.AgentOutcome) -> None:
        if self.reports + 1 == self.step and self.outcomes is not None:
            self.seen += 1
            if self.seen == self.outcomes:
                self._wait(f"after {self.seen} outcomes")

    def on_report(self, report: trio_mesa.StepReport) -> None:
        self.reports += 1
        if self.reports == self.step and self.outcomes is None:
            self._wait("at its report")

    def _wait(self, where: str) -> None:
        if os.environ.get("KILL_ME") != "1":
            return
        sys.stdout.write(json.dumps({"killable": self.step, "where": where}) + "\n")
        sys.stdout.flush()
        sys.stdin.readline()


def summary(report: trio_mesa.RunReport, model: Any) -> dict[str, Any]:
    return {
        "resumed_after": list(report.resumed_after),
        "steps": [
            [
                {
                    "unique_id": o.unique_id,
                    "status": o.status.value,
                    "exception": None if o.exception is None else type(o.exception).__name__,
                    "attempts": o.attempts,
                    "usage": [o.usage.calls, o.usage.prompt_tokens, o.usage.completion_tokens],
                }
                for o in sorted(s.outcomes, key=lambda o: o.unique_id)
            ]
            for s in report.steps
        ],
        "agents": {str(a.unique_id): _final_view(a) for a in model.agents},
    }


def main(argv: list[str]) -> None:
    logging.getLogger("trio_mesa").addHandler(logging.NullHandler())
    logging.getLogger("trio_mesa").propagate = False
    logging.getLogger("mesa_llm").setLevel(logging.CRITICAL)
    if argv[0] == "run":
        directory, api_base, agents, steps = argv[1:5]
        kill_at = int(argv[5]) if len(argv) > 5 else None
        outcomes = int(argv[6]) if len(argv) > 6 else None
        model = DurableTown(int(agents), api_base)
        report = trio_mesa.simulate(
            model,
            int(steps),
            checkpoint=directory,
            timeout=30,
            hooks=(StopAt(kill_at, outcomes),),
            progress=False,
        )
    else:
        from trio_mesa._simulate import runs_by_model

        report = trio_mesa.resume(argv[1])
        (model,) = [m for m, run in runs_by_model.items() if run.checkpoint == argv[1]]
    sys.stdout.write(json.dumps(summary(report, model)) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
