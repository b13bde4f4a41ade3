"""Workload 1: no-op Trio-flavored agents, the cost trio-mesa adds per agent on a Trio host.

Contenders, alternated round by round, each timed inside its own event loop run:

- ``bare nursery``: ``trio.open_nursery()`` and ``start_soon(agent.astep)`` per agent,
  no isolation, no timeout, no limit.
- ``trio-mesa max_concurrency``: ``trio_mesa.step_agents(agents, timeout=60,
  max_concurrency=N)``: isolation, a per-agent timeout and the step's own limit.
- ``trio-mesa limiter``: the same with ``limiter=trio.CapacityLimiter(N)`` shared across
  steps instead (the path a user's own limiter takes).
- ``bare nursery + limiter``: the bare nursery honouring that same limiter in the
  cheapest way Trio's public API allows: the spawner takes a token per task
  (``acquire_on_behalf_of_nowait``) and the task gives it back in a ``finally``
  (``release_on_behalf_of``). Any use of a ``trio.CapacityLimiter`` pays this; the
  release alone (``ParkingLot.unpark``) costs about 3 us per agent here. So the
  limiter row's target is measured against this anchor; against the bare nursery it
  is shown as context.
- ``asyncio.gather``: ``asyncio.gather(*(a.astep() ...), return_exceptions=True)`` over
  asyncio-flavored no-op agents, for context.

N is the number of agents, so the limit is checked for every agent but never waits.
Agents are a plain list (no shuffle): the order Mesa would shuffle is not the point here.
"""

from __future__ import annotations

import asyncio
import time

import mesa
import trio

import trio_mesa
from benchmarks._harness import Config, Row, alternate, ratio_row


class NoopTrioAgent(mesa.Agent):
    @trio_mesa.trio_native
    async def astep(self) -> None:
        pass


class NoopAsyncioAgent(mesa.Agent):
    async def astep(self) -> None:
        pass


async def _holding_token(limiter: trio.CapacityLimiter, agent: NoopTrioAgent) -> None:
    try:
        await agent.astep()
    finally:
        limiter.release_on_behalf_of(agent)


def contenders(n: int) -> dict[str, object]:
    model = mesa.Model(rng=1)
    trio_agents = [NoopTrioAgent(model) for _ in range(n)]
    aio_agents = [NoopAsyncioAgent(model) for _ in range(n)]
    limiter = trio.CapacityLimiter(n)

    async def bare() -> float:
        t = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for agent in trio_agents:
                nursery.start_soon(agent.astep)
        return time.perf_counter() - t

    async def bare_limited() -> float:
        t = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for agent in trio_agents:
                limiter.acquire_on_behalf_of_nowait(agent)  # never waits: N tokens
                nursery.start_soon(_holding_token, limiter, agent)
        return time.perf_counter() - t

    async def ours(**options: object) -> float:
        t = time.perf_counter()
        report = await trio_mesa.step_agents(trio_agents, timeout=60, **options)
        elapsed = time.perf_counter() - t
        assert len(report.ok) == n, report
        return elapsed

    async def gather() -> float:
        t = time.perf_counter()
        await asyncio.gather(*(a.astep() for a in aio_agents), return_exceptions=True)
        return time.perf_counter() - t

    return {
        "bare nursery": lambda: trio.run(bare),
        "trio-mesa max_concurrency": lambda: trio.run(lambda: ours(max_concurrency=n)),
        "trio-mesa limiter": lambda: trio.run(lambda: ours(limiter=limiter)),
        "bare nursery + limiter": lambda: trio.run(bare_limited),
        "asyncio.gather": lambda: asyncio.run(gather()),
    }


def measure(n: int, rounds: int, *, warmup: int = 1) -> list[Row]:
    samples = alternate(contenders(n), rounds, warmup=warmup)
    w = "1"
    return [
        ratio_row(w, f"{n:,} no-op: trio-mesa max_concurrency / bare nursery", samples,
                  "trio-mesa max_concurrency", "bare nursery", op="<=", target=1.3),
        ratio_row(w, f"{n:,} no-op: trio-mesa limiter / bare nursery + the same limiter",
                  samples, "trio-mesa limiter", "bare nursery + limiter", op="<=", target=1.3),
        ratio_row(w, f"{n:,} no-op: trio-mesa limiter / bare nursery", samples,
                  "trio-mesa limiter", "bare nursery"),
        ratio_row(w, f"{n:,} no-op: bare nursery + limiter / bare nursery (Trio's limiter)",
                  samples, "bare nursery + limiter", "bare nursery"),
        ratio_row(w, f"{n:,} no-op: trio-mesa max_concurrency / asyncio.gather", samples,
                  "trio-mesa max_concurrency", "asyncio.gather"),
        ratio_row(w, f"{n:,} no-op: bare nursery / asyncio.gather", samples,
                  "bare nursery", "asyncio.gather"),
    ]  # fmt: skip


def run(config: Config) -> list[Row]:
    if config.quick:
        return measure(10_000, config.rounds(7, quick=2))
    return measure(10_000, config.rounds(7)) + measure(100_000, config.rounds(5))
