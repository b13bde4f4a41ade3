"""Drive the Trio stepping core from asyncio code, on the caller's own running loop.

`aio_step_agents` and `aio_call_agents` are awaited from asyncio (``asyncio.run``, Jupyter,
any running loop). They run the step's Trio tasks in Trio *guest mode* on that loop
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
import logging
import sys
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import trio
from mesa import Agent
from outcome import Error, Outcome, Value

from ._core import _ASYNCIO, _OK, _SKIPPED, _Entry, _new_outcome, _prepare, _Step
from ._errors import AgentCancelled
from ._outcome import AgentOutcome, Status
from ._policy import StepPolicy
from ._report import StepReport

_reschedule = trio.lowlevel.reschedule
_current_task = trio.lowlevel.current_task
_wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled
_copy_context = contextvars.copy_context
_FAILED = trio.lowlevel.Abort.FAILED
_now = trio.current_time
logger = logging.getLogger("trio_mesa")
_Task = asyncio.Task


async def aio_step_agents(
    agents: Iterable[Agent], *, shuffle: bool | None = None, **options: Any
) -> StepReport:
    """Asyncio twin of `trio_mesa.step_agents`: await it from asyncio code.

    Steps every agent once (``astep()`` if it has one, else ``step()``), each in its own
    Trio task driven in guest mode on the running asyncio loop; asyncio-flavored
    ``astep`` coroutines run as tasks on that loop. Isolation, options (``strict``,
    ``timeout``, ``deadline``, ``max_concurrency``, ``sync_mode``, ...) and the returned
    `StepReport` are exactly as in `trio_mesa.step_agents`.

    Cancellation: if the awaiting task is cancelled, every agent still running is
    cancelled (its asyncio task gets ``CancelledError``) and the call waits until all
    of them have finished before raising ``CancelledError``; a second cancellation
    while it waits does not cut that wait short. When the call returns or raises, no
    task it started is pending.

    Raises:
        TypeError, ValueError: bad input, before any agent runs.
        StepFailed: in strict mode, after every agent has finished, if any failed.
        KeyboardInterrupt, SystemExit: raised by an agent, after the others were
            cancelled and finished.
    """
    policy = StepPolicy(**options)
    return await run_entries(_prepare(agents, None, (), {}, shuffle), policy)


async def aio_call_agents(
    agents: Iterable[Agent],
    method: str | Callable[..., Any],
    /,
    *args: Any,
    policy: StepPolicy | None = None,
    shuffle: bool = False,
    **kwargs: Any,
) -> StepReport:
    """Asyncio twin of `trio_mesa.call_agents`: call ``method`` on every agent, keep results.

    Host, cancellation and errors are as in `aio_step_agents`.
    """
    entries = _prepare(agents, method, args, kwargs, shuffle)
    return await run_entries(entries, policy or StepPolicy())


async def run_entries(entries: list[_Entry], policy: StepPolicy) -> StepReport:
    """Run prepared entries (see `trio_mesa._core._prepare`) on the running asyncio loop."""
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

    def __init__(self, entries: list[_Entry], policy: StepPolicy, loop: asyncio.AbstractEventLoop):
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
        step = _GuestStep(self.entries, self.policy, self.loop)
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


# -- the step, with asyncio agents as bare tasks on the host loop --------------------------


class _GuestStep(_Step):
    """The core's step, except that asyncio agents get no Trio task of their own.

    Used on both hosts: here on the caller's asyncio loop (guest mode), and by the core
    on a Trio host with a trio-asyncio loop (`trio_mesa._core._run_on_trio_host`).

    A Trio task per agent plus an asyncio task per agent costs about three times what
    ``asyncio.gather`` pays. Here each start batch of asyncio agents (agents started at
    the same instant, sharing one deadline: see `_Step`) is one Trio task, waiting for
    that batch's asyncio tasks; each agent is one asyncio task that records its own
    outcome with the core's own recorders (``_failed``, ``_timed_out``, ...), so
    outcomes, logging, notes, fail_fast and slot accounting are the core's. Sync and
    Trio-flavored agents go through the core unchanged.
    """

    def __init__(self, entries: list[_Entry], policy: StepPolicy, loop: asyncio.AbstractEventLoop):
        # Our batches run every asyncio agent; passing a runner keeps the core from
        # opening a trio-asyncio loop for them.
        super().__init__(entries, policy, aio_runner=_no_aio_runner)
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


async def _no_aio_runner(coro: Coroutine[Any, Any, Any]) -> Any:
    coro.close()
    raise RuntimeError("trio-mesa bug: asyncio agents on a guest host run in _AioBatch")


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

    def __init__(self, step: _GuestStep, entries: list, start: float, deadline: float) -> None:
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
            if agent not in agent.model.agents:
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


# -- asyncio run by Trio itself (trio-asyncio loops) ---------------------------------------


async def _run_on_trio_asyncio(
    loop: asyncio.AbstractEventLoop, entries: list[_Entry], policy: StepPolicy
) -> StepReport:
    trio_asyncio = sys.modules.get("trio_asyncio")
    if trio_asyncio is None or not isinstance(loop, trio_asyncio.BaseTrioEventLoop):
        raise RuntimeError(
            "trio-mesa cannot drive a step from asyncio code running inside a Trio run "
            f"on {loop!r}; in Trio code use `await trio_mesa.step_agents(...)`"
        )
    step = _Step(entries, policy, aio_runner=loop.run_aio_coroutine)
    return await loop.trio_as_future(step.run)


__all__ = ["aio_call_agents", "aio_step_agents", "run_entries"]
