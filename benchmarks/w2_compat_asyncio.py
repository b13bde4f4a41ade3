"""Workload 2: ``trio_mesa.compat.step_agents_parallel`` on an asyncio host vs asyncio.gather.

N agents whose ``astep`` is ``await asyncio.sleep(latency)``, stepped alternately by
``asyncio.gather(*(a.astep() ...), return_exceptions=True)`` and by the compat
``step_agents_parallel`` (the Trio core in guest mode on the same running loop), each
sample in a fresh ``asyncio.run``. Folds in the step half of
``benchmarks/bench_compat_asyncio.py`` (medians of alternated rounds instead of bests).
"""

from __future__ import annotations

import asyncio
import time

import mesa

from benchmarks._harness import Config, Row, alternate, ratio_row


def contenders(n: int, latency: float) -> dict[str, object]:
    from trio_mesa.compat import step_agents_parallel

    class SleepingAgent(mesa.Agent):
        async def astep(self) -> None:
            await asyncio.sleep(latency)

    model = mesa.Model(rng=1)
    agents = [SleepingAgent(model) for _ in range(n)]

    async def gather() -> float:
        t = time.perf_counter()
        await asyncio.gather(*(a.astep() for a in agents), return_exceptions=True)
        return time.perf_counter() - t

    async def compat() -> float:
        t = time.perf_counter()
        report = await step_agents_parallel(agents)
        elapsed = time.perf_counter() - t
        assert len(report.ok) == n, report
        return elapsed

    return {
        "asyncio.gather": lambda: asyncio.run(gather()),
        "compat step_agents_parallel": lambda: asyncio.run(compat()),
    }


def measure(n: int, latency: float, rounds: int, *, warmup: int = 1) -> list[Row]:
    samples = alternate(contenders(n, latency), rounds, warmup=warmup)
    row = ratio_row(
        "2",
        f"{n:,} asyncio agents x {latency * 1000:.0f} ms: compat step_agents_parallel"
        " / asyncio.gather",
        samples,
        "compat step_agents_parallel",
        "asyncio.gather",
        op="<=",
        target=1.5,
    )
    m, b = row.medians.values()
    extra = Row(
        workload="2",
        name="  the same, cost over gather per agent",
        value=(m - b) / n * 1e6,
        unit="us/agent",
        detail=f"{m * 1000:.1f} - {b * 1000:.1f} ms over {n:,}",
        rounds=row.rounds,
    )
    return [row, extra]


def run(config: Config) -> list[Row]:
    return measure(10_000, 0.05, config.rounds(7, quick=2))
