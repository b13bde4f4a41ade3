"""Run a trio-asyncio loop's ready callbacks in batches, as asyncio itself does.

Imported only after trio-asyncio (it imports trio-asyncio's internals).

trio-asyncio 0.16's main loop (``BaseTrioEventLoop._main_loop_one``) runs ONE callback
per pass, and every pass opens a ``move_on_after`` cancel scope and parks on a memory
channel: a full Trio scheduling round per asyncio callback. An asyncio agent needs about
four callbacks (task start, timer, wake-up, done), so 1,000 agents that each
``await asyncio.sleep(0.1)`` took about 1.1 s instead of 0.1 s.

`install` replaces that method on one loop with a batching version. Each batch takes
every queued handle and every due timer (a snapshot, like one iteration of asyncio's
``_run_once``) and runs them in order. What a batch queues runs in the next batch, in
the same Trio pass, up to ``ITERATIONS_PER_PASS`` batches; then the loop yields to Trio
once. One call serves many passes under one cancel scope whose deadline follows the next
timer, so a cancel scope is made per timer that fires, not per wait. FIFO order and
"callbacks queued before ``stop()`` run before the loop stops" both hold: a batch
interrupted by ``stop()`` (which raises ``TrioAsyncioExit`` from a handle) keeps its
unrun handles, and trio-asyncio's shutdown drain (``_main_loop_one(no_wait=True)`` until
``WouldBlock``) runs them.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import types
from collections import deque
from typing import Any

import sniffio
import trio
from trio_asyncio._handles import AsyncHandle

_ATTR = "_trio_mesa_ready"

# Batches (asyncio loop iterations) run per Trio pass at most: enough for an asyncio
# task's wake-up chain (timer, future callback, task step, done callbacks) to finish in
# one pass, few enough that a callback rescheduling itself forever cannot starve Trio.
ITERATIONS_PER_PASS = 8


def supported(loop: Any) -> bool:
    """Whether ``loop`` has the trio-asyncio internals this module relies on."""
    return all(hasattr(loop, name) for name in ("_main_loop_one", "_timers", "_q_recv", "_nursery"))


def is_installed(loop: Any) -> bool:
    """Whether `install` has already been applied to ``loop``."""
    return hasattr(loop, _ATTR)


def install(loop: Any) -> bool:
    """Make ``loop`` (a running ``trio_asyncio.TrioEventLoop``) run callbacks in batches.

    Returns False, changing nothing, when the loop lacks the expected internals (another
    trio-asyncio version): it then keeps its own one-callback-per-pass main loop.
    """
    if not supported(loop):
        return False
    setattr(loop, _ATTR, deque())
    loop._main_loop_one = types.MethodType(_main_loop_batch, loop)
    loop.call_soon = types.MethodType(_call_soon, loop)
    loop.call_at = types.MethodType(_call_at, loop)
    loop.call_later = types.MethodType(_call_later, loop)
    return True


# trio-asyncio's call_soon/call_at/call_later check the callback on every call
# (inspect.iscoroutinefunction and friends, a third of the per-agent cost in profiles);
# asyncio's own loops check only in debug mode. These do the same as trio-asyncio's,
# checking only in debug mode.


def _call_soon(self: Any, callback: Any, *args: Any, context: Any = None) -> asyncio.Handle:
    if self._debug:
        self._check_callback(callback, "call_soon")
    return self._queue_handle(asyncio.Handle(callback, args, self, context=context))


def _call_at(self: Any, when: float, callback: Any, *args: Any, context: Any = None) -> Any:
    if self._debug:
        self._check_callback(callback, "call_at")
    return self._queue_handle(asyncio.TimerHandle(when, callback, args, self, context=context))


def _call_later(self: Any, delay: float, callback: Any, *args: Any, context: Any = None) -> Any:
    return _call_at(self, self.time() + delay, callback, *args, context=context)


async def _main_loop_batch(self: Any, no_wait: bool = False) -> None:
    # Called in a loop by trio-asyncio's _main_loop (inside a shielded scope). One call
    # serves many passes under one cancel scope whose deadline tracks the next timer:
    # it returns when that deadline passes (or, with no_wait, when nothing is ready),
    # so a cancel scope is made per timer that fires, not per wait.
    ready: deque[Any] = getattr(self, _ATTR)
    timers = self._timers
    if no_wait:
        if not ready:
            _collect(self, ready, timers)
            if not ready:
                raise trio.WouldBlock
        await _run_ready(self, ready)
        return
    with trio.CancelScope() as scope:
        while True:
            if not ready:
                _collect(self, ready, timers)
            if ready:
                await _run_ready(self, ready)
                # What that batch queued (a task's wake-up once its future is done, a
                # done callback) runs as further batches in this same Trio pass, each a
                # snapshot as before, up to ITERATIONS_PER_PASS batches: yielding to Trio
                # after every batch cost each asyncio agent two or more extra passes.
                for _ in range(ITERATIONS_PER_PASS - 1):
                    _collect(self, ready, timers)
                    if not ready:
                        break
                    await _run_ready(self, ready)
                await trio.lowlevel.checkpoint()  # let Trio run between passes
                continue
            # Nothing to run: wait for a handle, or until the next timer is due
            # (loop.time() is Trio's clock, so a timer's _when is a Trio deadline).
            scope.deadline = timers[0]._when if timers else math.inf
            obj = await self._q_recv.receive()
            if isinstance(obj, asyncio.TimerHandle):
                heapq.heappush(timers, obj)
            else:
                ready.append(obj)


def _collect(self: Any, ready: deque[Any], timers: list[Any]) -> None:
    """Everything queued so far, then every timer due by now (asyncio's order)."""
    receive_nowait = self._q_recv.receive_nowait
    while True:
        try:
            obj = receive_nowait()
        except trio.WouldBlock:
            break
        if isinstance(obj, asyncio.TimerHandle):
            heapq.heappush(timers, obj)
        else:
            ready.append(obj)
    now = self.time()
    while timers and timers[0]._when <= now:
        ready.append(heapq.heappop(timers))


async def _run_ready(self: Any, ready: deque[Any]) -> None:
    """Run the handles in ``ready``, in order. Unrun ones stay if one raises (stop())."""
    while ready:
        obj = ready.popleft()
        if isinstance(obj, AsyncHandle):
            # A Trio task started through the loop (trio_as_aio): as trio-asyncio does.
            obj._context.run(self._nursery.start_soon, obj._run, name=obj._callback)
            with trio.CancelScope(shield=True):  # our timer scope must not cut this short
                await obj._started.wait()
        elif not obj._cancelled:
            previous, sniffio.thread_local.name = sniffio.thread_local.name, "asyncio"
            try:
                obj._run()
            finally:
                sniffio.thread_local.name = previous
