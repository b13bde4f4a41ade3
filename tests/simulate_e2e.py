"""Real mesa-llm agents run through `trio_mesa.simulate` against the chaos server.

Run as a script in a subprocess by ``tests/test_simulate_e2e.py`` (importing mesa_llm
patches Mesa's AgentSet for the whole process). A `Town` of ``agents`` real ``LLMAgent``
walkers (from ``tests/mesa_llm_e2e.py``) whose own ``step()`` calls
``self.agents.shuffle_do("step")`` is run ``steps`` times by ``simulate`` on the Trio
host (one trio-asyncio loop for the whole run). Prints one JSON line: the run's
per-agent ledger (`RunReport.usage_by_agent`), its counts and its step count.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys

from mesa_llm_e2e import Town, _warm_up  # the walkers of the other e2e tests

import trio_mesa


class SteppingTown(Town):
    def step(self) -> None:
        self.agents.shuffle_do("step")


def main() -> int:
    api_base, agents, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    logging.getLogger("trio_mesa").addHandler(logging.NullHandler())
    logging.getLogger("trio_mesa").propagate = False
    logging.getLogger("mesa_llm").setLevel(logging.CRITICAL)
    asyncio.run(_warm_up(api_base))  # billed to agent 0, which is not one of the town's
    model = SteppingTown(agents, api_base)
    run = trio_mesa.simulate(model, steps, timeout=60, progress=False)
    ledger = {
        uid: [u.calls, u.prompt_tokens, u.completion_tokens]
        for uid, u in run.usage_by_agent().items()
    }
    out = {
        "steps": len(run.steps),
        "agent_steps": run.agent_steps,
        "counts": {s.value: n for s, n in run.counts.items()},
        "reports_per_step": [len(s.reports) for s in run.steps],
        "ledger": ledger,
        "summary": str(run),
    }
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
