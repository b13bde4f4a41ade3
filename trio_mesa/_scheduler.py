"""The scheduler: when each agent of a step starts, in which batch, under which deadline.

One `Step` per call. Its spawner walks the prepared entries in start order, takes a
concurrency slot for each, and hands batches (agents started at the same instant, so
sharing one deadline) to the launcher of their flavor (`trio_mesa._launchers`). A batch
ends where the spawner has to wait, for a free slot or an inline sync agent, so every
agent's timeout still counts from the moment the step started it. Outcomes go to the
step's `OutcomeRecorder`; the report is built once every task has finished. A step
with no ``timeout`` also runs the slow-agent watch (`trio_mesa._slow_agents`) next to
its agents, in an outer nursery cancelled once they are done.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from typing import Any

import trio

from ._aio_batches import AsyncioBatchLauncher
from ._attempts import Meters
from ._flavor import Flavor
from ._hooks import HookCalls, get_outcome_hooks, step_watch
from ._launchers import InlineLauncher, ThreadLauncher, TrioLauncher
from ._litellm_usage import install_if_litellm_imported
from ._log import logger, step_ended
from ._policy import StepPolicy
from ._prepare import Entry
from ._recorder import OutcomeRecorder
from ._report import StepReport
from ._seam import prepare_step, step_seam
from ._slots import Slots, slots_for
from ._slow_agents import watch_slow_agents, watches

_INF = math.inf
_now = trio.current_time
_SYNC = Flavor.SYNC
_ASYNCIO = Flavor.ASYNCIO
_TRIO = Flavor.TRIO
_WATCH_NAME = "trio_mesa slow-agent watch"
#: Real seconds a step waits, once its agents have ended, for litellm to log the calls
#: they made (litellm logs a call's usage from a task or thread of its own, after the
#: call returned); whatever is logged later is not in the report.
USAGE_GRACE = 5.0


class Step:
    """One step: its entries, policy, slots, recorder and one launcher per flavor present.

    Runs in a Trio task (a Trio run, or a Trio guest run driven by asyncio). Asyncio
    agents need ``loop``, the asyncio loop their tasks run on.
    """

    def __init__(
        self,
        entries: list[Entry],
        policy: StepPolicy,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.entries = entries
        self.policy = policy
        self.loop = loop
        self.timeout = policy.effective_timeout
        self.step_deadline = _INF
        self.slots = slots_for(policy)
        self.abandon_threads = policy.abandon_threads
        model = getattr(entries[0][0], "model", None) if entries else None
        # The first agent's model and its agent set: whether an agent was removed before
        # its turn is asked per agent, so skip re-reading the model.agents property.
        self.model = model
        self.members = model.agents if model is not None else ()
        self.now = _now
        if "litellm" in sys.modules:  # before the recorder: it turns usage tracking on
            install_if_litellm_imported()
        prepare_step(policy)
        self.recorder = OutcomeRecorder(
            len(entries),
            policy,
            HookCalls(get_outcome_hooks() + policy.hooks),
            getattr(model, "steps", None),
            _now,
        )
        self.meters: Meters | None = None
        if policy.metered:
            seed = f"{getattr(model, '_seed', None)!r}:{self.recorder.model_step!r}"
            limit = policy.rate_limit
            if limit is not None and limit.per_request:
                limit = None  # passed per request, at the seam (_gate)
            self.meters = Meters(policy.retry, limit, policy.breaker, self.recorder, seed)
        self.launchers: dict[Flavor, Any] = {}
        self.inline: InlineLauncher | None = None
        #: ``(start, indices)`` of each batch started, kept only while a watch needs it.
        self.batches: list[tuple[float, list[int]]] | None = None

    def is_removed(self, agent: Any) -> bool:
        """Whether ``agent`` left its model before its turn (Mesa's shuffle_do skips it)."""
        model = agent.model
        return agent not in (self.members if model is self.model else model.agents)

    async def run(self) -> StepReport:
        """Run every agent; return the report (strict mode: raise `StepFailed`)."""
        seed = f"{getattr(self.model, '_seed', None)!r}:{self.recorder.model_step!r}"
        with step_seam(self.policy, self.recorder, seed):  # every LLM request: _seam
            return await self._run()

    async def _run(self) -> StepReport:
        # The run's clock read directly: trio.current_time() looks the runner up first.
        now = self.now = self.recorder.now = trio.lowlevel.current_clock().current_time
        start = now()
        if self.policy.deadline is not None:
            self.step_deadline = self.recorder.step_deadline = start + self.policy.deadline
        breaker = self.policy.breaker
        events_before = 0
        if self.meters is not None or self.policy.rate_limit is not None:
            self._rebase(start)
            if breaker is not None:
                events_before = breaker.events_recorded
        self._make_launchers()
        if (
            type(self.slots) is Slots
            and self.inline is None
            and self.slots.free >= len(self.entries)
        ):
            # A slot for every agent and nothing that could wait for one (only this
            # step's spawner waits on its own Slots, and it will not): giving slots
            # back would be bookkeeping nobody reads, on a path taken per agent.
            self.slots = None
            for launcher in self.launchers.values():
                launcher.slots = None
        try:
            if self.policy.timeout is None and self.launchers and watches(self):
                # No timeout (math.inf is "none, on purpose"): a task next to the agents
                # warns once if one of them hangs.
                self.batches = []
                async with trio.open_nursery() as outer:
                    outer.start_soon(watch_slow_agents, self, start, name=_WATCH_NAME)
                    await self._run_agents()
                    outer.cancel_scope.cancel()
            else:
                await self._run_agents()
        except BaseExceptionGroup as group:
            raise _unwrap_fatal(group) from None
        if self.recorder.unsettled:
            await self._settle_usage()
        circuit_events: tuple[Any, ...] = ()
        if self.meters is not None or self.policy.rate_limit is not None:
            self._rebase(now())
            if breaker is not None:
                circuit_events = tuple(
                    event._replace(time=event.time - start)
                    for event in breaker.events_since(events_before)
                )
        report = self.recorder.report([e[0] for e in self.entries], now() - start, circuit_events)
        step_ended(report)
        if self.policy.strict:
            report.raise_for_failures()
        return report

    async def _run_agents(self) -> None:
        async with trio.open_nursery() as nursery:
            self.recorder.cancel_step = nursery.cancel_scope.cancel
            watch = step_watch.get()
            if watch is not None:  # a simulate run: it may stop the step (Budget)
                watch(self.recorder.stop)
            if not self.recorder.stopping:  # stopped already: no agent is started
                await self._spawn(nursery)

    async def _settle_usage(self) -> None:
        # Polls: litellm's logging may run in one of its threads, which cannot wake Trio.
        # Real time, so that a virtual clock cannot jump past the grace at once.
        recorder = self.recorder
        limit = time.monotonic() + USAGE_GRACE
        while recorder.pending_calls() and time.monotonic() < limit:
            await trio.sleep(0.001)
        pending = recorder.pending_calls()
        if pending:
            logger.warning(
                "%d litellm call(s) of this step were not logged by litellm within %g s "
                "after their agents ended; their usage is missing from the report",
                pending,
                USAGE_GRACE,
            )
        recorder.settle_usage()

    def _rebase(self, now: float) -> None:
        # A RateLimit or CircuitBreaker shared across runs keeps its times on the clock
        # of the run that used it last; each trio.run has its own. Real clocks move
        # together (the gap is measured); a virtual clock has no real gap to measure,
        # so consecutive virtual runs are taken to be back to back.
        clock = trio.lowlevel.current_clock()
        elapsed = None if type(clock).__name__ == "SystemClock" else 0.0
        for shared in (self.policy.rate_limit, self.policy.breaker):
            if shared is not None:
                shared.rebase(clock, now, elapsed=elapsed)

    def _make_launchers(self) -> None:
        flavors = {e[2] for e in self.entries}
        if _TRIO in flavors:
            self.launchers[_TRIO] = TrioLauncher(self)
        if _SYNC in flavors:
            if self.policy.sync_mode == "inline":
                self.inline = InlineLauncher(self)
            else:
                self.launchers[_SYNC] = ThreadLauncher(self, self.policy.max_threads)
        if _ASYNCIO in flavors:
            if self.loop is None:
                raise RuntimeError("internal: asyncio-flavored agents need an asyncio loop")
            self.launchers[_ASYNCIO] = AsyncioBatchLauncher(self, self.loop)

    async def _spawn(self, nursery: trio.Nursery) -> None:
        slots = self.slots
        counter = slots if type(slots) is Slots else None
        inline = self.inline
        recorder = self.recorder
        if slots is None and inline is None:
            # Nothing to wait for (no inline sync agent, no slot to take): the loop
            # below would start them all as one batch without a checkpoint, so do
            # just that, without walking the agents one by one.
            self._start_batch(nursery, list(range(len(self.entries))))
            return
        batch: list[int] = []  # indices of the agents started at the same instant
        for i, entry in enumerate(self.entries):
            if recorder.stopping:
                break
            if counter is not None and counter.free:
                counter.free -= 1  # Slots.take_nowait, inlined: it runs per agent
            elif slots is not None and not slots.take_nowait(i):
                self._start_batch(nursery, batch)
                batch = []
                with trio.CancelScope(deadline=self.step_deadline) as waiting:
                    await slots.take(i)
                if waiting.cancelled_caught:  # the step deadline passed while waiting
                    return
            if inline is not None and entry[2] is _SYNC:
                self._start_batch(nursery, batch)
                batch = []
                await inline.run(i, self.step_deadline)
            else:
                batch.append(i)
        self._start_batch(nursery, batch)

    def _start_batch(self, nursery: trio.Nursery, batch: list[int]) -> None:
        """Start the agents at these indices, all now, sharing one deadline."""
        if not batch:
            return
        start = self.now()
        if self.batches is not None:
            self.batches.append((start, batch))
        deadline = start + self.timeout
        if deadline > self.step_deadline:
            deadline = self.step_deadline
        launchers = self.launchers
        if len(launchers) == 1:  # one flavor: the batch as it is
            for launcher in launchers.values():
                launcher.start(nursery, batch, start, deadline)
            return
        entries = self.entries
        by_flavor: dict[Flavor, list[int]] = {}
        for i in batch:
            by_flavor.setdefault(entries[i][2], []).append(i)
        for flavor, part in by_flavor.items():
            launchers[flavor].start(nursery, part, start, deadline)


def _unwrap_fatal(group: BaseExceptionGroup) -> BaseException:
    """The KeyboardInterrupt or SystemExit inside ``group``, or the group itself.

    Only those (and Cancelled) can escape the agent tasks, since every Exception is
    captured; users expect ``except KeyboardInterrupt`` to work, not ``except*``.
    """
    for kind in (KeyboardInterrupt, SystemExit):
        match = group.subgroup(kind)
        if match is not None:
            leaf: BaseException = match
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            return leaf
    return group


__all__ = ["Step"]
