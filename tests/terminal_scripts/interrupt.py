"""Ctrl-C in the middle of a run, as a user presses it: ``interrupt.py ENTRY FLAVOR``.

Steps printing agents of one flavor (``trio``, ``asyncio``, ``sync`` inline, ``thread``:
sync in worker threads) through one entry point, over and over, with default options.
The first agent call prints ``READY``; the test then presses Ctrl-C. The script catches
the interrupt with a plain ``except KeyboardInterrupt`` (what the README promises
works) and prints ``CAUGHT KeyboardInterrupt`` and the frames of its traceback; anything
else escaping is printed with its traceback, exit status 1. Run by
``tests/test_terminal.py`` under a pseudo-terminal.
"""

from __future__ import annotations

import asyncio
import sys
import time
import traceback

import mesa
import trio

import trio_mesa
from trio_mesa import compat, trio_native

_ready = False


def _say(agent: mesa.Agent) -> None:
    global _ready
    print(f"agent {agent.unique_id} out")
    print(f"agent {agent.unique_id} err", file=sys.stderr)
    if not _ready:
        _ready = True
        print("READY", flush=True)


class TrioAgent(mesa.Agent):
    @trio_native
    async def astep(self) -> None:
        _say(self)
        await trio.sleep(3600)


class AsyncioAgent(mesa.Agent):
    async def astep(self) -> None:
        _say(self)
        await asyncio.sleep(3600)


class SyncAgent(mesa.Agent):
    def step(self) -> None:
        _say(self)
        time.sleep(0.01)  # short: a blocked thread cannot be interrupted


AGENTS = {"trio": TrioAgent, "asyncio": AsyncioAgent, "sync": SyncAgent, "thread": SyncAgent}


class Model(mesa.Model):
    def __init__(self, flavor: str) -> None:
        super().__init__(rng=0)
        for _ in range(4):
            AGENTS[flavor](self)

    def step(self) -> None:
        self.agents.shuffle_do("step")


FOREVER = 1_000_000


def run_step(model: Model, options: dict) -> None:
    while True:
        trio_mesa.run_step(model.agents, **options)


def step_agents(model: Model, options: dict) -> None:
    async def main() -> None:
        while True:
            await trio_mesa.step_agents(model.agents, **options)

    trio.run(main)


def aio_step_agents(model: Model, options: dict) -> None:
    async def main() -> None:
        while True:
            await trio_mesa.aio_step_agents(model.agents, **options)

    asyncio.run(main())


def compat_parallel(model: Model, options: dict) -> None:
    async def main() -> None:
        while True:
            await compat.step_agents_parallel(list(model.agents))

    with compat.policy(**options):
        asyncio.run(main())


def compat_parallel_sync(model: Model, options: dict) -> None:
    with compat.policy(**options):
        while True:
            compat.step_agents_parallel_sync(list(model.agents))


def simulate(model: Model, options: dict) -> None:
    trio_mesa.simulate(model, FOREVER, **options)


def aio_simulate(model: Model, options: dict) -> None:
    asyncio.run(trio_mesa.aio_simulate(model, FOREVER, **options))


ENTRIES = {
    f.__name__: f
    for f in (
        run_step,
        step_agents,
        aio_step_agents,
        compat_parallel,
        compat_parallel_sync,
        simulate,
        aio_simulate,
    )
}


def main() -> None:
    entry, flavor = sys.argv[1:]
    # compat's own default runs sync agents in threads; say which one is meant.
    options = {"sync_mode": "thread" if flavor == "thread" else "inline"}
    try:
        ENTRIES[entry](Model(flavor), options)
    except KeyboardInterrupt as exc:
        frames = [frame.name for frame in traceback.extract_tb(exc.__traceback__)]
        print("CAUGHT KeyboardInterrupt")
        print("FRAMES " + " > ".join(frames))
        sys.exit(0)
    except BaseException:
        print("ESCAPED")
        traceback.print_exc()
        sys.exit(1)
    print("RETURNED")  # an endless run never returns by itself
    sys.exit(2)


if __name__ == "__main__":
    main()
