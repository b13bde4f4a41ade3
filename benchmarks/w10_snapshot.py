"""Workload 10: what a run directory costs per step (issue 24).

1,000 Trio-flavored agents on a grid, each waiting 100 ms (an LLM call's latency) and
keeping a short memory of its steps, run ``STEPS`` steps of ``trio_mesa.simulate`` with
``checkpoint=DIR, every=1`` in real time. Per step: the snapshot's size and the time to
write it (cloudpickle, write, fsync, rename, fsync of the directory, manifest), against
that step's wall time. ``every=K`` takes a snapshot every K steps: 1/K of this cost per
step, and a kill redoes up to K steps (their calls answered from the cassette).
"""

from __future__ import annotations

import math
import statistics
import tempfile
from pathlib import Path

import trio
from mesa import Agent, Model
from mesa.discrete_space import OrthogonalMooreGrid

import trio_mesa
from benchmarks._harness import Config, Row
from trio_mesa._simulate import runs_by_model

AGENTS = 1_000
LATENCY = 0.1
MEMORY = 5  # steps each agent remembers


class Walker(Agent):
    def __init__(self, model: Model) -> None:
        super().__init__(model)
        self.memory: list[dict[str, object]] = []

    @trio_mesa.trio_native
    async def astep(self) -> None:
        await trio.sleep(self.model.latency)
        self.memory = [
            *self.memory[-(MEMORY - 1) :],
            {"step": self.model.steps, "plan": f"walk north, agent {self.unique_id}"},
        ]


class Town(Model):
    def __init__(self, agents: int = AGENTS, latency: float = LATENCY) -> None:
        super().__init__(rng=1)
        self.latency = latency
        side = math.ceil(math.sqrt(agents))
        self.grid = OrthogonalMooreGrid((side, side), torus=True, random=self.random)
        for i in range(agents):
            Walker(self).cell = self.grid[(i % side, i // side)]

    def step(self) -> None:
        self.agents.shuffle_do("step")


def measure(steps: int, agents: int = AGENTS, latency: float = LATENCY) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        model = Town(agents, latency)
        report = trio_mesa.simulate(model, steps, checkpoint=Path(tmp) / "run", progress=False)
        durable = runs_by_model[model].after_step.__self__  # type: ignore[union-attr]
        written = [(size, seconds) for step, size, seconds in durable.snapshots if step >= 1]
    walls = [s.duration for s in report.steps]
    sizes = [size for size, _ in written]
    times = [seconds for _, seconds in written]
    share = statistics.median(t / w for t, w in zip(times, walls, strict=True)) * 100
    return [
        Row(
            workload="10",
            name=f"snapshot time / step time, {agents} agents x {latency * 1000:g} ms, every=1",
            value=round(share, 2),
            unit="%",
            detail=(
                f"median snapshot {statistics.median(times) * 1000:.1f} ms, "
                f"step {statistics.median(walls) * 1000:.0f} ms; every=K: 1/K of it per step"
            ),
            op="<=",
            target=5.0,
            rounds=steps,
        ),
        Row(
            workload="10",
            name="snapshot size",
            value=round(statistics.median(sizes) / 1024, 1),
            unit="KiB",
            detail=f"{statistics.median(sizes) / agents:.0f} B/agent",
            rounds=steps,
        ),
    ]


def run(config: Config) -> list[Row]:
    return measure(config.rounds(10, quick=2))
