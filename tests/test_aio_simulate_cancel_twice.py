"""aio_simulate cancelled twice (a second Ctrl-C under asyncio.run) while a sync
model.step() is still running in its worker thread must not deadlock the loop.

Before the fix, the second CancelledError left ``await asyncio.wait([work])`` and the
run's ThreadPoolExecutor joined its worker on the loop's thread, while the worker
waited on that loop for its agents: the process hung for ever.

The run is a fresh interpreter: ``asyncio.run()`` must get asyncio's own loop, which it
does not in a process where something imported trio-asyncio by itself (its policy).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import asyncio, threading, time
    import mesa
    import trio_mesa

    started = threading.Event()

    class Slow(mesa.Agent):
        def step(self):
            started.set()
            time.sleep(0.3)

    class Town(mesa.Model):
        def __init__(self):
            super().__init__(rng=1)
            for _ in range(4):
                Slow(self)

        def step(self):
            self.agents.shuffle_do("step")

    async def cancel_twice():
        task = asyncio.ensure_future(
            trio_mesa.aio_simulate(Town(), 50, sync_mode="thread", progress=False)
        )
        # model.step() is in its thread, an agent in its own (waited for in a thread of
        # ours: the loop must stay free to start the agents).
        assert await asyncio.get_running_loop().run_in_executor(None, started.wait, 15)
        task.cancel()
        await asyncio.sleep(0.01)
        task.cancel()  # a second Ctrl-C while the first is being honoured
        try:
            await task
        except asyncio.CancelledError:
            print("cancelled")

    asyncio.run(cancel_twice())
    print("end")
    """
)


def test_cancelled_twice_while_model_step_runs_does_not_deadlock() -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        raise AssertionError("aio_simulate deadlocked after a second cancellation") from None
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["cancelled", "end"]
