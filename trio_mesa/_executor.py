"""A trio-asyncio default executor that returns whatever the function returns.

litellm's ``acompletion`` calls ``loop.run_in_executor(None, f)`` with an ``f`` that
returns a coroutine. trio-asyncio's default ``TrioExecutor`` runs ``f`` through
``trio.to_thread.run_sync``, which rejects a coroutine return value ("Trio expected a sync
function"), so every litellm call fails under trio-asyncio. This executor hands the value
back unexamined, as asyncio's ThreadPoolExecutor does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
from trio_asyncio import TrioExecutor


class PassThroughExecutor(TrioExecutor):
    """Runs ``func(*args)`` in a Trio worker thread and returns its value as is."""

    async def submit(self, func: Callable[..., Any], *args: Any) -> Any:  # type: ignore[override]
        if not self._running:
            raise RuntimeError("executor is shut down")
        # Box the value so trio.to_thread does not inspect it.
        (value,) = await trio.to_thread.run_sync(lambda: (func(*args),), limiter=self._limiter)
        return value
