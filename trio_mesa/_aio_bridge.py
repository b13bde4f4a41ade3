"""Run asyncio-flavored agent coroutines from the step's Trio tasks.

On a Trio host the coroutines run on a trio-asyncio loop (`trio_host_loop`): the caller's
own when it is already inside ``trio_asyncio.open_loop()``, otherwise one opened for the
step and closed (with every asyncio task it ran finished) before the step returns.
trio-asyncio is imported here, lazily, only when a Trio host meets an asyncio-flavored
agent: importing it monkeypatches asyncio and slows unrelated asyncio code in the same
process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

AioRunner = Callable[[Coroutine[Any, Any, Any]], Awaitable[Any]]


class _Reraise:
    """A KeyboardInterrupt/SystemExit carried out of asyncio as a value."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


async def _carry_base_exceptions(call: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    # asyncio's Task re-raises KeyboardInterrupt/SystemExit into the loop's callback
    # runner as well as storing it on the task; under trio-asyncio that kills the loop's
    # callback task while the Trio side still waits on the future, so the step hangs.
    # Carry them out as a value instead and re-raise them in the agent's Trio task.
    # The agent's coroutine is created here, not by the caller: if the task is cancelled
    # before its first step, no agent coroutine exists to be "never awaited".
    try:
        return await call()
    except (KeyboardInterrupt, SystemExit) as exc:
        return _Reraise(exc)


async def run_asyncio_call(run: AioRunner, call: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run ``call()`` (an asyncio coroutine) through ``run`` and return its value.

    Exceptions propagate as raised by the coroutine; KeyboardInterrupt and SystemExit
    are re-raised here, in Trio, so they cancel the step's siblings like any Trio error.
    """
    result = await run(_carry_base_exceptions(call))
    if type(result) is _Reraise:
        raise result.exc
    return result


@asynccontextmanager
async def trio_host_loop() -> AsyncIterator[asyncio.AbstractEventLoop]:
    """Yield the trio-asyncio loop that asyncio agents of a step on a Trio host run on.

    The caller's own loop when it is inside ``trio_asyncio.open_loop()`` (so objects
    bound to it keep working), otherwise one opened here, with `PassThroughExecutor` as
    default executor and batched callbacks (see `_trio_asyncio_batching`), and closed,
    with every asyncio task it ran finished, when the block exits.
    """
    import trio_asyncio

    from ._asyncio_policy import restore_plain_asyncio_outside_trio
    from ._executor import PassThroughExecutor
    from ._trio_asyncio_batching import install

    # Importing trio-asyncio hands every later asyncio.run() in this process a
    # trio-asyncio loop; undo that outside Trio (see _asyncio_policy).
    restore_plain_asyncio_outside_trio(trio_asyncio)

    loop = trio_asyncio.current_loop.get()
    if loop is not None and not loop.is_closed():
        yield loop
        return
    async with trio_asyncio.open_loop() as loop:
        loop.set_default_executor(PassThroughExecutor())
        install(loop)  # one Trio round per batch of callbacks, not per callback
        yield loop


__all__ = ["AioRunner", "run_asyncio_call", "trio_host_loop"]
