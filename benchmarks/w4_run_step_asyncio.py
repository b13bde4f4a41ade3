"""Workload 4: 1,000 asyncio agents x 100 ms through the synchronous ``trio_mesa.run_step``.

Each sample is the wall time of one ``run_step(agents)`` call from plain sync code: it
starts a Trio run, opens a trio-asyncio loop for the asyncio-flavored agents, steps them
all and closes everything. The floor is the agents' own 100 ms. trio-asyncio is imported
by the first ``run_step`` (warm-up). For context, in a process that never imports
trio-asyncio: the same step by ``asyncio.run(trio_mesa.aio_step_agents(agents))`` (guest
mode) alternated with ``asyncio.run(asyncio.gather(...))``, both timed around
``asyncio.run`` as ``run_step`` is; and the least any runner of asyncio agents can do,
``asyncio.run`` of eager tasks (each runs to its first ``await`` as it is created, so
its 100 ms start at once) awaited with ``asyncio.wait``: no isolation, no outcomes, no
Trio. On this 2-core VM that minimum alone measures about 1.15x (about 10.7 ms to start
1,000 sleeping coroutines, 11 us each, before the last one's 100 ms even begins), so
the 1.15x target leaves no room for any bookkeeping, and the Trio host's own fixed cost
(a Trio run and a trio-asyncio loop opened and closed, no agents; measured here too)
comes on top of it: see benchmarks/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import mesa
import trio

import trio_mesa
from benchmarks._harness import Config, Row, alternate, fmt_s, python_child, timed


def make_agents(n: int, latency: float) -> list[mesa.Agent]:
    class SleepingAgent(mesa.Agent):
        async def astep(self) -> None:
            await asyncio.sleep(latency)

    model = mesa.Model(rng=1)
    return [SleepingAgent(model) for _ in range(n)]


def run_step_contenders(n: int, latency: float) -> dict[str, object]:
    agents = make_agents(n, latency)

    def run_step() -> float:
        t = time.perf_counter()
        report = trio_mesa.run_step(agents)
        elapsed = time.perf_counter() - t
        assert len(report.ok) == n, report
        return elapsed

    async def host_only() -> None:
        # What run_step pays before and after any agent: a Trio run and a trio-asyncio
        # loop opened and closed (trio_host_loop, as run_step opens it).
        from trio_mesa._aio_bridge import trio_host_loop

        async with trio_host_loop():
            pass

    return {
        "run_step": run_step,
        "trio host, no agents": lambda: timed(lambda: trio.run(host_only)),
    }


def asyncio_host_contenders(n: int, latency: float) -> dict[str, object]:
    agents = make_agents(n, latency)

    async def step() -> None:
        report = await trio_mesa.aio_step_agents(agents)
        assert len(report.ok) == n, report

    async def gather() -> None:
        await asyncio.gather(*(a.astep() for a in agents), return_exceptions=True)

    async def eager_minimum() -> None:
        loop = asyncio.get_running_loop()
        tasks = [asyncio.Task(a.astep(), loop=loop, eager_start=True) for a in agents]
        await asyncio.wait(tasks)

    return {
        "asyncio.run(aio_step_agents)": lambda: timed(lambda: asyncio.run(step())),
        "asyncio.run(gather)": lambda: timed(lambda: asyncio.run(gather())),
        "asyncio.run(eager tasks)": lambda: timed(lambda: asyncio.run(eager_minimum())),
    }


CONTEXT = {
    "run_step": "trio host, via trio-asyncio",
    "asyncio.run(aio_step_agents)": "asyncio host, guest mode; own process",
    "asyncio.run(gather)": "raw asyncio; own process",
    "asyncio.run(eager tasks)": "the minimum: raw eager tasks, no bookkeeping; own process",
}


def measure(n: int, latency: float, rounds: int, *, warmup: int = 1) -> list[Row]:
    samples = alternate(run_step_contenders(n, latency), rounds, warmup=warmup)
    # trio-asyncio, imported by run_step, slows every asyncio loop in the process: the
    # asyncio-host contenders run in a process of their own that never imports it.
    code = (
        "import json; from benchmarks._harness import alternate; "
        "from benchmarks.w4_run_step_asyncio import asyncio_host_contenders as c; "
        f"print(json.dumps(alternate(c({n}, {latency}), {rounds}, warmup={warmup})))"
    )
    samples.update(json.loads(python_child(["-c", code]).stdout.splitlines()[-1]))
    rows = []
    for name, how in CONTEXT.items():
        median = statistics.median(samples[name])
        target = 1.15 if name == "run_step" else None
        rows.append(
            Row(
                workload="4",
                name=f"{n:,} asyncio agents x {latency * 1000:.0f} ms: {name} wall / "
                f"{latency * 1000:.0f} ms floor ({how})",
                value=median / latency,
                unit="x",
                detail=f"{fmt_s(median)} vs {fmt_s(latency)}",
                op="<=" if target else None,
                target=target,
                rounds=len(samples[name]),
                medians={name: median, "floor": latency},
                samples={name: samples[name]},
            )
        )
    fixed = statistics.median(samples["trio host, no agents"])
    rows.insert(
        1,
        Row(
            workload="4",
            name="  of which the Trio host alone: trio.run + a trio-asyncio loop opened and "
            "closed, no agents",
            value=fixed / latency,
            unit="x",
            detail=f"{fmt_s(fixed)} of the floor's {fmt_s(latency)}",
            rounds=len(samples["trio host, no agents"]),
            medians={"trio host, no agents": fixed},
            samples={"trio host, no agents": samples["trio host, no agents"]},
        ),
    )
    return rows


def run(config: Config) -> list[Row]:
    return measure(1_000, 0.1, config.rounds(9, quick=2))
