"""The stepping engine: one Trio task per agent, each agent's failure captured in its outcome.

`step_agents` and `call_agents` run inside a Trio run (``trio.run``, pytest-trio, or a
Trio guest run driven by another loop); `run_step` starts a Trio run of its own. The
per-agent path below runs up to 100,000 times a step, so it avoids work it can hoist:
flavors are resolved once per class, concurrency slots are taken by the spawning loop
without yielding when one is free, and a cancel scope is opened only when a timeout or
deadline applies.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import trio
from mesa import Agent
from mesa.agentset import AbstractAgentSet

from ._aio_bridge import trio_host_loop
from ._errors import AgentCancelled, AgentTimeout
from ._flavor import Flavor, _step_plans, method_plan, step_plan
from ._outcome import AgentOutcome, Status
from ._policy import StepPolicy, SyncMode
from ._report import StepReport

logger = logging.getLogger("trio_mesa")
# A library's logger gets only a NullHandler (Python's logging HOWTO): the application
# decides where failure records go. Without it, logging's last-resort handler would
# print a traceback to stderr for every failed agent of every step.
logger.addHandler(logging.NullHandler())

_now = trio.current_time
_INF = math.inf
_OK = Status.OK
_SKIPPED = Status.SKIPPED
_TRIO = Flavor.TRIO
_ASYNCIO = Flavor.ASYNCIO
_SYNC = Flavor.SYNC

# One prepared call: (agent, zero-argument callable, flavor).
_Entry = tuple[Any, Callable[[], Any], Flavor]


async def step_agents(
    agents: Iterable[Agent],
    *,
    strict: bool = False,
    fail_fast: bool = False,
    timeout: float | None = None,
    deadline: float | None = None,
    max_concurrency: int | None = None,
    limiter: trio.CapacityLimiter | None = None,
    sync_mode: SyncMode = "inline",
    max_threads: int = 128,
    abandon_threads: bool = False,
    shuffle: bool | None = None,
) -> StepReport:
    """Step every agent concurrently, each in its own Trio task, and report on each.

    Each agent's ``astep()`` (or ``step()`` if it has no ``astep``) is called once. An
    `Exception` raised by one agent is captured in that agent's `AgentOutcome` and
    logged on the ``trio_mesa`` logger; it never cancels or disturbs another agent.
    ``KeyboardInterrupt``, ``SystemExit`` and cancellation of the caller are not
    captured: the other agents are cancelled, every task the step started has finished,
    and the exception itself (not a group) propagates.

    Args:
        agents: Mesa agents: a ``model.agents``, an ``AgentSet``, ``agents_by_type[T]``
            or any iterable of agents.
        shuffle: start the agents in the order Mesa's ``shuffle_do`` would use, drawn
            from the set's ``random`` (so a seeded model reproduces it). ``None``
            (default) shuffles agent sets and keeps the order of other iterables;
            ``True`` on a plain iterable draws from the first agent's ``model.random``.
        strict, fail_fast, timeout, deadline, max_concurrency, limiter, sync_mode,
        max_threads, abandon_threads: see `StepPolicy`.

    Returns:
        A `StepReport` with one outcome per agent, in start order.

    Raises:
        TypeError, ValueError: before any agent runs, for bad input (naming it).
        StepFailed: in strict mode, after every agent has finished, if any failed.
    """
    policy = StepPolicy(
        strict=strict,
        fail_fast=fail_fast,
        timeout=timeout,
        deadline=deadline,
        max_concurrency=max_concurrency,
        limiter=limiter,
        sync_mode=sync_mode,
        max_threads=max_threads,
        abandon_threads=abandon_threads,
    )
    return await _run_on_trio_host(_prepare(agents, None, (), {}, shuffle), policy)


async def call_agents(
    agents: Iterable[Agent],
    method: str | Callable[..., Any],
    /,
    *args: Any,
    policy: StepPolicy | None = None,
    shuffle: bool = False,
    **kwargs: Any,
) -> StepReport:
    """Call ``method`` on every agent concurrently and keep each return value.

    ``method`` is a method name (``agent.method(*args, **kwargs)`` is called) or a
    function (``method(agent, *args, **kwargs)``), as in Mesa's ``AgentSet.do``. Its
    flavor decides how it runs: an ``async def`` is asyncio-flavored unless marked
    `trio_native`, anything else is sync. Return values are in each outcome's
    ``result``. Isolation and cancellation are as in `step_agents`; options come as a
    `StepPolicy` so that they cannot collide with the method's own keyword arguments.
    Agents keep their given order unless ``shuffle`` is true.
    """
    entries = _prepare(agents, method, args, kwargs, shuffle)
    return await _run_on_trio_host(entries, policy or StepPolicy())


async def _run_on_trio_host(entries: list[_Entry], policy: StepPolicy) -> StepReport:
    """Run prepared entries in the current Trio run.

    Asyncio-flavored agents run on a trio-asyncio loop as plain asyncio tasks, one Trio
    task per start batch waiting for them (`_aio_batches.AsyncioBatchStep`, shared with
    the asyncio host): a Trio task plus a bridged call per agent cost several times more.
    """
    if not any(entry[2] is _ASYNCIO for entry in entries):
        return await _Step(entries, policy).run()
    from ._aio_batches import AsyncioBatchStep

    error: BaseException | None = None
    async with trio_host_loop() as loop:
        try:
            return await AsyncioBatchStep(entries, policy, loop).run()
        except (Exception, KeyboardInterrupt, SystemExit) as exc:
            # Raised after the loop has closed, so it is not wrapped in the group of
            # trio-asyncio's nursery: callers catch StepFailed/KeyboardInterrupt as is.
            error = exc
    raise error  # type: ignore[misc]


def run_step(
    agents: Iterable[Agent], *, clock: trio.abc.Clock | None = None, **options: Any
) -> StepReport:
    """Synchronous `step_agents`: start a Trio run, step the agents, return the report.

    Accepts the same keyword options as `step_agents`, plus ``clock`` (passed to
    ``trio.run``; a ``trio.testing.MockClock`` runs timeouts in virtual time).

    Raises:
        RuntimeError: when called from inside a running Trio or asyncio event loop
            (it would block that loop); the message names the async API to await instead.
    """
    refuse_inside_event_loop("trio_mesa.run_step()")
    return trio.run(partial(step_agents, agents, **options), clock=clock)


def refuse_inside_event_loop(name: str) -> None:
    """Raise a RuntimeError naming the async API when an event loop runs in this thread."""
    if trio.lowlevel.in_trio_run():
        raise RuntimeError(
            f"{name} starts its own Trio run and cannot be called from inside a running "
            "Trio event loop; in Trio code use `await trio_mesa.step_agents(...)` "
            "(or `await trio_mesa.call_agents(...)`) instead"
        )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"{name} starts its own Trio run and cannot be called from inside a running "
        "asyncio event loop; in asyncio code use `await trio_mesa.aio_step_agents(...)` "
        "(or `await trio_mesa.compat.step_agents_parallel(...)`) instead"
    )


def _prepare(
    agents: Iterable[Agent],
    method: str | Callable[..., Any] | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    shuffle: bool | None,
) -> list[_Entry]:
    """Validate every agent and resolve its call, before any agent runs."""
    if isinstance(agents, Agent):
        raise TypeError(f"agents must be an iterable of agents, not a single agent: {agents!r}")
    if isinstance(agents, (str, bytes)) or not isinstance(agents, Iterable):
        raise TypeError(f"agents must be an iterable of Mesa agents, not {agents!r}")
    entries: list[_Entry] = []
    step_plans = _step_plans
    seen: set[int] = set()
    append = entries.append
    for agent in agents:
        if not isinstance(agent, Agent):
            raise TypeError(f"not a Mesa agent (mesa.Agent): {agent!r}")
        key = id(agent)
        if key in seen:
            raise ValueError(f"agent unique_id={agent.unique_id!r} ({agent!r}) appears twice")
        seen.add(key)
        if method is None:
            plan = step_plans.get(type(agent)) or step_plan(agent)
            append((agent, getattr(agent, plan[0]), plan[1]))
        else:
            flavor = method_plan(agent, method)
            if isinstance(method, str):
                bound = getattr(agent, method)
                call = partial(bound, *args, **kwargs) if (args or kwargs) else bound
            else:
                call = partial(method, agent, *args, **kwargs)
            append((agent, call, flavor))
    if shuffle is None:
        shuffle = isinstance(agents, AbstractAgentSet)
    if shuffle and entries:
        # Same length, same RNG: the same permutation Mesa's shuffle_do draws.
        rng = agents.random if isinstance(agents, AbstractAgentSet) else entries[0][0].model.random
        rng.shuffle(entries)
    return entries


class _Slots:
    """Free places for ``max_concurrency``: a counter that only the spawner waits on.

    A private ``trio.CapacityLimiter`` would do the same with a borrower set and a
    parking lot per call, several times the cost on a path taken 100,000 times a step.
    """

    __slots__ = ("free", "wakeup")

    def __init__(self, total: int) -> None:
        self.free = total
        self.wakeup: trio.Event | None = None

    def take_nowait(self, borrower: object) -> bool:
        if self.free:
            self.free -= 1
            return True
        return False

    async def take(self, borrower: object) -> None:
        while not self.free:
            self.wakeup = trio.Event()
            await self.wakeup.wait()
        self.free -= 1

    def give_back(self, borrower: object) -> None:
        self.free += 1
        if self.wakeup is not None:
            self.wake()

    def wake(self) -> None:
        wakeup, self.wakeup = self.wakeup, None
        if wakeup is not None:
            wakeup.set()


class _SharedLimiter:
    """A user's ``trio.CapacityLimiter`` (shared across steps) behind `_Slots`' interface."""

    __slots__ = ("limiter",)

    def __init__(self, limiter: trio.CapacityLimiter) -> None:
        self.limiter = limiter

    def take_nowait(self, borrower: object) -> bool:
        try:
            self.limiter.acquire_on_behalf_of_nowait(borrower)
        except trio.WouldBlock:
            return False
        return True

    async def take(self, borrower: object) -> None:
        await self.limiter.acquire_on_behalf_of(borrower)

    def give_back(self, borrower: object) -> None:
        self.limiter.release_on_behalf_of(borrower)


_TASK_NAME = "trio_mesa agent"  # spares Trio formatting a name for every task
_new_outcome = tuple.__new__  # AgentOutcome is a NamedTuple: skip its Python-level __new__


class _Step:
    """State shared by the tasks of one step.

    Agents the spawner starts at the same instant share one deadline (their start plus
    ``timeout``, capped by the step's deadline), so they run as one batch under one
    cancel scope, the batch's own nursery. A cancel scope per agent would cost as much
    as the agent's task itself. A batch ends when the spawner has to wait (for a free
    slot or an inline sync agent), so every agent's timeout still counts from the
    moment the step started it.
    """

    # Whether this step runs asyncio-flavored agents (`_aio_batches.AsyncioBatchStep` does).
    runs_asyncio = False

    def __init__(self, entries: list[_Entry], policy: StepPolicy):
        self.entries = entries
        self.policy = policy
        self.outcomes: list[AgentOutcome | None] = [None] * len(entries)
        self.timeout = policy.effective_timeout
        self.step_deadline = _INF
        self.slots: _Slots | _SharedLimiter | None = None
        if policy.max_concurrency is not None:
            self.slots = _Slots(policy.max_concurrency)
        elif policy.limiter is not None:
            self.slots = _SharedLimiter(policy.limiter)
        self.inline_sync = policy.sync_mode == "inline"
        self.thread_limiter: trio.CapacityLimiter | None = None
        self.nursery: trio.Nursery | None = None
        self.stopping = False  # fail_fast has fired
        self.stopped_by: Any = None
        model = getattr(entries[0][0], "model", None) if entries else None
        self.model_step: int | None = getattr(model, "steps", None)
        # The first agent's model and its agent set: whether an agent was removed before
        # its turn is asked per agent, so skip re-reading the model.agents property.
        self.model = model
        self.members = model.agents if model is not None else ()
        self.flavors: set[Flavor] = set()  # the flavors among entries, set by run()
        self.now: Callable[[], float] = _now

    async def run(self) -> StepReport:
        # The run's clock read directly: trio.current_time() looks the runner up first.
        self.now = trio.lowlevel.current_clock().current_time
        start = _now()
        if self.policy.deadline is not None:
            self.step_deadline = start + self.policy.deadline
        flavors = self.flavors = {e[2] for e in self.entries}
        if _SYNC in flavors and not self.inline_sync:
            self.thread_limiter = trio.CapacityLimiter(self.policy.max_threads)
        if _ASYNCIO in flavors and not self.runs_asyncio:
            raise RuntimeError("internal: asyncio-flavored agents need an AsyncioBatchStep")
        try:
            await self._run_all()
        except BaseExceptionGroup as group:
            raise _unwrap_fatal(group) from None
        self._fill_unstarted()
        report = StepReport(tuple(self.outcomes), self.model_step, _now() - start)  # type: ignore[arg-type]
        if self.policy.strict:
            report.raise_for_failures()
        return report

    def borrower(self, i: int) -> tuple[_Step, int]:
        """Who holds agent ``i``'s slot in a shared limiter: unique across concurrent
        steps (a limiter refuses a borrower that already holds a token) and cheap to hash.
        """
        return (self, i)

    async def _run_all(self) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            await self._spawn(nursery)

    async def _spawn(self, nursery: trio.Nursery) -> None:
        slots = self.slots
        counter = slots if type(slots) is _Slots else None
        inline_sync = self.inline_sync
        n = len(self.entries)
        if (
            (slots is None or (counter is not None and counter.free >= n))
            and not (inline_sync and _SYNC in self.flavors)
            and not self.stopping
        ):
            # Nothing to wait for (no inline sync agent, a free slot for every agent):
            # the loop below would start them all as one batch without a checkpoint,
            # so do just that, without walking the agents one by one.
            if counter is not None:
                counter.free -= n
            self._start_batch(nursery, list(range(n)))
            return
        batch: list[int] = []  # indices of the agents started at the same instant
        for i, entry in enumerate(self.entries):
            if self.stopping:
                break
            agent, call, flavor = entry
            if counter is not None and counter.free:
                counter.free -= 1  # _Slots.take_nowait, inlined: it runs per agent
            elif slots is not None and not slots.take_nowait(self.borrower(i)):
                self._start_batch(nursery, batch)
                batch = []
                with trio.CancelScope(deadline=self.step_deadline) as waiting:
                    await slots.take(self.borrower(i))
                if waiting.cancelled_caught:  # the step deadline passed while waiting
                    return
            if flavor is _SYNC and inline_sync:
                self._start_batch(nursery, batch)
                batch = []
                await self._run_inline(i, agent, call, self.borrower(i))
            else:
                batch.append(i)
        self._start_batch(nursery, batch)

    def _start_batch(self, nursery: trio.Nursery, batch: list[int]) -> None:
        """Start the agents at these indices of ``entries``, all now, sharing one deadline."""
        if not batch:
            return
        start = self.now()
        deadline = start + self.timeout
        if deadline > self.step_deadline:
            deadline = self.step_deadline
        if deadline == _INF:
            run_agent = self._run_agent
            start_soon = nursery.start_soon
            for i in batch:
                start_soon(run_agent, i, start, _INF, name=_TASK_NAME)
        else:
            nursery.start_soon(self._run_batch, batch, start, deadline)

    async def _run_batch(self, batch: list[int], start: float, deadline: float) -> None:
        async with trio.open_nursery() as nursery:
            nursery.cancel_scope.deadline = deadline
            run_agent = self._run_agent
            start_soon = nursery.start_soon
            for i in batch:
                start_soon(run_agent, i, start, deadline, name=_TASK_NAME)

    async def _run_agent(self, i: int, start: float, deadline: float) -> None:
        agent, call, flavor = self.entries[i]
        try:
            model = agent.model
            if agent not in (self.members if model is self.model else model.agents):
                self.outcomes[i] = _new_outcome(
                    AgentOutcome, (agent, agent.unique_id, _SKIPPED, None, None, 0.0, 0, False)
                )
                return
            if deadline <= start:
                self._timed_out(i, agent, start, deadline, started=False)
                return
            if flavor is _TRIO:
                result = await call()
            else:  # sync, in a worker thread (asyncio agents never get here: see run())
                result = await trio.to_thread.run_sync(
                    call, abandon_on_cancel=self.policy.abandon_threads, limiter=self.thread_limiter
                )
            end = self.now()
            if end >= deadline and flavor is _SYNC:
                self._overran(agent, deadline)
            self.outcomes[i] = _new_outcome(
                AgentOutcome, (agent, agent.unique_id, _OK, None, result, end - start, 1, False)
            )
        except Exception as exc:
            self._failed(i, agent, exc, start)
        except trio.Cancelled:
            # Our batch's deadline, fail_fast, or the caller's cancellation: the
            # Cancelled goes on to the scope that owns it, after we record why.
            if not self.stopping and _now() >= deadline:
                self._timed_out(i, agent, start, deadline, started=True, flavor=flavor)
            else:
                self._cancelled(i, agent, start)
            raise
        finally:
            slots = self.slots
            if slots is not None:
                if type(slots) is _Slots:  # _Slots.give_back, inlined: it runs per agent
                    slots.free += 1
                    if slots.wakeup is not None:
                        slots.wake()
                else:
                    slots.give_back(self.borrower(i))

    async def _run_inline(
        self, i: int, agent: Any, call: Callable[[], Any], borrower: object
    ) -> None:
        # Inline sync agents run here, in the spawning task, one after another in start
        # order (as Mesa's shuffle_do runs them), so their effects on shared model state
        # are deterministic. The checkpoint first lets agents started so far begin their
        # I/O, and is where fail_fast or the caller's cancellation reaches us.
        try:
            await trio.lowlevel.checkpoint()
            start = _now()
            if start >= self.step_deadline:
                self._timed_out(i, agent, start, self.step_deadline, started=False)
                return
            if agent not in agent.model.agents:
                self.outcomes[i] = AgentOutcome(agent, agent.unique_id, Status.SKIPPED, attempts=0)
                return
            try:
                result = call()
            except Exception as exc:
                self._failed(i, agent, exc, start)
                return
            self.outcomes[i] = AgentOutcome(
                agent, agent.unique_id, _OK, None, result, _now() - start, 1
            )
        finally:
            if self.slots is not None:
                self.slots.give_back(borrower)

    # -- the failure paths (off the hot path) ---------------------------------------

    def _note(self, agent: Any) -> str:
        where = f" in model step {self.model_step}" if self.model_step is not None else ""
        return f"trio-mesa: agent unique_id={agent.unique_id!r} ({type(agent).__qualname__}){where}"

    def _failed(self, i: int, agent: Any, exc: Exception, start: float) -> None:
        uid = agent.unique_id
        exc.add_note(self._note(agent))
        self.outcomes[i] = AgentOutcome(agent, uid, Status.FAILED, exc, None, _now() - start, 1)
        cls = type(agent).__qualname__
        logger.error(
            "agent %r (%s) failed: %s: %s",
            uid,
            cls,
            type(exc).__name__,
            exc,
            exc_info=exc,
            extra={"agent_unique_id": uid, "agent_class": cls, "agent_status": "failed"},
        )
        self._fail_fast(agent)

    def _timed_out(
        self,
        i: int,
        agent: Any,
        start: float,
        deadline: float,
        *,
        started: bool,
        flavor: Flavor | None = None,
    ) -> None:
        uid = agent.unique_id
        cls = type(agent).__qualname__
        by_deadline = deadline == self.step_deadline and deadline < start + self.timeout
        if by_deadline:
            limit = self.policy.deadline
            reason = "deadline"
            what = f"the step deadline of {limit} s passed"
        else:
            limit = self.timeout
            reason = "timeout"
            what = f"its timeout of {limit} s elapsed"
        what += " before it started" if not started else ""
        abandoned = started and flavor is _SYNC and self.policy.abandon_threads
        exc = AgentTimeout(f"agent {uid!r} ({cls}): {what}", reason=reason, limit=limit)  # type: ignore[arg-type]
        exc.add_note(self._note(agent))
        duration = _now() - start if started else 0.0
        self.outcomes[i] = AgentOutcome(
            agent, uid, Status.TIMED_OUT, exc, None, duration, 1 if started else 0, abandoned
        )
        extra = {"agent_unique_id": uid, "agent_class": cls, "agent_status": "timed_out"}
        if abandoned:
            logger.warning(
                "agent %r (%s) timed out and its worker thread was ABANDONED: it is still "
                "running and its side effects may still happen (%s)",
                uid,
                cls,
                what,
                extra=extra,
            )
        else:
            logger.warning("agent %r (%s) timed out: %s", uid, cls, what, extra=extra)
        self._fail_fast(agent)

    def _overran(self, agent: Any, deadline: float) -> None:
        # Only a worker thread (abandon_threads=False) gets here: it cannot be
        # interrupted, so the step waited for it; what it returned stands.
        logger.warning(
            "agent %r (%s) ran %.3f s past its %s in a worker thread, which cannot be "
            "interrupted: the step waited for it and kept its outcome",
            agent.unique_id,
            type(agent).__qualname__,
            _now() - deadline,
            "step deadline" if deadline == self.step_deadline else "timeout",
            extra={"agent_unique_id": agent.unique_id, "agent_class": type(agent).__qualname__},
        )

    def _cancelled(self, i: int, agent: Any, start: float) -> None:
        self.outcomes[i] = AgentOutcome(
            agent,
            agent.unique_id,
            Status.CANCELLED,
            self._cancel_exception(agent),
            None,
            _now() - start,
            1,
        )

    def _cancel_exception(self, agent: Any) -> AgentCancelled:
        if self.stopping:
            why = f"fail_fast: agent {self.stopped_by.unique_id!r} failed first"
        else:
            why = "the step was cancelled"
        exc = AgentCancelled(
            f"agent {agent.unique_id!r} ({type(agent).__qualname__}) cancelled: {why}"
        )
        exc.add_note(self._note(agent))
        return exc

    def _fail_fast(self, agent: Any) -> None:
        if self.policy.fail_fast and not self.stopping:
            self.stopping = True
            self.stopped_by = agent
            logger.info("fail_fast: agent %r failed; cancelling the others", agent.unique_id)
            self.nursery.cancel_scope.cancel()  # type: ignore[union-attr]

    def _fill_unstarted(self) -> None:
        """Agents the spawner never reached: kept from starting by fail_fast or the deadline."""
        outcomes = self.outcomes
        if None not in outcomes:  # the usual case: a C-level scan, not a Python loop
            return
        for i, outcome in enumerate(outcomes):
            if outcome is not None:
                continue
            agent = self.entries[i][0]
            if self.stopping:
                outcomes[i] = AgentOutcome(
                    agent,
                    agent.unique_id,
                    Status.CANCELLED,
                    self._cancel_exception(agent),
                    None,
                    0.0,
                    0,
                )
            else:
                self._timed_out(i, agent, _now(), self.step_deadline, started=False)


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
