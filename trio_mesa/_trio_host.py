"""The Trio host: run a prepared step inside the current Trio run.

Trio and sync agents need nothing more than the run. Asyncio-flavored agents run as
plain asyncio tasks on a trio-asyncio loop (`trio_mesa._aio_bridge.trio_host_loop`: the
caller's own ``open_loop()``, or one opened for this step and closed before it returns),
one Trio task per start batch waiting for them (`trio_mesa._aio_batches`).
"""

from __future__ import annotations

from ._aio_bridge import with_trio_host_loop
from ._flavor import Flavor
from ._policy import StepPolicy
from ._prepare import Entry
from ._report import StepReport
from ._scheduler import Step

_ASYNCIO = Flavor.ASYNCIO


async def run_on_trio_host(entries: list[Entry], policy: StepPolicy) -> StepReport:
    """Run prepared entries in the current Trio run and return the report."""
    if not any(entry[2] is _ASYNCIO for entry in entries):
        return await Step(entries, policy).run()
    # Errors are raised after the loop has closed, not wrapped in the groups of
    # trio-asyncio's nurseries: callers catch StepFailed/KeyboardInterrupt as is.
    return await with_trio_host_loop(lambda loop: Step(entries, policy, loop).run())


__all__ = ["run_on_trio_host"]
