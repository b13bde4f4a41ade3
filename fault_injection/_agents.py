"""Fake LLM agents in the three flavors, and `FakeLLMModel`, the Mesa model they live in.

Every agent is a real ``mesa.discrete_space.CellAgent`` on a torus
``OrthogonalMooreGrid``. A step asks its `FakeLLM` for a tool call, parses it and, only
on success, moves one cell as told and records the work: ``agent.work_steps`` gets the
model step and ``model.tally`` grows by one. So lost work (an OK outcome without a
record) and doubled work (two records in one step, or a record for an agent that did not
end OK) are both visible. While an agent's code runs, its ``unique_id`` is in
``model.running``; asyncio-flavored steps also record their asyncio task in
``model.aio_tasks``, so a checker can prove nothing is left running after a step.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import mesa
import trio
from mesa.discrete_space import Cell, CellAgent, OrthogonalMooreGrid

from trio_mesa import Flavor, trio_native

from ._client import FakeLLM, FakeReply, parse_tool_call
from ._plan import FaultPlan
from ._quota import TokenBucket
from ._scenario import Scenario


class FakeLLMAgent(CellAgent):
    """Base of the fake agents: one fake LLM call per step, then act on the reply."""

    flavor: Flavor
    # Mesa's CellAgent property (``Cell | None``), declared for the type checker only:
    # mesa ships no types, and FakeLLMModel puts every agent on a cell it never leaves.
    cell: Cell

    def __init__(self, model: FakeLLMModel, llm: FakeLLM) -> None:
        super().__init__(model)
        self.llm = llm
        self.work_steps: list[int] = []

    def prompt(self) -> str:
        return f"You are agent {self.unique_id} at {self.cell.coordinate}. Choose a move."

    def act(self, reply: FakeReply) -> None:
        """Parse the reply's tool call and carry it out (raises on a malformed reply)."""
        tool, args = parse_tool_call(reply)
        model = self.model
        x, y = self.cell.coordinate
        w, h = model.grid.dimensions
        if tool == "move":
            self.cell = model.grid[((x + int(args["dx"])) % w, (y + int(args["dy"])) % h)]
        self.work_steps.append(model.steps)
        model.tally += 1


class AsyncioLLMAgent(FakeLLMAgent):
    """An asyncio-flavored agent (like every mesa-llm ``LLMAgent``): ``async def astep``."""

    flavor = Flavor.ASYNCIO

    async def astep(self) -> str:
        running = self.model.running
        running.add(self.unique_id)
        try:
            self.model.aio_tasks.append(asyncio.current_task())
            reply = await self.llm.acompletion(self.prompt())
            self.act(reply)
            return reply.content
        finally:
            running.discard(self.unique_id)


@trio_native
class TrioLLMAgent(FakeLLMAgent):
    """A Trio-flavored agent (marked ``@trio_native``)."""

    flavor = Flavor.TRIO

    async def astep(self) -> str:
        running = self.model.running
        running.add(self.unique_id)
        try:
            reply = await self.llm.trio_acompletion(self.prompt())
            self.act(reply)
            return reply.content
        finally:
            running.discard(self.unique_id)


class SyncLLMAgent(FakeLLMAgent):
    """A sync agent: plain ``def step``."""

    flavor = Flavor.SYNC

    def step(self) -> str:  # type: ignore[override]
        running = self.model.running
        running.add(self.unique_id)
        try:
            reply = self.llm.completion(self.prompt())
            self.act(reply)
            return reply.content
        finally:
            running.discard(self.unique_id)


AGENT_CLASSES: dict[Flavor, type[FakeLLMAgent]] = {
    Flavor.ASYNCIO: AsyncioLLMAgent,
    Flavor.TRIO: TrioLLMAgent,
    Flavor.SYNC: SyncLLMAgent,
}


class FakeLLMModel(mesa.Model):
    """A Mesa model of ``plan.agents`` fake LLM agents on a square torus grid.

    Agents get ``unique_id`` 1..N in order and the flavor the plan assigns; agent i starts
    on cell ``((i-1) % w, (i-1) // w)``. ``rng`` seeds Mesa's RNGs (``model.random``
    decides the shuffled order agents start in each step).

    Args:
        plan: the `FaultPlan` every agent's `FakeLLM` carries out.
        scale: seconds slept per model second of planned latency (1.0 under virtual time).
        rng: Mesa's seed; defaults to the plan's seed.
        clock: the run's clock in seconds (``trio.current_time`` on a Trio host), for the
            scenario's quota; read at construction, so build the model inside the run.

    Attributes:
        quota: the provider's `TokenBucket` (``None`` without ``scenario.quota``), on
            ``clock`` divided by ``scale``: model seconds, like the quota's rate.
        tally: successful agent steps so far (each OK outcome adds exactly one).
        running: the ``unique_id`` of every agent whose step code is executing right now.
        aio_tasks: the asyncio tasks asyncio-flavored steps ran in.
        datacollector: a Mesa ``DataCollector`` with one model reporter, ``tally``,
            collected at the end of each `step`.
    """

    def __init__(
        self,
        plan: FaultPlan,
        *,
        scale: float = 1.0,
        rng: int | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(rng=plan.seed if rng is None else rng)
        self.quota: TokenBucket | None = None
        if plan.scenario.quota is not None:
            run_clock = clock if clock is not None else trio.current_time
            self.quota = TokenBucket(plan.scenario.quota, clock=lambda: run_clock() / scale)
        self.plan = plan
        self.tally = 0
        self.running: set[int] = set()
        self.aio_tasks: list[Any] = []
        self.datacollector = mesa.DataCollector(model_reporters={"tally": "tally"})
        side = max(1, math.ceil(math.sqrt(plan.agents)))
        self.grid = OrthogonalMooreGrid((side, side), torus=True, random=self.random)
        for uid in range(1, plan.agents + 1):
            cls = AGENT_CLASSES[plan.flavors[uid]]
            agent = cls(self, FakeLLM(plan, uid, scale=scale, quota=self.quota))
            if agent.unique_id != uid:
                raise RuntimeError(f"Mesa gave unique_id {agent.unique_id}, expected {uid}")
            agent.cell = self.grid[((uid - 1) % side, (uid - 1) // side)]

    @classmethod
    def from_scenario(
        cls,
        scenario: Scenario | str,
        seed: int | None = None,
        *,
        scale: float = 1.0,
        agents: int | None = None,
    ) -> FakeLLMModel:
        """The model for ``scenario`` (or the name of one of `SCENARIOS`) with ``seed``
        (default: the scenario's), with ``agents`` agents if given.

        A picklable factory for `trio_mesa.sweep`: ``sweep(FakeLLMModel.from_scenario,
        {"scenario": "flaky", "agents": [10, 20]}, steps, seeds=range(3), ...)``;
        `expected_run` with the same scenario, seed and agents is each run's oracle.
        """
        if isinstance(scenario, str):
            from ._scenarios import SCENARIOS

            if scenario not in SCENARIOS:
                raise ValueError(
                    f"no scenario named {scenario!r}; the named ones are {', '.join(SCENARIOS)}"
                )
            scenario = SCENARIOS[scenario]
        if agents is not None:
            scenario = scenario.replace(agents=agents)
        return cls(FaultPlan(scenario, seed), scale=scale)

    def step(self) -> None:
        """Step every agent once (``shuffle_do("step")``), then collect ``tally``.

        Meant for `trio_mesa.simulate` (and `trio_mesa.sweep`), whose patched
        ``shuffle_do`` steps every flavor through trio-mesa; `run_scenario` steps the
        agents itself and never calls this.
        """
        self.agents.shuffle_do("step")
        self.datacollector.collect(self)

    def __getstate__(self) -> dict[str, Any]:
        # A snapshot (``simulate(checkpoint=)``) is taken between steps: the asyncio
        # tasks of the last step are done and only observed, and tasks do not pickle.
        state = self.__dict__.copy()
        state["aio_tasks"] = []
        return state

    def work_snapshot(self) -> dict[int, int]:
        """``unique_id`` -> number of steps of work the agent has recorded so far."""
        return {a.unique_id: len(a.work_steps) for a in self.agents}
