"""The mesa-llm 0.3.2 anchor, in its own process: importing mesa_llm patches Mesa.

``python -m benchmarks._mesa_llm_anchor`` reads commands from stdin, one a line:
``multithreaded N LATENCY`` or ``parallel N LATENCY``, steps N fresh sync agents (each
``step()`` is ``time.sleep(LATENCY)``) with mesa-llm's function of that name, and prints
the seconds it took. Staying up between commands lets the caller alternate it with its
own contender, round by round.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import mesa
from mesa_llm import parallel_stepping


class BlockingAgent(mesa.Agent):
    latency = 0.2

    def step(self) -> None:
        time.sleep(self.latency)


def main() -> None:
    model = mesa.Model(rng=1)
    print("ready", flush=True)
    for line in sys.stdin:
        kind, n, latency = line.split()
        BlockingAgent.latency = float(latency)
        agents = [BlockingAgent(model) for _ in range(int(n))]
        t = time.perf_counter()
        if kind == "multithreaded":
            parallel_stepping.step_agents_multithreaded(agents)
        else:
            asyncio.run(parallel_stepping.step_agents_parallel(agents))
        print(time.perf_counter() - t, flush=True)
        for agent in agents:
            agent.remove()


if __name__ == "__main__":
    main()
