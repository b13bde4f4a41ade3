"""A run whose agents print, with default options: ``printing.py simulate|aio_simulate``.

Agents of each flavor (six sync ones in worker threads, three Trio, three asyncio) print
one line to stdout and one to stderr each step; the model's ``step()`` (in its own
worker thread) ends the run by writing a line to stderr without its newline. Run on a
terminal, the default ``progress=None`` shows the live display; piped, it does not.
The script then prints every agent outcome (``OUTCOME step id status exception``) and
``END``; the test compares the outcomes of both runs and counts the printed lines. Run
by ``tests/test_terminal.py``.
"""

from __future__ import annotations

import asyncio
import sys

import mesa
import trio

import trio_mesa
from trio_mesa import trio_native


def _say(agent: mesa.Agent, flavor: str) -> None:
    print(f"{flavor} agent {agent.unique_id} step {agent.model.steps} says hi")
    print(f"{flavor} agent {agent.unique_id} step {agent.model.steps} warns", file=sys.stderr)


class ThreadAgent(mesa.Agent):
    def step(self) -> None:
        _say(self, "thread")


class TrioAgent(mesa.Agent):
    @trio_native
    async def astep(self) -> None:
        _say(self, "trio")
        await trio.lowlevel.checkpoint()


class AsyncioAgent(mesa.Agent):
    async def astep(self) -> None:
        _say(self, "asyncio")
        await asyncio.sleep(0)


STEPS = 3


class Model(mesa.Model):
    def __init__(self) -> None:
        super().__init__(rng=0)
        for kind, n in ((ThreadAgent, 6), (TrioAgent, 3), (AsyncioAgent, 3)):
            for _ in range(n):
                kind(self)

    def step(self) -> None:
        self.agents.shuffle_do("step")
        if self.steps == STEPS:
            print("the model's last words, no newline", end="", file=sys.stderr)


def main() -> None:
    host = sys.argv[1]
    model = Model()
    if host == "simulate":
        run = trio_mesa.simulate(model, STEPS, sync_mode="thread")
    else:
        run = asyncio.run(trio_mesa.aio_simulate(model, STEPS, sync_mode="thread"))
    print()
    for number, step in enumerate(run.steps, 1):
        for report in step.reports:
            for outcome in report:
                error = type(outcome.exception).__name__ if outcome.exception else "-"
                print(f"OUTCOME {number} {outcome.unique_id} {outcome.status.name} {error}")
    print("END")


if __name__ == "__main__":
    main()
