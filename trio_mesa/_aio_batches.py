"""Run a step's asyncio-flavored agents as bare asyncio tasks, one Trio task per batch.

A Trio task per asyncio agent, plus the asyncio task it waits on, costs about three times
what ``asyncio.gather`` pays per agent. `AsyncioBatchStep` is the core's `_Step` with one
change: each start batch of asyncio agents is one Trio task (`_AioBatch`) waiting, under
the batch's deadline, for plain asyncio tasks started eagerly from a loop callback on a
given asyncio loop. Each agent's task records its own outcome with the core's recorders
(``_failed``, ``_timed_out``, ``_cancelled``), so outcomes, logging, notes, ``fail_fast``
and slot accounting are the core's. Sync and Trio-flavored agents go through the core
unchanged.

Both hosts use it: the asyncio host on the caller's own loop (Trio guest mode,
`trio_mesa._guest`), and the Trio host on a trio-asyncio loop
(`trio_mesa._core._run_on_trio_host`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import trio

from ._core import _ASYNCIO, _OK, _SKIPPED, _Entry, _new_outcome, _Step
from ._errors import AgentCancelled
from ._outcome import AgentOutcome, Status
from ._policy import StepPolicy

_reschedule = trio.lowlevel.reschedule
_current_task = trio.lowlevel.current_task
_wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled
_FAILED = trio.lowlevel.Abort.FAILED
_now = trio.current_time
logger = logging.getLogger("trio_mesa")
_Task = asyncio.Task


class AsyncioBatchStep(_Step):
    """The core's step, except that asyncio agents get no Trio task of their own.

    Each start batch of asyncio agents (agents started at the same instant, sharing one
    deadline: see `_Step`) is one Trio task waiting for that batch's asyncio tasks, on
    ``loop``; see the module docstring.
    """

    runs_asyncio = True

    def __init__(self, entries: list[_Entry], policy: StepPolicy, loop: asyncio.AbstractEventLoop):
        super().__init__(entries, policy)
        self.loop = loop

    def _start_batch(self, nursery: trio.Nursery, batch: list[int]) -> None:
        if not batch:
            return
        entries = self.entries
        # (index, agent, call, flavor, borrower) for each asyncio agent of the batch.
        aio = [(i, *entries[i], self.borrower(i)) for i in batch if entries[i][2] is _ASYNCIO]
        if len(aio) != len(batch):
            super()._start_batch(nursery, [i for i in batch if entries[i][2] is not _ASYNCIO])
        if aio:
            start = _now()
            deadline = start + self.timeout
            if deadline > self.step_deadline:
                deadline = self.step_deadline
            nursery.start_soon(_AioBatch(self, aio, start, deadline).run)


class _AioBatch:
    """One start batch of asyncio agents: their tasks, and the Trio task waiting for them."""

    __slots__ = (
        "cancelling",
        "deadline",
        "entries",
        "fatal",
        "raise_cancel",
        "remaining",
        "start",
        "step",
        "tasks",
        "waiter",
    )

    def __init__(
        self, step: AsyncioBatchStep, entries: list, start: float, deadline: float
    ) -> None:
        self.step = step
        self.entries = entries
        self.start = start
        self.deadline = deadline
        self.tasks: list[asyncio.Task[None]] = []
        self.remaining = len(entries)
        self.waiter: trio.lowlevel.Task | None = None
        self.cancelling = False  # we cancelled the tasks (deadline, fail_fast, caller)
        self.fatal: BaseException | None = None
        self.raise_cancel: Callable[[], Any] | None = None

    async def run(self) -> None:
        step = self.step
        if self.deadline <= self.start:
            for i, agent, _call, _flavor, borrower in self.entries:
                step._timed_out(i, agent, self.start, self.deadline, started=False)
                self._give_back(borrower)
            return
        with trio.CancelScope(deadline=self.deadline):
            self.waiter = _current_task()
            # Start the tasks from a plain loop callback, outside this Trio tick; the
            # callback runs in (a copy of) this task's context, and each task copies it.
            step.loop.call_soon(self._start_tasks)
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

    def _start_tasks(self) -> None:
        if self.cancelling:  # cancelled before anything started: nothing to run or wait for
            for entry in self.entries:
                self._give_back(entry[4])
            self.remaining = 0
            _reschedule(self.waiter)  # type: ignore[arg-type]
            return
        # Eager start: each task runs to its first suspension right here, so no task is
        # ever cancelled before its body (and its bookkeeping `finally`) has begun.
        loop = self.step.loop
        agent_task = self._agent_task
        append = self.tasks.append
        for i, agent, call, _flavor, borrower in self.entries:
            append(_Task(agent_task(i, agent, call, borrower), loop=loop, eager_start=True))

    async def _agent_task(
        self, i: int, agent: Any, call: Callable[[], Any], borrower: object
    ) -> None:
        # The core's _run_agent, for an asyncio agent in an asyncio task.
        step = self.step
        start = self.start
        try:
            if self.cancelling:  # an earlier agent of this batch ended the batch
                if not step.stopping and self.fatal is None and _now() >= self.deadline:
                    step._timed_out(i, agent, start, self.deadline, started=False)
                return  # otherwise left to _fill_unstarted (fail_fast) or moot (fatal)
            model = agent.model  # the step's model's agent set is read once (see _Step)
            if agent not in (step.members if model is step.model else model.agents):
                step.outcomes[i] = _new_outcome(
                    AgentOutcome, (agent, agent.unique_id, _SKIPPED, None, None, 0.0, 0, False)
                )
                return
            result = await call()
            step.outcomes[i] = _new_outcome(
                AgentOutcome, (agent, agent.unique_id, _OK, None, result, _now() - start, 1, False)
            )
        except Exception as exc:
            step._failed(i, agent, exc, start)
        except asyncio.CancelledError as exc:
            if not self.cancelling:  # not ours: the agent's own, or other code cancelled it
                self._cancelled_by_others(i, agent, exc)
            elif not step.stopping and _now() >= self.deadline:
                step._timed_out(i, agent, start, self.deadline, started=True, flavor=_ASYNCIO)
            else:
                step._cancelled(i, agent, start)
        except BaseException as exc:  # KeyboardInterrupt, SystemExit: end the whole step
            self._fail_step(exc)
        finally:
            self._give_back(borrower)
            self.remaining -= 1
            if not self.remaining:
                _reschedule(self.waiter)  # type: ignore[arg-type]

    def _cancelled_by_others(self, i: int, agent: Any, exc: BaseException) -> None:
        # As with asyncio.gather(return_exceptions=True), one agent's task being cancelled
        # is that agent's outcome, not the step's: if the caller is being cancelled too
        # (asyncio.run shutting down), its own cancellation ends the step.
        step = self.step
        uid = agent.unique_id
        cls = type(agent).__qualname__
        error = AgentCancelled(f"agent {uid!r} ({cls}) cancelled: its asyncio task was cancelled")
        error.add_note(step._note(agent))
        error.__cause__ = exc
        step.outcomes[i] = AgentOutcome(
            agent, uid, Status.CANCELLED, error, None, _now() - self.start, 1
        )
        logger.warning(
            "agent %r (%s) was cancelled by code outside trio-mesa (CancelledError)",
            uid,
            cls,
            extra={"agent_unique_id": uid, "agent_class": cls, "agent_status": "cancelled"},
        )

    def _fail_step(self, exc: BaseException) -> None:
        # Kept, not raised: raising KeyboardInterrupt from an asyncio task would also
        # throw it out of the host loop. The waiting Trio task raises it once every
        # task of the batch has finished, and the core's nursery cancels the rest.
        if self.fatal is None:
            self.fatal = exc
            self._cancel_all()

    def _give_back(self, borrower: object) -> None:
        if borrower is not None and self.step.slots is not None:
            self.step.slots.give_back(borrower)


__all__ = ["AsyncioBatchStep"]
