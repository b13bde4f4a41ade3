"""`simulate` and `aio_simulate`: call ``model.step()`` N times, every agent step through
trio-mesa, and return a `RunReport`.

How it runs. ``model.step()`` is sync, and the agent sets it steps must run on an event
loop that is *not* blocked by it, so each ``model.step()`` call runs in a worker thread
(one at a time: the model is only ever touched by one thread) while the host's loop
runs on: the Trio run of `simulate` (``trio.to_thread``) or the caller's asyncio loop
for `aio_simulate` (``run_in_executor``). Inside that thread, the automatic stepping
patch compat's `enable_automatic_parallel_stepping` uses too
(`trio_mesa._auto_stepping.stepping_for_run`, installed for the run only) turns
``shuffle_do("step")``/``("astep")`` into a blocking call back into the host loop
(``trio.from_thread.run`` / ``asyncio.run_coroutine_threadsafe``), where
the step runs as any `step_agents`/`aio_step_agents` call would. The one loop serves
every step of the run, so asyncio agents (on the Trio host: one trio-asyncio loop opened
for the whole run when ``model.agents`` has an asyncio-flavored agent at the start) keep
their loop-bound objects between steps. The simpler alternative, a fresh event loop per
agent-set step (what compat's sync ``shuffle_do`` does), breaks exactly those objects.

How the reports reach the run. The run's `StepPolicy` carries one more hook (the run's
collector): its ``on_report`` files each agent-set step's report under the model step
running. It has an ``on_outcome`` too only when a `Budget` limits usage or progress is
shown, so that a plain run adds no call per agent. A `Budget` with ``stop="now"`` stops
the running step through `trio_mesa._hooks.step_watch`, which each step started in the
run's context calls once with its ``stop`` function.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sys
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any

import trio

from ._api import (
    aio_call_agents,
    aio_step_agents,
    call_agents,
    refuse_inside_event_loop,
    step_agents,
)
from ._auto_stepping import stepping_for_run
from ._budget import Budget
from ._checks import check_count, shown
from ._flavor import Flavor, step_plan
from ._hooks import step_watch
from ._outcome import FAILURE_STATUSES, AgentOutcome, Status
from ._policy import StepPolicy, resolve_policy
from ._recording import using_recording
from ._report import StepReport
from ._run_report import ModelStep, RunReport
from ._usage import NO_USAGE, Usage, track_usage

#: The most steps one run takes: ten million, beyond any real run (and refused
#: before the first step, like every other bad argument).
MAX_RUN_STEPS = 10_000_000

#: The latest run of each model (what `trio_mesa.model_reporters` read).
runs_by_model: weakref.WeakKeyDictionary[Any, Run] = weakref.WeakKeyDictionary()


class Run:
    """The state of one run: finished steps, the step running, live figures, the budget."""

    def __init__(
        self,
        model: Any,
        steps: int,
        budget: Budget | None,
        now: Callable[[], float],
        *,
        real_time: bool = False,
    ) -> None:
        self.model = model
        self.requested = steps
        self.budget = budget
        # The run's clock: read only on the thread that runs the host loop (the Trio
        # run's clock raises anywhere else). ``real_time``: it ticks with the wall.
        self.now = now
        self.real_time = real_time
        self.lock = threading.Lock()
        self.finished: list[ModelStep] = []
        self.step = 0  # the run's step running (from 1), 0 before the first
        self.step_reports: list[StepReport] = []
        self.step_started = 0.0
        self.in_step = False
        self.started = now()
        self.stopped_because: str | None = None
        self.stop_now = False
        self.stoppers: list[Callable[[str], None]] = []
        # Live figures (progress, budget): settled totals plus the running step's outcomes.
        self.usage_done: Usage = NO_USAGE
        self.usage_live: Usage = NO_USAGE
        self.agent_steps = 0
        self.lost = 0
        self.ok = 0
        self.failed = 0
        self.expected = 0  # agents of the agent-set steps started and not reported
        self.done = 0  # outcomes seen of those
        # The ETA as estimated at the end of the last step, and the monotonic time then.
        self.eta_estimate: tuple[float, float] | None = None

    # -- figures ---------------------------------------------------------------------

    @property
    def usage(self) -> Usage:
        return self.usage_done + self.usage_live

    @property
    def in_flight(self) -> int:
        return max(0, self.expected - self.done)

    def latest_reports(self) -> tuple[StepReport, ...]:
        """The running step's reports so far, or the last finished step's."""
        with self.lock:
            if self.in_step or not self.finished:
                return tuple(self.step_reports)
            return self.finished[-1].reports

    def eta(self) -> float | None:
        """Seconds left at the mean pace of the finished steps (``None`` before one).

        Safe from any thread, and never reads the run's clock: the display calls it
        from whichever thread wrote to stdout or stderr (rich renders it there), and
        the Trio run's clock raises outside the Trio thread. It reads the estimate made
        at the end of the last step (`end_step`, on the host loop's thread), counted
        down by the wall time since in a real-time run (a virtual-time run shows it
        as it was at the step's end).
        """
        estimate = self.eta_estimate
        if estimate is None or self.stopped_because is not None:
            return None
        seconds, taken = estimate
        if self.real_time:
            seconds -= time.monotonic() - taken
        return max(0.0, seconds)

    # -- events ----------------------------------------------------------------------

    def begin_step(self, number: int) -> None:
        with self.lock:
            self.step = number
            self.step_reports = []
            self.step_started = self.now()
            self.in_step = True

    def end_step(self) -> None:
        now = self.now()
        with self.lock:
            self.finished.append(
                ModelStep(self.step, tuple(self.step_reports), now - self.step_started)
            )
            self.step_reports = []
            self.in_step = False
            done = len(self.finished)
            pace = (now - self.started) / done
            self.eta_estimate = (max(0.0, pace * (self.requested - done)), time.monotonic())
        self.final_reason()

    def expect(self, agents: int) -> None:
        with self.lock:
            self.expected += agents

    def on_outcome(self, outcome: AgentOutcome) -> None:
        with self.lock:
            self.done += 1
            if outcome.status is Status.OK:
                self.ok += 1
            elif outcome.status in FAILURE_STATUSES:
                self.failed += 1
            if outcome.usage:
                self.usage_live = self.usage_live + outcome.usage
            budget = self.budget
            why = budget.usage_crossed(self.usage) if budget is not None else None
        if why is not None:
            self.stop(why)

    def on_report(self, report: StepReport) -> None:
        with self.lock:
            self.step_reports.append(report)
            n = len(report)
            self.expected = max(0, self.expected - n)
            self.done = max(0, self.done - n)
            self.usage_done = self.usage_done + report.usage
            self.usage_live = NO_USAGE
            self.agent_steps += n
            self.lost += sum(1 for o in report.outcomes if o.status in FAILURE_STATUSES)
            budget = self.budget
            why = None
            if budget is not None:
                why = budget.usage_crossed(self.usage_done) or budget.lost_crossed(
                    self.lost, self.agent_steps
                )
        if why is not None:
            self.stop(why)

    def watch(self, stop: Callable[[str], None]) -> None:
        """`step_watch`: a step of this run started; ``stop`` cancels it."""
        with self.lock:
            self.stoppers.append(stop)
            now = self.stop_now
            why = self.stopped_because
        if now:
            stop(f"the run was stopped: {why}")

    def stop(self, why: str) -> None:
        """A limit was reached (``why`` names it and the figures at that moment)."""
        with self.lock:
            if self.stopped_because is not None:
                return
            assert self.budget is not None
            self.stop_now = self.budget.stop == "now"
            # "now": the figures when the limit was reached, in the step it stopped;
            # "after_step": rewritten with the step's final figures by `end_step`.
            self.stopped_because = f"{why} in step {self.step}"
            stoppers = list(self.stoppers) if self.stop_now else []
        for stop in stoppers:
            stop(f"the run was stopped: {self.stopped_because}")

    def final_reason(self) -> None:
        """After a step that reached a limit with ``stop="after_step"``: the figures then."""
        budget = self.budget
        if self.stopped_because is None or budget is None or self.stop_now:
            return
        why = budget.usage_crossed(self.usage_done) or budget.lost_crossed(
            self.lost, self.agent_steps
        )
        if why is not None:
            self.stopped_because = f"{why} after step {self.step}"

    def report(self) -> RunReport:
        return RunReport(
            tuple(self.finished), self.requested, self.stopped_because, self.now() - self.started
        )


class _Collector:
    """The run's hook: each agent-set step's report, filed under its model step."""

    def __init__(self, run: Run) -> None:
        self.on_report = run.on_report

    def __repr__(self) -> str:
        return "<trio_mesa.simulate run collector>"


class _Watcher(_Collector):
    """The collector, plus every outcome as it ends (a `Budget` on usage, progress)."""

    def __init__(self, run: Run) -> None:
        super().__init__(run)
        self.on_outcome = run.on_outcome


# -- checks --------------------------------------------------------------------------------


def _check_arguments(where: str, model: Any, steps: Any, budget: Any, progress: Any) -> None:
    if not callable(getattr(model, "step", None)):
        raise TypeError(f"{where}: model must have a callable step() method, not {shown(model)}")
    check_count(f"{where}: steps", steps, minimum=0, maximum=MAX_RUN_STEPS)
    if budget is not None and not isinstance(budget, Budget):
        raise TypeError(f"{where}: budget must be a trio_mesa.Budget or None, not {shown(budget)}")
    if progress is not None and progress is not True and progress is not False:
        raise TypeError(f"{where}: progress must be True, False or None, not {shown(progress)}")


def _show_progress(where: str, progress: bool | None) -> bool:
    if progress is None:
        isatty = getattr(sys.stderr, "isatty", None)
        if not (callable(isatty) and isatty()):
            return False
        try:
            import rich
        except ImportError:
            return False
        return True
    if progress:
        try:
            import rich  # noqa: F401
        except ImportError:
            raise ImportError(
                f"{where}: progress=True needs rich: pip install 'trio-mesa[progress]'"
            ) from None
    return progress


def _run_policy(where: str, policy: Any, options: dict[str, Any], hook: Any) -> StepPolicy:
    resolved = resolve_policy(where, policy, options)
    return resolved.replace(hooks=(*resolved.hooks, hook))


@contextmanager
def _scoped(run: Run, policy: StepPolicy, stepper: Callable[[Any, str], Any]) -> Iterator[None]:
    """The run's context: automatic stepping and its policy (``do_async``), the watch."""
    token = step_watch.set(run.watch)
    try:
        with stepping_for_run(stepper, policy):
            yield
    finally:
        step_watch.reset(token)


@contextmanager
def _progress_shown(run: Run, show: bool) -> Iterator[None]:
    if not show:
        yield
        return
    from ._progress import live_progress

    with live_progress(run):
        yield


def _prepare(
    where: str,
    model: Any,
    steps: Any,
    budget: Any,
    progress: Any,
    policy: Any,
    options: dict[str, Any],
    now: Callable[[], float],
    real_time: bool,
) -> tuple[Run, StepPolicy, bool]:
    _check_arguments(where, model, steps, budget, progress)
    show = _show_progress(where, progress)
    run = Run(model, steps, budget, now, real_time=real_time)
    hook = (
        _Watcher(run) if show or (budget is not None and budget.limits_usage) else _Collector(run)
    )
    resolved = _run_policy(where, policy, options, hook)
    track_usage()
    runs_by_model[model] = run
    return run, resolved, show


# -- the Trio host -------------------------------------------------------------------------


def simulate(
    model: Any,
    steps: int,
    *,
    budget: Budget | None = None,
    progress: bool | None = None,
    policy: StepPolicy | None = None,
    clock: trio.abc.Clock | None = None,
    cassette: Any = None,
    record: str | None = None,
    **options: Any,
) -> RunReport:
    """Run ``model.step()`` ``steps`` times with every agent step going through trio-mesa.

    The model's own ``step()`` is called, so a model whose step does more than step its
    agents works unchanged. While it runs, ``shuffle_do("step")`` and
    ``shuffle_do("astep")`` on any agent set (``model.agents``, ``agents_by_type[T]``,
    an ``AgentSet``) step those agents concurrently, each isolated, in Mesa's shuffled
    order, with ``policy`` and ``options`` (`StepPolicy` fields, as in `step_agents`);
    so does ``do_async`` (through `trio_mesa.compat`). Each such agent-set step's
    `StepReport` is kept under the model step it ran in. The patch is in force only for
    this call (and only in the context the model steps run in); if automatic parallel
    stepping was already enabled it is left as it was.

    Runs its own Trio run (``clock`` goes to ``trio.run``: a ``MockClock`` runs the
    agents' time in virtual time); each ``model.step()`` runs in a worker thread, one
    at a time, while the Trio run steps the agents (see the module's notes).

    Usage tracking is turned on (`track_usage`). ``budget`` (a `Budget`) stops the run
    early and cleanly; ``progress`` shows a live display on stderr (``None``: only when
    stderr is a terminal and rich is installed; ``True``: always, rich needed; ``False``:
    never).

    ``cassette`` (a file path, or a `Recording` from `use_cassette`) records or
    replays every LLM request the agents make during the run, by ``record`` mode
    (``"none"``, ``"once"`` (default), ``"new_episodes"``, ``"all"``), keyed by (agent
    ``unique_id``, that agent's call number in the run): see `use_cassette`. With no
    server, proxy or ``api_base`` change: ``record="none"`` runs offline.

    Returns:
        A `RunReport`.

    Raises:
        TypeError, ValueError: bad arguments (naming them), before the first step.
        CassetteError: a cassette that cannot be replayed (missing, truncated,
            edited), naming file, line and field, before the first step.
        RuntimeError: called from inside a running event loop (use `aio_simulate`).
        ImportError: ``progress=True`` without rich.
        Exception: whatever ``model.step()`` raises (a `StepFailed` in strict mode, say)
            ends the run and propagates; KeyboardInterrupt cancels the agents still
            running. The patch is removed in every case.
    """
    where = "trio_mesa.simulate()"
    _refuse_inside_event_loop(where)
    if clock is not None and not isinstance(clock, trio.abc.Clock):
        raise TypeError(f"{where}: clock must be a trio.abc.Clock or None, not {shown(clock)}")
    _check_arguments(where, model, steps, budget, progress)
    box: list[RunReport] = []

    async def main() -> None:
        now = trio.current_time
        real_time = clock is None
        run, resolved, show = _prepare(
            where, model, steps, budget, progress, policy, options, now, real_time
        )
        box.append(await _trio_run(run, resolved, show))

    with using_recording(where, cassette, record):
        trio.run(main, clock=clock)
    return box[0]


def _refuse_inside_event_loop(where: str) -> None:
    try:
        refuse_inside_event_loop(where)
    except RuntimeError:
        raise RuntimeError(
            f"{where} starts its own Trio run and cannot be called from inside a running "
            "event loop; in asyncio code use `await trio_mesa.aio_simulate(...)`"
        ) from None


def _has_asyncio_agents(model: Any) -> bool:
    agents = getattr(model, "agents", ())
    try:
        return any(step_plan(agent)[1] is Flavor.ASYNCIO for agent in agents)
    except Exception:  # an odd agent: let the step's own validation name it
        return False


async def _trio_run(run: Run, policy: StepPolicy, show: bool) -> RunReport:
    def stepper(agent_set: Any, method: str) -> StepReport:
        run.expect(len(agent_set))
        if method == "step":
            return trio.from_thread.run(_trio_step, agent_set)
        return trio.from_thread.run(_trio_call, agent_set, method)

    async def _trio_step(agent_set: Any) -> StepReport:
        return await step_agents(agent_set, policy=policy)

    async def _trio_call(agent_set: Any, method: str) -> StepReport:
        shuffled = policy if policy.shuffle is not None else policy.replace(shuffle=True)
        return await call_agents(agent_set, method, policy=shuffled)

    async def steps() -> None:
        with _scoped(run, policy, stepper), _progress_shown(run, show):
            context = contextvars.copy_context()
            for number in range(1, run.requested + 1):
                run.begin_step(number)
                try:
                    await trio.to_thread.run_sync(context.run, run.model.step)
                finally:
                    run.end_step()
                if run.stopped_because is not None:
                    break

    if _has_asyncio_agents(run.model):
        from ._aio_bridge import with_trio_host_loop

        # One loop for the whole run; a Ctrl-C reaches the caller as itself, not in
        # the groups of the loop's nurseries.
        await with_trio_host_loop(lambda _: steps())
    else:
        await steps()
    return run.report()


# -- the asyncio host ----------------------------------------------------------------------


async def aio_simulate(
    model: Any,
    steps: int,
    *,
    budget: Budget | None = None,
    progress: bool | None = None,
    policy: StepPolicy | None = None,
    cassette: Any = None,
    record: str | None = None,
    **options: Any,
) -> RunReport:
    """Asyncio twin of `simulate`: await it on your loop; agents run on that loop.

    Arguments, budget, progress, cassette and the returned `RunReport` are as in
    `simulate` (no ``clock``: the run is in real time). Each ``model.step()`` runs in a
    worker thread (the loop's default executor is not used: one thread of the run's own), and the
    agent-set steps it makes run on the awaiting loop, as `aio_step_agents` would, so
    objects bound to that loop keep working across steps.

    Cancellation: cancelling the awaiting task cancels the agent-set step running; the
    ``model.step()`` running then finishes (a thread cannot be interrupted) before
    ``CancelledError`` propagates, and no later step is started.
    """
    where = "trio_mesa.aio_simulate()"
    loop = asyncio.get_running_loop()
    run, resolved, show = _prepare(
        where, model, steps, budget, progress, policy, options, time.perf_counter, True
    )
    # The agent-set steps running on the loop, and whether the run is being cancelled
    # (then no step starts: one submitted just before would otherwise run in full).
    # Both are touched only on the loop's thread.
    running: set[asyncio.Task[StepReport]] = set()
    stopping = False

    async def tracked(coro: Coroutine[Any, Any, StepReport]) -> StepReport:
        if stopping:
            coro.close()
            raise asyncio.CancelledError
        task = asyncio.current_task()
        assert task is not None
        running.add(task)
        try:
            return await coro
        finally:
            running.discard(task)

    def stepper(agent_set: Any, method: str) -> StepReport:
        run.expect(len(agent_set))
        if method == "step":
            coro = aio_step_agents(agent_set, policy=resolved)
        else:
            shuffled = resolved if resolved.shuffle is not None else resolved.replace(shuffle=True)
            coro = aio_call_agents(agent_set, method, policy=shuffled)
        return asyncio.run_coroutine_threadsafe(tracked(coro), loop).result()

    from concurrent.futures import ThreadPoolExecutor

    with (
        using_recording(where, cassette, record),
        _scoped(run, resolved, stepper),
        _progress_shown(run, show),
        ThreadPoolExecutor(1, thread_name_prefix="trio-mesa-simulate") as pool,
    ):
        context = contextvars.copy_context()
        for number in range(1, run.requested + 1):
            run.begin_step(number)
            work = loop.run_in_executor(pool, context.run, run.model.step)
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                # Cancel the agent-set step on the loop (its task: cancelling the
                # thread's concurrent future instead would release model.step() while
                # its agents were still being cancelled), then wait for model.step().
                stopping = True
                while not work.done():
                    for task in list(running):
                        task.cancel()
                    # Cancelled again (a second Ctrl-C): still wait. Leaving now, the
                    # pool's shutdown would join model.step()'s thread on this loop's
                    # thread while that thread waits on this loop: a deadlock.
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.wait([work])
                if not work.cancelled():
                    # Taken, or asyncio logs "Future exception was never retrieved" at
                    # exit: model.step() ends with the step's CancelledError, and the
                    # cancellation raised here is what the caller gets.
                    work.exception()
                run.end_step()
                raise
            run.end_step()
            if run.stopped_because is not None:
                break
    return run.report()


__all__ = ["aio_simulate", "simulate"]
