"""aio_simulate cancelled twice (a second Ctrl-C under asyncio.run) while a sync
model.step() is still running in its worker thread must not deadlock the loop.

Before the fix, the second CancelledError left ``await asyncio.wait([work])`` and the
run's ThreadPoolExecutor joined its worker on the loop's thread, while the worker
waited on that loop for its agents: the process hung for ever.
"""

from __future__ import annotations

import asyncio
import threading
import time

import mesa
import pytest

import trio_mesa


class Slow(mesa.Agent):
    def step(self) -> None:
        time.sleep(0.3)


class Town(mesa.Model):
    def __init__(self) -> None:
        super().__init__(rng=1)
        for _ in range(4):
            Slow(self)

    def step(self) -> None:
        self.agents.shuffle_do("step")


async def cancel_twice() -> None:
    task = asyncio.ensure_future(
        trio_mesa.aio_simulate(Town(), 50, sync_mode="thread", progress=False)
    )
    await asyncio.sleep(0.15)  # model.step() is in its thread, agents in theirs
    task.cancel()
    await asyncio.sleep(0.01)
    task.cancel()  # a second Ctrl-C while the first is being honoured
    with pytest.raises(asyncio.CancelledError):
        await task


def test_cancelled_twice_while_model_step_runs_does_not_deadlock() -> None:
    errors: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(cancel_twice())
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "aio_simulate deadlocked after a second cancellation"
    assert not errors, errors
