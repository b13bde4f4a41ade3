"""The asyncio loop that asyncio-flavored agents run on when the host is Trio.

On a Trio host they run as tasks (`_aio_batches.AsyncioBatchLauncher`) on a trio-asyncio loop
(`trio_host_loop`): the caller's own when it is already inside
``trio_asyncio.open_loop()``, otherwise one opened for the step and closed (with every
asyncio task it ran finished) before the step returns. trio-asyncio is imported here,
lazily, only when a Trio host meets an asyncio-flavored agent: importing it monkeypatches
asyncio and slows unrelated asyncio code in the same process. `with_trio_host_loop` runs
code on that loop so that what it raises (a Ctrl-C above all) comes out as itself, not
wrapped in the exception groups of trio-asyncio's nurseries.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import trio


@asynccontextmanager
async def trio_host_loop() -> AsyncIterator[asyncio.AbstractEventLoop]:
    """Yield the trio-asyncio loop that asyncio agents of a step on a Trio host run on.

    The caller's own loop when it is inside ``trio_asyncio.open_loop()`` (so objects
    bound to it keep working; its callbacks are batched from then on, see
    `_trio_asyncio_batching`, and trio-asyncio's stock default executor is replaced by
    `PassThroughExecutor`), otherwise one opened here, with `PassThroughExecutor` as
    default executor and batched callbacks, and closed, with every asyncio task it ran
    finished, when the block exits.
    """
    import trio_asyncio

    from ._asyncio_policy import (
        rebind_asyncio_functions_imported_early,
        restore_plain_asyncio_outside_trio,
    )
    from ._executor import PassThroughExecutor
    from ._trio_asyncio_batching import install, is_installed

    # Importing trio-asyncio hands every later asyncio.run() in this process a
    # trio-asyncio loop; undo that outside Trio (see _asyncio_policy).
    restore_plain_asyncio_outside_trio(trio_asyncio)
    # anyio (httpx's) may hold asyncio's functions from before trio-asyncio patched them.
    rebind_asyncio_functions_imported_early()

    loop = trio_asyncio.current_loop.get()
    if loop is not None and not loop.is_closed():
        # The caller's loop runs one callback per Trio pass too, so a step inside the
        # caller's open_loop() took 1.8x the 100 ms floor (1,000 agents x 100 ms) where
        # a loop of our own takes 1.2x. Batching keeps asyncio's order (FIFO, timers,
        # stop), so it is installed once on that loop as well.
        if not is_installed(loop):
            install(loop)
        # trio-asyncio's stock executor rejects the coroutine litellm's acompletion gets
        # back from run_in_executor, so every mesa-llm agent failed on such a loop. Swap
        # only that stock one (an executor the caller chose is theirs to keep).
        if type(getattr(loop, "_default_executor", None)) is trio_asyncio.TrioExecutor:
            loop.set_default_executor(PassThroughExecutor())
        yield loop
        return
    async with trio_asyncio.open_loop() as loop:
        loop.set_default_executor(PassThroughExecutor())
        install(loop)  # one Trio round per batch of callbacks, not per callback
        yield loop


async def with_trio_host_loop[T](
    body: Callable[[asyncio.AbstractEventLoop], Awaitable[T]],
) -> T:
    """Await ``body(loop)`` inside `trio_host_loop`; what it raises propagates as itself.

    trio-asyncio's ``open_loop`` runs its body inside two Trio nurseries, and each wraps
    what escapes in a ``BaseExceptionGroup``: a Ctrl-C that arrived while the body ran
    came out nested twice, and ``except KeyboardInterrupt`` missed it (trio-asyncio
    0.16). So the body's exception is kept and raised after the loop has closed. A
    KeyboardInterrupt or SystemExit that lands in the loop's own tasks instead (the
    body then only sees ``Cancelled``) is taken out of the groups too (`fatal_in`).
    Any other error from the loop keeps its group.
    """
    error: BaseException | None = None
    try:
        async with trio_host_loop() as loop:
            try:
                return await body(loop)
            except trio.Cancelled:
                raise  # belongs to a cancel scope around it, maybe the loop's own
            except BaseException as exc:
                error = exc
    except BaseExceptionGroup as group:
        error = fatal_in(group)
        if error is None:
            raise
    assert error is not None
    # Raised here, outside any except block, so its __context__ is what it was.
    raise error


def fatal_in(group: BaseExceptionGroup) -> BaseException | None:
    """The KeyboardInterrupt (else SystemExit) that ``group`` only wraps, or ``None``.

    ``group`` only wraps it when its other leaves are cancellations (Trio's or
    asyncio's) that it caused; a group holding anything else is a real error of its own
    and is left alone (``None``). The leaf returned is the original exception object,
    its traceback and context intact.
    """
    _, rest = group.split((KeyboardInterrupt, SystemExit, trio.Cancelled, asyncio.CancelledError))
    if rest is not None:
        return None
    for kind in (KeyboardInterrupt, SystemExit):
        match = group.subgroup(kind)
        if match is not None:
            leaf: BaseException = match
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            return leaf
    return None


__all__ = ["fatal_in", "trio_host_loop", "with_trio_host_loop"]
