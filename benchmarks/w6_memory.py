"""Workload 6: peak RSS growth per agent of one 100,000-agent step.

Each sample is a fresh process that makes the agents, warms the stepping path up on a
few other agents, collects garbage, resets the kernel's peak-RSS mark
(``/proc/self/clear_refs``), steps once and reads the new peak (``VmHWM``): growth is
that peak minus the RSS just before the step, divided by the number of agents. The
step's report is kept alive until the peak is read, as a user would keep it.

Agents are no-op Trio-flavored (``async def astep(): pass``) for the target, stepped by
``trio_mesa.step_agents(timeout=60, max_concurrency=N)`` and, for context, by a bare
``trio.open_nursery()``. For context too: sleeping agents, each waiting on an event
that is set once all N are blocked, so all N are alive at once (as when every agent
waits on its LLM).
"""

from __future__ import annotations

import json
import statistics

from benchmarks._harness import Config, Row, alternate, python_child

PROBE = """
import gc, json, sys
import mesa, trio, trio.testing
import trio_mesa

contender, behaviour, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
release = None  # a trio.Event per step: sleeping agents wait on it

class Agent(mesa.Agent):
    if behaviour == "noop":
        @trio_mesa.trio_native
        async def astep(self):
            pass
    else:
        @trio_mesa.trio_native
        async def astep(self):
            await release.wait()

def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

async def bare(agents):
    async with trio.open_nursery() as nursery:
        for agent in agents:
            nursery.start_soon(agent.astep)

async def releaser():
    # Once every agent is waiting (all N alive at once), let them finish.
    await trio.testing.wait_all_tasks_blocked()
    release.set()

async def run(agents):
    global release
    release = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(releaser)
        if contender == "bare":
            await bare(agents)
            return None
        return await trio_mesa.step_agents(agents, timeout=60, max_concurrency=len(agents))

def step(agents):
    return trio.run(run, agents)

model = mesa.Model(rng=1)
step([Agent(model) for _ in range(10)])
agents = [Agent(model) for _ in range(n)]
gc.collect()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak-RSS mark to the current RSS
before = status("VmRSS")
result = step(agents)
peak = status("VmHWM")
print(json.dumps({"before": before, "peak": peak, "per_agent": (peak - before) / n}))
"""

CONTENDERS = {
    "trio-mesa no-op": ("trio-mesa", "noop"),
    "bare nursery no-op": ("bare", "noop"),
    "trio-mesa sleeping": ("trio-mesa", "sleep"),
    "bare nursery sleeping": ("bare", "sleep"),
}


def probe(contender: str, behaviour: str, n: int) -> float:
    out = python_child(["-c", PROBE, contender, behaviour, str(n)]).stdout
    return json.loads(out)["per_agent"]


def measure(n: int, rounds: int) -> list[Row]:
    samples = alternate(
        {name: (lambda c=c, b=b: probe(c, b, n)) for name, (c, b) in CONTENDERS.items()},
        rounds,
        warmup=0,
    )
    medians = {name: statistics.median(s) for name, s in samples.items()}
    rows = []
    for name in CONTENDERS:
        target = 2048.0 if name == "trio-mesa no-op" else None
        rows.append(
            Row(
                workload="6",
                name=f"{n:,} agents: peak RSS growth per agent, {name}",
                value=medians[name],
                unit="B/agent",
                detail=f"{medians[name] * n / 2**20:.1f} MiB over {n:,}",
                op="<=" if target else None,
                target=target,
                rounds=rounds,
                medians={name: medians[name]},
                samples={name: samples[name]},
            )
        )
    return rows


def run(config: Config) -> list[Row]:
    if config.quick:
        return measure(10_000, config.rounds(3, quick=1))
    return measure(100_000, config.rounds(2))
