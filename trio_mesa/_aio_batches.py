"""Asyncio-flavored agents as bare asyncio tasks, one Trio task per start batch.

A Trio task per asyncio agent, plus the asyncio task it waits on, costs about three times
what ``asyncio.gather`` pays per agent. `AsyncioBatchLauncher` is the scheduler's launcher
for asyncio agents: each start batch of them (agents started at the same instant, sharing
one deadline: see `trio_mesa._launchers`) is one Trio task (`_AioBatch`) waiting, under
the batch's deadline, for plain asyncio tasks started eagerly from a loop callback on the
given asyncio loop. Each agent's task ends with one call to the step's `OutcomeRecorder`,
so outcomes, logging, notes, ``fail_fast`` and slot accounting are the same as for every
other flavor.

Both hosts use it: the asyncio host on the caller's own loop (Trio guest mode,
`trio_mesa._guest`), and the Trio host on a trio-asyncio loop (`trio_mesa._trio_host`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from typing import Any

import trio

from ._attempts import AgentCall
from ._breaker import CircuitBreaker, CircuitOpen
from ._launchers import StepView
from ._usage import open_ledger

_reschedule = trio.lowlevel.reschedule
_current_task = trio.lowlevel.current_task
_wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled
_FAILED = trio.lowlevel.Abort.FAILED
_now = trio.current_time
_Task = asyncio.Task


class AsyncioBatchLauncher:
    """Starts each batch of asyncio agents as asyncio tasks on ``loop``, one Trio task
    waiting for them all (see the module docstring)."""

    def __init__(self, step: StepView, loop: asyncio.AbstractEventLoop) -> None:
        self.step = step
        self.loop = loop

    def start(self, nursery: trio.Nursery, batch: list[int], start: float, deadline: float) -> None:
        entries = self.step.entries
        aio = [(i, entries[i][0], entries[i][1]) for i in batch]
        run = _AioBatch(self, aio, start, deadline)
        meters = self.step.meters
        if meters is not None:
            run.turns = meters.start_turns(entries, batch, start, deadline)
        nursery.start_soon(run.run)


class _AioBatch:
    """One start batch of asyncio agents: their tasks, and the Trio task waiting for them."""

    __slots__ = (
        "cancelling",
        "deadline",
        "entries",
        "fatal",
        "launcher",
        "raise_cancel",
        "remaining",
        "start",
        "tasks",
        "turns",
        "waiter",
    )

    def __init__(
        self,
        launcher: AsyncioBatchLauncher,
        entries: list[tuple[int, Any, Callable[[], Any]]],
        start: float,
        deadline: float,
    ) -> None:
        self.launcher = launcher
        self.entries = entries
        self.start = start
        self.deadline = deadline
        self.tasks: list[asyncio.Task[None]] = []
        self.remaining = len(entries)
        self.waiter: trio.lowlevel.Task | None = None
        self.cancelling = False  # we cancelled the tasks (deadline, fail_fast, caller)
        self.fatal: BaseException | None = None
        self.raise_cancel: Callable[[], Any] | None = None
        self.turns: dict[int, AgentCall] = {}  # with meters: each agent's turn

    async def run(self) -> None:
        if self.deadline <= self.start:
            step = self.launcher.step
            for i, agent, _call in self.entries:
                step.recorder.timed_out(i, agent, self.start, self.deadline, started=False)
                self._give_back(i)
            return
        with trio.CancelScope(deadline=self.deadline):
            self.waiter = _current_task()
            # Start the tasks from a plain loop callback, outside this Trio tick; the
            # callback runs in (a copy of) this task's context, and each task copies it.
            self.launcher.loop.call_soon(self._start_tasks)
            await _wait_task_rescheduled(self._abort)
            if self.fatal is not None:
                raise self.fatal  # KeyboardInterrupt or SystemExit from an agent
            if self.raise_cancel is not None:
                self.raise_cancel()

    def _abort(self, raise_cancel: Callable[[], Any]) -> trio.lowlevel.Abort:
        self.raise_cancel = raise_cancel
        self._cancel_all()
        return _FAILED  # we wait until every task has really finished

    def _cancel_all(self) -> None:
        self.cancelling = True
        for task in self.tasks:
            task.cancel()

    # KI-protected: a Ctrl-C landing between creating an agent's coroutine and recording
    # its task left a coroutine never awaited, a pending task destroyed, and the batch
    # waiting forever for agents that never started (asyncio callbacks on a trio-asyncio
    # loop run in a Trio task, where Trio raises KeyboardInterrupt wherever it lands).
    # Trio delivers it to the main task instead, which cancels the step as usual. The
    # eager start of each agent, up to its first await, is covered too.
    @trio.lowlevel.enable_ki_protection
    def _start_tasks(self) -> None:
        if self.cancelling:  # cancelled before anything started: nothing to run or wait for
            for entry in self.entries:
                self._give_back(entry[0])
            self.remaining = 0
            _reschedule(self.waiter)  # type: ignore[arg-type]
            return
        # Eager start: each task runs to its first suspension right here, so no task is
        # ever cancelled before its body (and its bookkeeping `finally`) has begun.
        loop = self.launcher.loop
        agent_task = self._agent_task
        append = self.tasks.append
        for i, agent, call in self.entries:
            append(_Task(agent_task(i, agent, call), loop=loop, eager_start=True))

    async def _agent_task(self, i: int, agent: Any, call: Callable[[], Any]) -> None:
        # TrioLauncher.run_agent, for an asyncio agent in an asyncio task.
        step = self.launcher.step
        recorder = step.recorder
        start = self.start
        meters = step.meters
        turn = None if meters is None else self.turns[i]
        try:
            if self.cancelling:  # an earlier agent of this batch ended the batch
                if not recorder.stopping and self.fatal is None and _now() >= self.deadline:
                    recorder.timed_out(i, agent, start, self.deadline, started=False)
                return  # otherwise left to the report (fail_fast) or moot (fatal)
            if step.is_removed(agent):
                recorder.skipped(i, agent)
                return
            # Set in the task's body: the task copied its context when it was created.
            if recorder.ledgers is not None:  # usage tracked: see _usage
                open_ledger(recorder.ledgers, i, agent, self.deadline)
            if turn is not None:
                await meters.run(turn, call, asyncio.sleep, park_asyncio)  # type: ignore[union-attr]
                return
            result = await call()
            recorder.ok(i, agent, result, _now() - start)
        except Exception as exc:
            recorder.failed(i, agent, exc, start, 1 if turn is None else max(turn.attempts, 1))
        except asyncio.CancelledError as exc:
            attempts = 1 if turn is None else turn.attempts
            if not self.cancelling:
                # Not ours: the agent's own, or other code cancelled it. As with
                # asyncio.gather(return_exceptions=True), that is this agent's outcome,
                # not the step's: if the caller is being cancelled too (asyncio.run
                # shutting down), its own cancellation ends the step.
                recorder.cancelled(i, agent, start, external=exc, attempts=attempts)
            elif not recorder.stopping and _now() >= self.deadline:
                recorder.timed_out(
                    i, agent, start, self.deadline, started=attempts > 0, attempts=attempts
                )
            else:
                recorder.cancelled(i, agent, start, attempts=attempts)
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: end the whole step
            self._fail_step(exc)
        finally:
            self._give_back(i)
            self.remaining -= 1
            if not self.remaining:
                _reschedule(self.waiter)  # type: ignore[arg-type]

    def _fail_step(self, exc: BaseException) -> None:
        # Kept, not raised: raising KeyboardInterrupt from an asyncio task would also
        # throw it out of the host loop. The waiting Trio task raises it once every
        # task of the batch has finished, and the step's nursery cancels the rest.
        if self.fatal is None:
            self.fatal = exc
            self._cancel_all()

    def _give_back(self, i: int) -> None:
        slots = self.launcher.step.slots
        if slots is not None:
            slots.give_back(i)


async def park_asyncio(breaker: CircuitBreaker, refusal: CircuitOpen, seconds: float) -> None:
    """`trio_mesa._attempts.Park` for an asyncio task: woken through the loop, from any
    thread, when ``breaker`` changes; or after ``seconds`` (``inf``: no limit)."""
    loop = asyncio.get_running_loop()
    woken = loop.create_future()

    def settle() -> None:
        if not woken.done():
            woken.set_result(None)

    def wake() -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            loop.call_soon_threadsafe(settle)

    breaker.watch(wake, refusal)
    try:
        await asyncio.wait([woken], timeout=None if math.isinf(seconds) else seconds)
    finally:
        breaker.unwatch(wake)
        woken.cancel()


__all__ = ["AsyncioBatchLauncher", "park_asyncio"]
