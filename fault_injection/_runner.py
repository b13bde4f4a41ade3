"""`run_scenario`: run a scenario step by step, checking each step against the oracle.

On the Trio host (default) the whole run is one ``trio.run``, under
``trio.testing.MockClock(autojump_threshold=0)`` virtual time unless ``real_time`` is
set: a 30-second latency costs nothing and every run is exactly the same. With
``real_time`` (and always on the asyncio host) latencies and time limits are multiplied by
the scenario's ``real_time_scale``. The expected outcomes are computed before the first
step runs; each step is then checked as soon as it ends (`check_step`). Both hosts run
the same step loop (`_run_steps`): a host only supplies how a step is called and how
leftover tasks are found (its `_Stepper`). A step that
raises ``KeyboardInterrupt`` ends the run (as it would end a user's simulation); so does
a step that raises anything the oracle did not plan.
"""

from __future__ import annotations

import asyncio
import gc
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import trio

import trio_mesa
from trio_mesa import Status, StepFailed, StepReport
from trio_mesa._text import CELL_LIMIT, describe_exception

from ._agents import FakeLLMModel
from ._checker import ObservedStep, check_step
from ._oracle import ExpectedRun, ExpectedStep, expected_run
from ._plan import REAL_TIME_MARGIN, FaultPlan
from ._scenario import Scenario

Host = Literal["trio", "asyncio"]
HOSTS: tuple[str, ...] = ("trio", "asyncio")


@dataclass(slots=True)
class StepResult:
    """What one step did, in model seconds.

    Attributes:
        step: the model step.
        statuses: ``unique_id`` -> `Status` (empty when the step raised no report).
        failures: exception type name -> count, over the failed outcomes.
        durations: each started agent's duration, in model seconds.
        raised: type name of what the step raised (``"StepFailed"``,
            ``"KeyboardInterrupt"``) or ``None``.
        mismatches: what `check_step` found wrong (empty when the oracle matched).
    """

    step: int
    statuses: dict[Any, Status]
    failures: Counter[str]
    durations: list[float]
    raised: str | None
    mismatches: list[str]
    #: (unique_id, agent class, status name, "ExceptionType: message") per outcome that
    #: was not OK, in start order: plain values, so a long run keeps no tracebacks alive.
    not_ok: list[tuple[Any, str, str, str]] = field(default_factory=list)
    #: calls started in the step (every agent's attempts) and agents that needed more than one
    attempts: int = 0
    retried: int = 0
    #: model seconds the step took, on the run's clock: virtual time under the
    #: MockClock (rate-limit waits included), real time divided by the scale otherwise
    seconds: float = 0.0

    @property
    def counts(self) -> dict[Status, int]:
        """Agents per status, every `Status` present."""
        c = Counter(self.statuses.values())
        return {s: c.get(s, 0) for s in Status}

    def __repr__(self) -> str:
        counts = " ".join(f"{s.value}={n}" for s, n in self.counts.items() if n)
        verdict = "matched" if not self.mismatches else f"mismatches={len(self.mismatches)}"
        raised = f" raised={self.raised}" if self.raised else ""
        return (
            f"<StepResult step={self.step} agents={len(self.statuses)} {counts or 'empty'} "
            f"attempts={self.attempts}{raised} {verdict}>"
        )

    def __str__(self) -> str:
        counts = ", ".join(f"{n} {s.value.replace('_', ' ')}" for s, n in self.counts.items() if n)
        line = f"step {self.step}: {len(self.statuses)} agents ({counts or 'none'})"
        if self.failures:
            line += "; failures: " + ", ".join(f"{n} {k}" for k, n in self.failures.most_common())
        if self.retried:
            line += f"; {self.retried} retried, {self.attempts} attempts"
        if self.raised:
            line += f"; raised {self.raised}"
        return line + ("; oracle matched" if not self.mismatches else "; MISMATCH")

    def percentile(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) of ``durations`` (nearest rank), or ``None``."""
        if not self.durations:
            return None
        ordered = sorted(self.durations)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


@dataclass(slots=True)
class RunResult:
    """A whole run: the prediction, what each step did, and every mismatch."""

    scenario: Scenario
    seed: int
    host: str
    real_time: bool
    expected: ExpectedRun
    steps: list[StepResult] = field(default_factory=list)
    #: real seconds the whole run took (the process's clock, not the run's)
    wall_time: float = 0.0
    #: the fake provider's quota at the end (`TokenBucket.stats`: ``admitted``,
    #: ``refused`` = 429s answered, ...), or ``None`` without a quota.
    quota: dict[str, float | int] | None = None
    #: a run kept in a run directory (``run --checkpoint DIR``, ``resume DIR``): the
    #: directory, the steps it resumed after, and why it stopped early (or ``None``)
    checkpoint: str | None = None
    resumed_after: tuple[int, ...] = ()
    stopped_because: str | None = None

    def __repr__(self) -> str:
        # Short on purpose: the full data is on the attributes and in to_json().
        ok = sum(s.counts[Status.OK] for s in self.steps)
        total = sum(len(s.statuses) for s in self.steps)
        verdict = "matched" if self.matched else f"mismatches={len(self.mismatches)}"
        return (
            f"<RunResult {self.scenario.name!r} seed={self.seed} host={self.host} "
            f"steps={len(self.steps)}/{len(self.expected.steps)} agents={self.scenario.agents} "
            f"ok={ok} lost={total - ok} {verdict}>"
        )

    def __str__(self) -> str:
        """The CLI's plain-text summary: a row per step, the failures, the verdict."""
        from ._cli import render_text  # the CLI renders; it imports this module

        return render_text(self).rstrip("\n")

    @property
    def mismatches(self) -> list[str]:
        """Every step's mismatches, plus one if the run stopped before the oracle's last step."""
        out = [m for s in self.steps for m in s.mismatches]
        if len(self.steps) < len(self.expected.steps):
            out.append(
                f"the run stopped after step {len(self.steps)}; "
                f"the oracle expected {len(self.expected.steps)} steps"
            )
        return out

    @property
    def matched(self) -> bool:
        """``True`` when every step matched the oracle."""
        return not self.mismatches

    @property
    def model_seconds(self) -> float:
        """Model seconds the steps took, summed: virtual time under the MockClock (what
        the run's latencies, limits and rate-limit waits add up to), not `wall_time`."""
        return sum(s.seconds for s in self.steps)

    def outcome_table(self) -> list[dict[str, str]]:
        """Per step, ``str(unique_id)`` -> status value: what must agree across hosts and runs."""
        return [{str(u): s.value for u, s in step.statuses.items()} for step in self.steps]

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` document: scenario, seed, host, steps and mismatches."""
        steps = []
        for s in self.steps:
            item: dict[str, Any] = {
                "counts": {status.value: n for status, n in s.counts.items()},
                "statuses": {str(u): s.statuses[u].value for u in sorted(s.statuses, key=_uid_key)},
            }
            if s.raised is not None:
                item["raised"] = s.raised
            steps.append(item)
        return {
            "scenario": self.scenario.name,
            "seed": self.seed,
            "host": self.host,
            "steps": steps,
            **({"quota": self.quota} if self.quota is not None else {}),
            **(
                {
                    "checkpoint": self.checkpoint,
                    "resumed_after": list(self.resumed_after),
                    "stopped_because": self.stopped_because,
                }
                if self.checkpoint is not None
                else {}
            ),
            "mismatches": self.mismatches,
        }


def run_scenario(
    scenario: Scenario,
    seed: int | None = None,
    *,
    agents: int | None = None,
    steps: int | None = None,
    strict: bool | None = None,
    host: Host = "trio",
    real_time: bool = False,
    on_step: Callable[[StepResult], None] | None = None,
) -> RunResult:
    """Run ``scenario`` and check every step against the oracle.

    Args:
        seed, agents, steps, strict: override the scenario's.
        host: ``"trio"`` (``trio.run``) or ``"asyncio"`` (``asyncio.run`` through
            ``trio_mesa.compat``; always real time).
        real_time: on the Trio host, run in real time (scaled by the scenario's
            ``real_time_scale``) instead of virtual time.
        on_step: called with each `StepResult` as soon as its step is checked.

    Returns:
        The `RunResult`; ``result.matched`` says whether the oracle matched.

    Raises:
        ValueError: for an unknown host or bad overrides (before anything runs).
    """
    if host not in HOSTS:
        raise ValueError(f"host must be one of {HOSTS}, not {host!r}")
    changes: dict[str, Any] = {}
    for name, value in (("agents", agents), ("steps", steps), ("strict", strict)):
        if value is not None:
            changes[name] = value
    if changes:
        scenario = scenario.replace(**changes)
    real_time = real_time or host == "asyncio"
    scale = scenario.real_time_scale if real_time else 1.0
    tolerance = REAL_TIME_MARGIN / scale if real_time else 0.0
    expected = expected_run(scenario, seed, tolerance=tolerance)
    plan = expected.plan
    result = RunResult(scenario, expected.seed, host, real_time, expected)
    started = time.perf_counter()
    if host == "trio":
        clock = None if real_time else _mock_clock()
        trio.run(_run_on_trio, plan, expected, scale, result, on_step, clock=clock)
    else:
        _run_on_asyncio(plan, expected, scale, result, on_step)
    result.wall_time = time.perf_counter() - started
    return result


async def _run_on_trio(
    plan: FaultPlan,
    expected: ExpectedRun,
    scale: float,
    result: RunResult,
    on_step: Callable[[StepResult], None] | None,
) -> None:
    model = FakeLLMModel(plan, scale=scale)
    options = plan.scenario.policy(scale).as_kwargs()
    try:
        await _run_steps(_TrioStepper(options), model, expected, scale, result, on_step)
    finally:
        result.quota = model.quota.stats() if model.quota is not None else None


def _run_on_asyncio(
    plan: FaultPlan,
    expected: ExpectedRun,
    scale: float,
    result: RunResult,
    on_step: Callable[[StepResult], None] | None,
) -> None:
    # Imported here: the Trio host must not pay for (or depend on) the asyncio host.
    from trio_mesa import compat

    async def main() -> None:
        # The quota's clock: real time, as the guest run's (its SystemClock is
        # perf_counter plus an offset, and only differences matter to a bucket).
        model = FakeLLMModel(plan, scale=scale, clock=time.perf_counter)
        policy = plan.scenario.policy(scale)
        stepper = _AsyncioStepper()
        # The scenario's whole policy: compat's own defaults differ (sync agents in
        # threads), and both hosts must run the same policy to give the same table.
        try:
            with compat.policy(**policy.as_kwargs()):
                await _run_steps(stepper, model, expected, scale, result, on_step)
        finally:
            result.quota = model.quota.stats() if model.quota is not None else None

    asyncio.run(main())


async def _run_steps(
    stepper: _Stepper,
    model: FakeLLMModel,
    expected: ExpectedRun,
    scale: float,
    result: RunResult,
    on_step: Callable[[StepResult], None] | None,
) -> None:
    """The step loop of both hosts: step, observe, check, report, one oracle step at a time.

    A step that raises `StepFailed` still has its report checked; one that raises
    anything else (``KeyboardInterrupt``, an error the oracle did not plan) is checked
    and ends the run, as it would end a user's simulation.
    """
    for exp in expected.steps:
        stepper.before_step()
        observe = _Observation(model, exp)
        report: StepReport | None = None
        raised: BaseException | None = None
        started = stepper.now()
        try:
            with _collector_held_off(result.real_time):
                report = await stepper.step(model)
        except StepFailed as exc:
            report, raised = exc.report, exc
        except (Exception, KeyboardInterrupt) as exc:
            raised = exc
        step = observe.finish(report, raised, scale, leftover=stepper.leftover_tasks())
        step.seconds = (stepper.now() - started) / scale
        result.steps.append(step)
        if on_step is not None:
            on_step(step)
        if raised is not None and not isinstance(raised, StepFailed):
            break


class _Stepper(Protocol):
    """One host's way to run a step, and to name the tasks a step left behind."""

    def before_step(self) -> None:
        """Called just before each step (and before the model counts it)."""

    def now(self) -> float:
        """The host loop's clock, in seconds (virtual time under a MockClock)."""
        ...

    async def step(self, model: FakeLLMModel) -> StepReport:
        """Step every agent of ``model`` once; raise what the step raised."""
        ...

    def leftover_tasks(self) -> list[str]:
        """Names of the tasks still running after the step (none, if nothing leaked)."""
        ...


class _TrioStepper:
    """The Trio host: `trio_mesa.step_agents`, which shuffles ``model.agents`` itself.

    Leftover tasks are the Trio tasks that exist after the step and did not before it.
    """

    def __init__(self, options: dict[str, Any]) -> None:
        self._options = options
        self._before: set[trio.lowlevel.Task] = set()

    def before_step(self) -> None:
        self._before = _trio_tasks()

    def now(self) -> float:
        return trio.current_time()

    async def step(self, model: FakeLLMModel) -> StepReport:
        return await trio_mesa.step_agents(model.agents, **self._options)

    def leftover_tasks(self) -> list[str]:
        return [t.name for t in _trio_tasks() - self._before]


class _AsyncioStepper:
    """The asyncio host: mesa-llm's own call, through ``trio_mesa.compat``.

    Made inside the running loop, by the task that runs the steps: leftover tasks are
    every unfinished asyncio task but that one.
    """

    def __init__(self) -> None:
        self._me = asyncio.current_task()

    def before_step(self) -> None:
        pass

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def step(self, model: FakeLLMModel) -> StepReport:
        # mesa-llm callers pass list(model.agents); shuffle it as Mesa would.
        from trio_mesa import compat  # already imported by _run_on_asyncio

        agents = list(model.agents)
        model.random.shuffle(agents)
        return await compat.step_agents_parallel(agents)

    def leftover_tasks(self) -> list[str]:
        me = self._me
        return [t.get_name() for t in asyncio.all_tasks() if t is not me and not t.done()]


@contextmanager
def _collector_held_off(real_time: bool) -> Iterator[None]:
    """Keep automatic garbage collection from pausing a real-time step.

    A real-time run scales every time limit down (a 4 s timeout at ``real_time_scale``
    0.05 is 0.2 s of real time), but a full collection in a long-lived process pauses
    the event loop for real: 0.1 to 0.2 s in our own test session. A pause counts against
    every running agent's time limit at once, so one collection could time out a whole
    step that the plan kept well inside its limits. While a real-time step runs, automatic
    collection is off, and it is back on after the step if it was on before; the step's
    garbage waits for the first collection after it. Virtual time does not see pauses,
    so it is left alone.
    """
    if not real_time or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class _Observation:
    """Snapshots taken before a step, turned into an `ObservedStep` after it."""

    def __init__(self, model: FakeLLMModel, expected: ExpectedStep) -> None:
        # Mesa's Model.step() counts the step before running the user's step; so do we.
        model.steps += 1
        if model.steps != expected.step:
            raise RuntimeError(f"model is at step {model.steps}, oracle at {expected.step}")
        model.aio_tasks.clear()
        self.model = model
        self.expected = expected
        self.work_before = model.work_snapshot()
        self.tally_before = model.tally

    def finish(
        self,
        report: StepReport | None,
        raised: BaseException | None,
        scale: float,
        *,
        leftover: list[str],
    ) -> StepResult:
        model = self.model
        pending_aio = [t for t in model.aio_tasks if t is not None and not t.done()]
        observed = ObservedStep(
            step=model.steps,
            report=report,
            raised=raised,
            work_before=self.work_before,
            work_after=model.work_snapshot(),
            tally_before=self.tally_before,
            tally_after=model.tally,
            calls_after={a.unique_id: a.llm.calls for a in model.agents},
            running_after=set(model.running),
            pending_aio_tasks=pending_aio,
            leftover_tasks=leftover,
        )
        mismatches = check_step(self.expected, observed)
        statuses: dict[Any, Status] = {}
        failures: Counter[str] = Counter()
        durations: list[float] = []
        not_ok: list[tuple[Any, str, str, str]] = []
        if report is not None:
            for o in report.outcomes:
                statuses[o.unique_id] = o.status
                if o.exception is not None:
                    failures[type(o.exception).__name__] += 1
                if o.attempts:
                    durations.append(o.duration / scale)
                if o.status is not Status.OK:
                    exc = o.exception
                    text = describe_exception(exc, limit=CELL_LIMIT)
                    not_ok.append((o.unique_id, type(o.agent).__name__, o.status.value, text))
        return StepResult(
            model.steps,
            statuses,
            failures,
            durations,
            type(raised).__name__ if raised is not None else None,
            mismatches,
            not_ok,
            report.attempts if report is not None else 0,
            len(report.retried) if report is not None else 0,
        )


def _mock_clock() -> trio.abc.Clock:
    """``trio.testing.MockClock(autojump_threshold=0)``, without importing ``trio.testing``.

    ``trio.testing`` imports pytest when it is installed (for ``RaisesGroup``): 0.2 s of a
    command that runs in a few. ``MockClock`` itself lives in ``trio._core``; the public
    name is the fallback should Trio ever move it (a test checks both are the same class).
    """
    try:
        from trio._core import MockClock
    except ImportError:  # pragma: no cover - a future Trio
        from trio.testing import MockClock
    return MockClock(autojump_threshold=0)


def _trio_tasks() -> set[trio.lowlevel.Task]:
    """Every task in this Trio run except the calling one."""
    me = trio.lowlevel.current_task()
    out: set[trio.lowlevel.Task] = set()
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        if task is None:
            continue
        if task is not me:
            out.add(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return out


def _uid_key(uid: Any) -> tuple[int, Any]:
    return (0, uid) if isinstance(uid, int) else (1, str(uid))
