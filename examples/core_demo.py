"""Step 100 simulated LLM agents of all three flavors, a handful failing, and print the report.

Run with ``make demo`` or ``python examples/core_demo.py``. Real time, about a second.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time

import mesa
import trio

import trio_mesa


class RateLimitError(Exception):
    """Shaped like litellm's: HTTP 429 with a retry-after hint."""

    status_code = 429

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"429 Too Many Requests (retry after {retry_after:.0f} s)")
        self.retry_after = retry_after


class Village(mesa.Model):
    """Villagers on a grid who ask a (simulated) LLM what to do each step."""

    def __init__(self, n: int = 100, seed: int = 7) -> None:
        super().__init__(rng=seed)
        self.grid = mesa.space.MultiGrid(10, 10, torus=True)
        self.decisions = 0
        flavors = [AsyncioVillager] * 40 + [TrioVillager] * 30 + [SyncVillager] * 30
        for cls in flavors[:n]:
            agent = cls(self)
            self.grid.place_agent(agent, (self.random.randrange(10), self.random.randrange(10)))
        # A handful fail, each in a way real LLM calls fail.
        faults = ["rate_limit", "malformed_json", "hang", "connection", "rate_limit", "hang"]
        for agent, fault in zip(
            self.random.sample(list(self.agents), len(faults)), faults, strict=True
        ):
            agent.fault = fault


class _Villager(mesa.Agent):
    fault: str | None = None

    def _reply(self) -> dict:
        if self.fault == "rate_limit":
            raise RateLimitError(retry_after=20)
        if self.fault == "connection":
            raise ConnectionResetError("connection reset by peer")
        text = '{"move": [1, 0]' if self.fault == "malformed_json" else '{"move": [1, 0]}'
        return json.loads(text)

    def _act(self, reply: dict) -> str:
        dx, dy = reply["move"]
        x, y = self.pos
        self.model.grid.move_agent(self, self.model.grid.torus_adj((x + dx, y + dy)))
        self.model.decisions += 1
        return f"moved to {self.pos}"

    def _latency(self) -> float:
        return 3600.0 if self.fault == "hang" else random.uniform(0.05, 0.4)


class AsyncioVillager(_Villager):
    """Asyncio-flavored, like every mesa-llm agent (litellm is asyncio)."""

    async def astep(self) -> str:
        await asyncio.sleep(self._latency())
        return self._act(self._reply())


@trio_mesa.trio_native
class TrioVillager(_Villager):
    async def astep(self) -> str:
        await trio.sleep(self._latency())
        return self._act(self._reply())


class SyncVillager(_Villager):
    def step(self) -> str:
        time.sleep(min(self._latency(), 0.4))  # a blocking HTTP call
        if self.fault == "hang":
            raise TimeoutError("read timed out")
        return self._act(self._reply())


def main() -> None:
    logging.basicConfig(level=logging.CRITICAL)  # the report below says it all
    model = Village()
    started = time.perf_counter()
    report = trio_mesa.run_step(model.agents, timeout=1.0, sync_mode="thread", max_concurrency=100)
    wall = time.perf_counter() - started
    try:
        from rich.console import Console
    except ImportError:
        print(report)
    else:
        Console().print(report)
    print(
        f"\n{len(report.ok)} of {len(report)} agents acted ({model.decisions} moves on the grid); "
        f"{len(report.failed)} failed without stopping anyone, in {wall:.2f} s of wall time."
    )
    print("mesa-llm's step_agents_parallel would have aborted the step at the first failure.")


if __name__ == "__main__":
    main()
