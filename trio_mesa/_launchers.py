"""Launchers: how the scheduler starts a batch of agents of one flavor.

The scheduler (`trio_mesa._scheduler`) decides *when* agents start and under which
deadline; a launcher decides *how* one flavor runs: `TrioLauncher` (Trio-flavored
``astep``, in its own Trio task), `ThreadLauncher` (sync ``step()`` in a worker thread,
from its own Trio task), `InlineLauncher` (sync ``step()`` in the spawning task, one
after another) and, for asyncio agents, `trio_mesa._aio_batches.AsyncioBatchLauncher`.
Every launcher ends each agent with exactly one call to the step's `OutcomeRecorder` and
gives its slot back.

A batch is the agents started at the same instant; they share one deadline (their start
plus ``timeout``, capped by the step's deadline), so a batch runs under one cancel scope,
its own nursery's: a cancel scope per agent would cost as much as the agent's task.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

import trio

from ._attempts import AgentCall, Meters, park_trio
from ._prepare import Entry
from ._recorder import OutcomeRecorder
from ._slots import SharedSlots, Slots
from ._usage import current_ledger, open_ledger

_INF = math.inf
_TASK_NAME = "trio_mesa agent"  # spares Trio formatting a name for every task
_now = trio.current_time


class StepView(Protocol):
    """What a launcher sees of its step (the scheduler's `Step` provides it)."""

    entries: list[Entry]
    recorder: OutcomeRecorder
    slots: Slots | SharedSlots | None
    meters: Meters | None
    abandon_threads: bool
    now: Callable[[], float]

    def is_removed(self, agent: Any) -> bool: ...  # pragma: no cover


class TaskLauncher:
    """A launcher that runs each agent of a batch in a Trio task of its own.

    Subclasses say how one call runs (`invoke`). `run_agent` records the agent's outcome
    and gives its slot back whatever happens; with `Meters` it makes the agent's attempts
    through them.
    """

    #: Whether a cancelled agent's work goes on after the step stopped waiting for it.
    abandons_on_cancel = False

    def __init__(self, step: StepView) -> None:
        self.step = step
        self.entries = step.entries
        self.recorder = step.recorder
        self.slots = step.slots
        self.now = step.now  # the run's clock: launchers are made once it is known
        self.meters = step.meters
        self.turns: dict[int, AgentCall] = {}  # metered agents started, not yet running

    def start(self, nursery: trio.Nursery, batch: list[int], start: float, deadline: float) -> None:
        """Start the agents at these indices now; they share ``deadline``."""
        if self.meters is not None:
            self.turns.update(self.meters.start_turns(self.entries, batch, start, deadline))
        if deadline == _INF:
            run_agent = self.run_agent
            start_soon = nursery.start_soon
            for i in batch:
                start_soon(run_agent, i, start, _INF, name=_TASK_NAME)
        else:
            nursery.start_soon(self._run_batch, batch, start, deadline)

    async def _run_batch(self, batch: list[int], start: float, deadline: float) -> None:
        async with trio.open_nursery() as nursery:
            nursery.cancel_scope.deadline = deadline
            run_agent = self.run_agent
            start_soon = nursery.start_soon
            for i in batch:
                start_soon(run_agent, i, start, deadline, name=_TASK_NAME)

    def invoke(self, agent: Any, call: Callable[[], Any], deadline: float) -> Callable[[], Any]:
        """How one call of ``call`` runs here: a zero-argument function to await."""
        return call

    async def run_agent(self, i: int, start: float, deadline: float) -> None:
        agent, call, _ = self.entries[i]
        recorder = self.recorder
        turn = self.turns.pop(i, None)
        try:
            if self.step.is_removed(agent):
                recorder.skipped(i, agent)
            elif deadline <= start:
                recorder.timed_out(i, agent, start, deadline, started=False)
            else:
                if recorder.ledgers is not None:  # usage tracked: see _usage
                    open_ledger(recorder.ledgers, i, agent, deadline)  # this task's own context
                if turn is not None:
                    await self.meters.run(  # type: ignore[union-attr]
                        turn, self.invoke(agent, call, deadline), trio.sleep, park_trio
                    )
                else:
                    result = await self.invoke(agent, call, deadline)()
                    recorder.ok(i, agent, result, self.now() - start)
        except Exception as exc:  # the agent's (or a Retry(on=predicate)'s, say)
            recorder.failed(i, agent, exc, start, 1 if turn is None else max(turn.attempts, 1))
        except trio.Cancelled:
            self._cancelled(i, agent, start, deadline, 1 if turn is None else turn.attempts)
            raise
        finally:
            if self.slots is not None:
                self.slots.give_back(i)

    def _cancelled(
        self, i: int, agent: Any, start: float, deadline: float, attempts: int = 1
    ) -> None:
        # Our batch's deadline, fail_fast, or the caller's cancellation: record why
        # before the Cancelled goes on to the scope that owns it.
        recorder = self.recorder
        if not recorder.stopping and _now() >= deadline:
            recorder.timed_out(
                i,
                agent,
                start,
                deadline,
                started=attempts > 0,
                abandoned=self.abandons_on_cancel and attempts > 0,
                attempts=attempts,
            )
        else:
            recorder.cancelled(i, agent, start, attempts=attempts)


class TrioLauncher(TaskLauncher):
    """Trio-flavored agents: ``await call()`` directly in the agent's Trio task.

    This is the path a 100,000-agent step takes per agent, so without `Meters` it is
    `TaskLauncher.run_agent` with `invoke` inlined (`_run_plain`), chosen once here.
    """

    def __init__(self, step: StepView) -> None:
        super().__init__(step)
        if self.meters is None:
            self.run_agent = self._run_plain  # type: ignore[method-assign]

    async def _run_plain(self, i: int, start: float, deadline: float) -> None:
        agent, call, _ = self.entries[i]
        recorder = self.recorder
        try:
            if self.step.is_removed(agent):
                recorder.skipped(i, agent)
            elif deadline <= start:
                recorder.timed_out(i, agent, start, deadline, started=False)
            else:
                if recorder.ledgers is not None:  # usage tracked: see _usage
                    open_ledger(recorder.ledgers, i, agent, deadline)  # this task's own context
                result = await call()
                recorder.ok(i, agent, result, self.now() - start)
        except Exception as exc:
            recorder.failed(i, agent, exc, start)
        except trio.Cancelled:
            self._cancelled(i, agent, start, deadline)
            raise
        finally:
            if self.slots is not None:
                self.slots.give_back(i)


class ThreadLauncher(TaskLauncher):
    """Sync agents in worker threads (``sync_mode="thread"``), at most ``max_threads``.

    A thread cannot be interrupted: with ``abandon_threads=False`` a thread that outlives
    its deadline is waited for and its outcome stands (`OutcomeRecorder.overran` warns);
    with ``True`` the step stops waiting and the outcome is ``TIMED_OUT``, abandoned.
    """

    def __init__(self, step: StepView, max_threads: int) -> None:
        super().__init__(step)
        self.abandons_on_cancel = step.abandon_threads
        self.limiter = trio.CapacityLimiter(max_threads)

    def invoke(self, agent: Any, call: Callable[[], Any], deadline: float) -> Callable[[], Any]:
        async def in_a_thread() -> Any:
            try:
                result = await trio.to_thread.run_sync(
                    call, abandon_on_cancel=self.abandons_on_cancel, limiter=self.limiter
                )
            except trio.Cancelled:  # cut in a wait on the Trio thread (the seam's): on time
                raise
            except BaseException:
                if self.now() >= deadline:  # raised, after its time was up
                    self.recorder.overran(agent, deadline)
                raise
            if self.now() >= deadline:  # returned after its time was up
                self.recorder.overran(agent, deadline)
            return result

        return in_a_thread


class InlineLauncher:
    """Sync agents inline (``sync_mode="inline"``): in the spawning task, one at a time.

    They run one after another in start order, as Mesa's ``shuffle_do`` runs them, so
    their effects on shared model state are deterministic. They cannot be interrupted,
    so ``timeout`` does not apply; the step's deadline keeps later ones from starting.
    """

    def __init__(self, step: StepView) -> None:
        self.step = step

    async def _run_metered(self, i: int, step_deadline: float) -> None:
        step = self.step
        agent, call, _ = step.entries[i]
        recorder = step.recorder
        start = step.now()
        turn = AgentCall(i, agent, start, step_deadline)

        async def inline() -> Any:
            return call()

        token = _track(recorder, i, agent)  # the spawner's context: reset below
        try:
            with trio.CancelScope(deadline=step_deadline) as scope:
                await step.meters.run(turn, inline, trio.sleep, park_trio)  # type: ignore[union-attr]
        except Exception as exc:  # raised by a Retry(on=predicate), say: the agent's
            recorder.failed(i, agent, exc, start, attempts=max(turn.attempts, 1))
            return
        finally:
            if token is not None:
                current_ledger.reset(token)
        if scope.cancelled_caught:  # a wait at the gate or between attempts ran out
            recorder.timed_out(
                i, agent, start, step_deadline, started=turn.attempts > 0, attempts=turn.attempts
            )

    async def run(self, i: int, step_deadline: float) -> None:
        """Run agent ``i`` now, in the calling (spawning) task; its slot is taken."""
        step = self.step
        agent, call, _ = step.entries[i]
        recorder = step.recorder
        try:
            # The checkpoint lets agents started so far begin their I/O, and is where
            # fail_fast or the caller's cancellation reaches us.
            await trio.lowlevel.checkpoint()
            start = step.now()
            if start >= step_deadline:
                recorder.timed_out(i, agent, start, step_deadline, started=False)
            elif step.is_removed(agent):
                recorder.skipped(i, agent)
            elif step.meters is not None:
                await self._run_metered(i, step_deadline)
            else:
                token = _track(recorder, i, agent)  # the spawner's context: reset below
                try:
                    result = call()
                except Exception as exc:
                    recorder.failed(i, agent, exc, start)
                else:
                    recorder.ok(i, agent, result, step.now() - start)
                finally:
                    if token is not None:
                        current_ledger.reset(token)
        finally:
            if step.slots is not None:
                step.slots.give_back(i)


def _track(recorder: OutcomeRecorder, i: int, agent: Any) -> Any:
    """Agent ``i``'s ledger set in this context, if usage is tracked: the reset token."""
    return None if recorder.ledgers is None else open_ledger(recorder.ledgers, i, agent)


__all__ = ["InlineLauncher", "StepView", "TaskLauncher", "ThreadLauncher", "TrioLauncher"]
