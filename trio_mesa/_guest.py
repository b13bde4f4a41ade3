"""The asyncio host: drive the Trio stepping core on the caller's own running asyncio loop.

`run_on_asyncio_host` (behind `trio_mesa.aio_step_agents`, `aio_call_agents` and
`trio_mesa.compat`) is awaited from asyncio (``asyncio.run``, Jupyter, any running
loop). It runs the step's Trio tasks in Trio *guest mode* on that loop
(``trio.lowlevel.start_guest_run``) and run every asyncio-flavored agent coroutine as an
ordinary task on the same loop, so objects bound to it (an ``asyncio.Lock`` or
``httpx.AsyncClient`` made before the step) keep working. No thread and no event loop is
made per agent, and trio-asyncio is never imported.

One guest run per thread serves every step in flight on that thread's loop: concurrent
and nested calls join it, and it ends when its last step ends. Sync and Trio-flavored
agents run in the core's Trio tasks. Asyncio agents get no Trio task each (that would
triple the cost of ``asyncio.gather``): each start batch of them is one Trio task waiting
on plain asyncio tasks, started from a loop callback, never inside a Trio tick, so agent
code never sees Trio's run context (sniffio reports asyncio to it).
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
from typing import Any

import trio
from outcome import Error, Outcome, Value

from ._policy import StepPolicy
from ._prepare import Entry
from ._report import StepReport
from ._scheduler import Step

_copy_context = contextvars.copy_context


async def run_on_asyncio_host(entries: list[Entry], policy: StepPolicy) -> StepReport:
    """Run prepared entries (see `trio_mesa._prepare`) on the running asyncio loop."""
    loop = asyncio.get_running_loop()
    job = _Job(entries, policy, loop)
    while True:
        host: _GuestHost | None = getattr(_this_thread, "host", None)
        if host is None:
            if trio.lowlevel.in_trio_run():
                # The "asyncio" loop is itself run by Trio (trio-asyncio): no guest mode.
                return await _run_on_trio_asyncio(loop, entries, policy)
            host = _GuestHost(loop)
            host.submit(job)
            host.start()
            break
        if host.loop is not loop:
            raise RuntimeError(
                "a trio-mesa step started on another asyncio event loop in this thread "
                f"({host.loop!r}) has not finished; that loop was stopped while the step ran"
            )
        if host.submit(job):
            break
        # The run is ending (its last step just finished): wait for it, then start anew.
        await asyncio.shield(host.finished)
    return await job.wait()


# -- one Trio guest run per thread ---------------------------------------------------------


class _ThisThread(threading.local):
    host: _GuestHost | None = None


_this_thread = _ThisThread()


class _GuestHost:
    """A Trio guest run on one asyncio loop, alive while at least one step runs on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.nursery: trio.Nursery | None = None
        self.waiting: list[_Job] | None = []  # submitted before the run's main task started
        self.jobs: set[_Job] = set()
        self.finished: asyncio.Future[None] = loop.create_future()
        # Callers whose step was the last one, waiting for the run to end; released
        # early if another step joins the run (it will keep the run alive).
        self.settling: list[asyncio.Future[None]] = []

    def start(self) -> None:
        _this_thread.host = self
        try:
            trio.lowlevel.start_guest_run(
                self._main,
                run_sync_soon_threadsafe=self.loop.call_soon_threadsafe,
                run_sync_soon_not_threadsafe=self.loop.call_soon,
                done_callback=self._done,
                # asyncio owns signal.set_wakeup_fd (add_signal_handler); Trio must not
                # take it over. Trio's docs recommend this for asyncio hosts.
                host_uses_signal_set_wakeup_fd=True,
            )
        except BaseException:
            _this_thread.host = None
            raise

    def submit(self, job: _Job) -> bool:
        """Add ``job`` to this run; ``False`` when the run is already closing."""
        if self.waiting is not None:
            self.waiting.append(job)
        else:
            try:
                # Called from the host loop, between Trio ticks: spawning is plain
                # bookkeeping on the run, which lives in this thread.
                self.nursery.start_soon(job.run)  # type: ignore[union-attr]
            except RuntimeError:  # "Nursery is closed to new arrivals"
                return False
        self.jobs.add(job)
        job.host = self
        self._release_settling()
        return True

    def _release_settling(self) -> None:
        settling, self.settling = self.settling, []
        for waiter in settling:
            if not waiter.done():
                waiter.set_result(None)

    async def _main(self) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            waiting, self.waiting = self.waiting, None
            for job in waiting:  # type: ignore[union-attr]
                nursery.start_soon(job.run)

    def _done(self, result: Outcome[Any]) -> None:
        if _this_thread.host is self:
            _this_thread.host = None
        # A job always delivers its own outcome; only a crash of the run itself (a
        # TrioInternalError, or KeyboardInterrupt delivered by Trio's own handler)
        # leaves jobs without one. Give them the run's error rather than hang them.
        for job in list(self.jobs):
            job.deliver(result if isinstance(result, Error) else Error(_lost_job()))
        if not self.finished.done():
            self.finished.set_result(None)
        self._release_settling()


def _lost_job() -> RuntimeError:
    return RuntimeError("trio-mesa: the Trio guest run ended before this step finished")


class _Job:
    """One step submitted to a `_GuestHost`: its Trio side and its asyncio-side future."""

    __slots__ = ("context", "entries", "future", "host", "loop", "policy", "scope")

    def __init__(self, entries: list[Entry], policy: StepPolicy, loop: asyncio.AbstractEventLoop):
        self.entries = entries
        self.policy = policy
        self.loop = loop
        self.future: asyncio.Future[Outcome[StepReport] | None] = loop.create_future()
        self.scope = trio.CancelScope()
        self.context = _copy_context()
        self.host: _GuestHost | None = None

    async def run(self) -> None:
        # The step's Trio tasks (and the agent tasks they start) see the caller's
        # contextvars, as tasks started by asyncio.gather would.
        for var, value in self.context.items():
            var.set(value)
        step = Step(self.entries, self.policy, self.loop)
        try:
            with self.scope:
                self.deliver(Value(await step.run()))
                return
        except BaseException as exc:  # delivered to the caller; never into the shared run
            self.deliver(Error(exc))
            return
        self.deliver(None)  # cancelled by the caller

    def deliver(self, result: Outcome[StepReport] | None) -> None:
        if self.host is not None:
            self.host.jobs.discard(self)
        if not self.future.done():
            self.future.set_result(result)

    async def wait(self) -> StepReport:
        cancelled = False
        try:
            result = await asyncio.shield(self.future)
        except asyncio.CancelledError:
            cancelled = True
            # Called on the loop, between Trio ticks; cancelling a scope is bookkeeping
            # that wakes the guest run, whose tasks then cancel their asyncio tasks.
            self.scope.cancel()
            result, _ = await _uncancellable(self.future)
        # Do not return while the guest run is still winding down with no step left in
        # it: if the caller then closes the loop (asyncio.run returning, or tearing
        # down after a KeyboardInterrupt), the run would be abandoned half-finished
        # and no Trio could ever run in this thread again.
        host = self.host
        if host is not None and not host.jobs and not host.finished.done():
            settled = self.loop.create_future()
            host.settling.append(settled)
            _, again = await _uncancellable(settled)
            cancelled = cancelled or again
        if isinstance(result, Error) and not isinstance(result.error, Exception):
            result.unwrap()  # KeyboardInterrupt/SystemExit win over a cancellation
        if cancelled or result is None:
            raise asyncio.CancelledError
        return result.unwrap()


async def _uncancellable(future: asyncio.Future[Any]) -> tuple[Any, bool]:
    """Await ``future`` to the end, even if the awaiting task is cancelled meanwhile.

    Returns its result and whether a cancellation arrived (the caller re-raises it).
    """
    cancelled = False
    while True:
        try:
            return await asyncio.shield(future), cancelled
        except asyncio.CancelledError:
            cancelled = True
            if future.done():
                return future.result(), cancelled


# -- asyncio run by Trio itself (trio-asyncio loops) ---------------------------------------


async def _run_on_trio_asyncio(
    loop: asyncio.AbstractEventLoop, entries: list[Entry], policy: StepPolicy
) -> StepReport:
    trio_asyncio = sys.modules.get("trio_asyncio")
    if trio_asyncio is None or not isinstance(loop, trio_asyncio.BaseTrioEventLoop):
        raise RuntimeError(
            "trio-mesa cannot drive a step from asyncio code running inside a Trio run "
            f"on {loop!r}; in Trio code use `await trio_mesa.step_agents(...)`"
        )
    step = Step(entries, policy, loop)
    return await loop.trio_as_future(step.run)


__all__ = ["run_on_asyncio_host"]
