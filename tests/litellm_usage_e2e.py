"""Plain litellm agents against the chaos server, stepped on both hosts and in threads.

Run in a subprocess by ``tests/test_usage.py`` (litellm's import is slow and leaves
threads and callbacks behind). Each agent makes three calls whose prompts grow with its
``unique_id``; prints, per run, every agent's ledger (calls, prompt tokens, completion
tokens, cost) and the server's request count when the run ended.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.request

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENAI_API_KEY", "sk-chaos-not-a-real-key")

import litellm
from mesa import Agent, Model

import trio_mesa

litellm.suppress_debug_info = True
API_BASE = sys.argv[1]
AGENTS = 8
CALLS = 3


def _messages(agent: Agent, n: int) -> list[dict[str, str]]:
    words = " ".join(["word"] * (agent.unique_id * 3 + n))
    return [{"role": "user", "content": f"agent_unique_id: {agent.unique_id} {words}"}]


class AioCaller(Agent):
    async def astep(self) -> None:
        for n in range(CALLS):
            await litellm.acompletion(
                model="openai/chaos", api_base=API_BASE, messages=_messages(self, n)
            )


class SyncCaller(Agent):
    def step(self) -> None:
        for n in range(CALLS):
            litellm.completion(model="openai/chaos", api_base=API_BASE, messages=_messages(self, n))


def _requests() -> int:
    with urllib.request.urlopen(API_BASE.removesuffix("/v1") + "/_chaos/stats") as reply:
        return json.load(reply)["requests"]


def _run(name: str, report: trio_mesa.StepReport) -> dict:
    assert report.all_ok, str(report)
    usage = {
        o.unique_id: [o.usage.calls, o.usage.prompt_tokens, o.usage.completion_tokens, o.usage.cost]
        for o in report
    }
    return {"name": name, "usage": usage, "cost": None, "requests": _requests()}


def main() -> None:
    runs = []
    model = Model(rng=1)
    for _ in range(AGENTS):
        AioCaller(model)
    runs.append(_run("trio", trio_mesa.run_step(model.agents, timeout=60)))
    runs.append(_run("asyncio", asyncio.run(trio_mesa.aio_step_agents(model.agents, timeout=60))))
    threads = Model(rng=2)
    for _ in range(AGENTS):
        SyncCaller(threads)
    runs.append(_run("threads", trio_mesa.run_step(threads.agents, sync_mode="thread")))
    print(json.dumps({"agents": AGENTS, "runs": runs}))


if __name__ == "__main__":
    main()
