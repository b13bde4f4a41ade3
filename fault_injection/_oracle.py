"""The oracle: every agent's outcome in every step, computed from the plan before running.

The rules are the stepping core's semantics applied to each `PlannedCall`; nothing is
simulated and the agents' start order does not matter, since every async agent starts
at the step's start (no concurrency limit, no ``fail_fast``) and sync agents run inline,
untimed. For an async agent with limit ``min(timeout, deadline)``: a call that outlasts
the limit (a hang always does) is ``TIMED_OUT``; otherwise an ``OK`` call is ``OK``, an
``INTERRUPT`` call raises ``KeyboardInterrupt`` and any other kind is ``FAILED``. Sync
agents are ``OK`` or ``FAILED`` by kind. With a `trio_mesa.Retry`, a failed attempt
that `FaultPlan.position` says is retried is followed by the agent's next planned call,
``offset`` seconds into its turn (the timeout bounds the whole turn), and the agent's
outcome is its last attempt's, with ``attempts`` counting them; the next step starts at
the call after. A rate limit (and a quota it respects) only moves start times, which
matter to no outcome when there is no time limit (`Scenario` requires that). The step
with the earliest interrupt raises ``KeyboardInterrupt``; no step runs after it. In
strict mode a step with any failure raises `trio_mesa.StepFailed` with exactly the
failures as leaves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from trio_mesa import Flavor, Status

from ._plan import FaultPlan, PlannedCall
from ._scenario import FaultKind, Scenario


@dataclass(frozen=True, slots=True)
class ExpectedStep:
    """What must happen in one step.

    Attributes:
        step: the 1-based model step.
        calls: each agent's `PlannedCall` for this step.
        statuses: ``unique_id`` -> `Status` (empty when the step is interrupted).
        exceptions: for each non-OK agent, the type name of its outcome's exception
            (the planned error, or ``"AgentTimeout"``).
        timeout_reason: for each ``TIMED_OUT`` agent, ``"timeout"`` or ``"deadline"``;
            ``None`` when the two limits are too close to call.
        raises: ``"KeyboardInterrupt"``, ``"StepFailed"`` (strict with failures) or ``None``.
        interrupt_at: model seconds into the step when the interrupt fires, if any.
        work: ``unique_id`` -> whether the agent's work is recorded by the end of the
            step: ``True``/``False``, or ``None`` when it finishes within ``tolerance``
            of the interrupt (either is right).
        attempts: ``unique_id`` -> calls the agent starts in this step
            (``AgentOutcome.attempts``); 1 each without a retry.
        calls_made: ``unique_id`` -> the agent's calls so far, this step's included.
        ends: ``unique_id`` -> model seconds into the step when the agent's last attempt
            ends (``inf`` for a hang; 0 for sync agents, which do not sleep).

    ``calls`` holds each agent's last attempt of the step: the call that decided.
    """

    step: int
    calls: dict[int, PlannedCall]
    statuses: dict[int, Status]
    exceptions: dict[int, str]
    timeout_reason: dict[int, str | None]
    raises: str | None
    interrupt_at: float | None
    work: dict[int, bool | None]
    attempts: dict[int, int] = field(default_factory=dict)
    calls_made: dict[int, int] = field(default_factory=dict)
    ends: dict[int, float] = field(default_factory=dict)

    def __repr__(self) -> str:
        counts = " ".join(f"{s.value}={n}" for s, n in self.counts.items() if n)
        raises = f" raises={self.raises}" if self.raises else ""
        return (
            f"<ExpectedStep step={self.step} agents={len(self.calls)} "
            f"{counts or 'interrupted'}{raises}>"
        )

    @property
    def retried(self) -> int:
        """Agents that needed more than one attempt."""
        return sum(1 for a in self.attempts.values() if a > 1)

    @property
    def lost(self) -> int:
        """Agents that did not end ``OK`` (lost agent-steps)."""
        return sum(1 for s in self.statuses.values() if s is not Status.OK)

    @property
    def counts(self) -> dict[Status, int]:
        """Number of agents per status, every `Status` present."""
        out = dict.fromkeys(Status, 0)
        for status in self.statuses.values():
            out[status] += 1
        return out

    @property
    def failures(self) -> dict[int, str]:
        """``unique_id`` -> exception type name, for the failed (not skipped) agents."""
        return {uid: self.exceptions[uid] for uid, s in self.statuses.items() if s is not Status.OK}


@dataclass(frozen=True, slots=True)
class ExpectedRun:
    """The oracle's prediction for a whole run: `ExpectedStep` for each step that runs."""

    plan: FaultPlan
    steps: list[ExpectedStep] = field(default_factory=list)

    def __repr__(self) -> str:
        lost = sum(step.lost for step in self.steps)
        where = f" interrupted_at={self.interrupted_at}" if self.interrupted_at else ""
        return (
            f"<ExpectedRun {self.scenario.name!r} seed={self.seed} steps={len(self.steps)} "
            f"agents={self.scenario.agents} lost={lost}{where}>"
        )

    def __str__(self) -> str:
        lines = [repr(self)]
        for step in self.steps:
            counts = ", ".join(
                f"{n} {s.value.replace('_', ' ')}" for s, n in step.counts.items() if n
            )
            lines.append(f"  step {step.step}: {counts or 'interrupted'}")
        return "\n".join(lines)

    @property
    def scenario(self) -> Scenario:
        """The scenario (with any overrides applied)."""
        return self.plan.scenario

    @property
    def seed(self) -> int:
        """The seed the plan was drawn with."""
        return self.plan.seed

    @property
    def interrupted_at(self) -> int | None:
        """The step that raises ``KeyboardInterrupt``, if one does (the run's last)."""
        last = self.steps[-1] if self.steps else None
        return last.step if last is not None and last.raises == "KeyboardInterrupt" else None


def expected_run(
    scenario: Scenario,
    seed: int | None = None,
    *,
    agents: int | None = None,
    steps: int | None = None,
    strict: bool | None = None,
    tolerance: float = 0.0,
) -> ExpectedRun:
    """Predict every outcome of running ``scenario`` with ``seed``.

    Args:
        agents, steps, strict: override the scenario's.
        tolerance: model seconds within which finishing "at the same time" as an
            interrupt counts as a tie (either outcome right); 0 under virtual time.
    """
    changes: dict[str, object] = {}
    if agents is not None:
        changes["agents"] = agents
    if steps is not None:
        changes["steps"] = steps
    if strict is not None:
        changes["strict"] = strict
    if changes:
        scenario = scenario.replace(**changes)
    plan = FaultPlan(scenario, seed)
    run = ExpectedRun(plan)
    for step in range(1, scenario.steps + 1):
        expected = expected_step(plan, step, tolerance=tolerance)
        run.steps.append(expected)
        if expected.raises == "KeyboardInterrupt":
            break
    return run


def expected_step(plan: FaultPlan, step: int, *, tolerance: float = 0.0) -> ExpectedStep:
    """The `ExpectedStep` of model step ``step`` (every agent's ``step``-th call)."""
    scenario = plan.scenario
    limit = scenario.limit
    reason = _timeout_reason(scenario)
    if plan.retry is not None:
        return _expected_step_with_retry(plan, step)
    calls = {uid: plan.call(uid, step) for uid in range(1, plan.agents + 1)}
    attempts = dict.fromkeys(calls, 1)
    calls_made = dict.fromkeys(calls, step)
    ends = {u: 0.0 if c.flavor is Flavor.SYNC else c.latency for u, c in calls.items()}
    statuses: dict[int, Status] = {}
    exceptions: dict[int, str] = {}
    reasons: dict[int, str | None] = {}
    interrupts: list[float] = []
    for uid, call in calls.items():
        if call.flavor is not Flavor.SYNC and call.latency > limit:
            statuses[uid] = Status.TIMED_OUT
            exceptions[uid] = "AgentTimeout"
            reasons[uid] = reason
        elif call.kind is FaultKind.OK:
            statuses[uid] = Status.OK
        elif call.kind is FaultKind.INTERRUPT:
            interrupts.append(call.latency)
        else:
            statuses[uid] = Status.FAILED
            exceptions[uid] = call.exception_name  # type: ignore[assignment]
    if interrupts:
        at = min(interrupts)
        work: dict[int, bool | None] = {}
        for uid, call in calls.items():
            if call.kind is not FaultKind.OK or (
                call.flavor is not Flavor.SYNC and call.latency > limit
            ):
                work[uid] = False
            elif call.flavor is Flavor.SYNC:
                work[uid] = True  # inline, at the step's start, before any async agent ends
            elif abs(call.latency - at) <= tolerance:
                work[uid] = None
            else:
                work[uid] = call.latency < at
        return ExpectedStep(
            step, calls, {}, {}, {}, "KeyboardInterrupt", at, work, attempts, calls_made, ends
        )
    work = {uid: s is Status.OK for uid, s in statuses.items()}
    failed = any(s is not Status.OK for s in statuses.values())
    raises = "StepFailed" if scenario.strict and failed else None
    return ExpectedStep(
        step, calls, statuses, exceptions, reasons, raises, None, work, attempts, calls_made, ends
    )


def _expected_step_with_retry(plan: FaultPlan, step: int) -> ExpectedStep:
    """`expected_step` under a retry (no interrupts: `Scenario` refuses the mix)."""
    scenario = plan.scenario
    limit = scenario.limit
    reason = _timeout_reason(scenario)
    calls: dict[int, PlannedCall] = {}
    statuses: dict[int, Status] = {}
    exceptions: dict[int, str] = {}
    reasons: dict[int, str | None] = {}
    attempts: dict[int, int] = {}
    calls_made: dict[int, int] = {}
    ends: dict[int, float] = {}
    for uid in range(1, plan.agents + 1):
        n = plan.first_call(uid, step)
        while True:
            call = plan.call(uid, n)
            attempt, offset = plan.position(uid, n)
            if plan.position(uid, n + 1)[0] == attempt + 1:
                n += 1  # the engine tries again: the next planned call
                continue
            break
        calls[uid] = call
        attempts[uid] = attempt
        calls_made[uid] = n
        sync = call.flavor is Flavor.SYNC
        ends[uid] = 0.0 if sync else offset + call.latency
        if not sync and offset + call.latency > limit:
            statuses[uid] = Status.TIMED_OUT
            exceptions[uid] = "AgentTimeout"
            reasons[uid] = reason
        elif call.kind is FaultKind.OK:
            statuses[uid] = Status.OK
        else:
            statuses[uid] = Status.FAILED
            exceptions[uid] = call.exception_name  # type: ignore[assignment]
    work: dict[int, bool | None] = {uid: s is Status.OK for uid, s in statuses.items()}
    failed = any(s is not Status.OK for s in statuses.values())
    raises = "StepFailed" if scenario.strict and failed else None
    return ExpectedStep(
        step, calls, statuses, exceptions, reasons, raises, None, work, attempts, calls_made, ends
    )


def without_retries(run: ExpectedRun) -> ExpectedRun:
    """The counterfactual: the same scenario and seed with no retry and no rate limit
    (every agent's n-th call is its step-n call, as before retries existed)."""
    s = run.scenario
    if s.retry is None and s.rate_limit is None:
        return run
    plain = s.replace(retry=None, rate_limit=None, rate_limit_burst=None, quota=None)
    return expected_run(plain, run.seed)


def _timeout_reason(scenario: Scenario) -> str | None:
    timeout, deadline = scenario.timeout, scenario.deadline
    if deadline is None:
        return "timeout"
    if timeout is None:
        return "deadline"
    if abs(timeout - deadline) < scenario.guard * min(timeout, deadline) or timeout == deadline:
        return None  # which limit an agent hits first depends on its start delay
    return "deadline" if deadline < timeout else "timeout"


def mesa_llm_baseline(run: ExpectedRun) -> dict[str, Any]:
    """What mesa-llm 0.3's ``step_agents_parallel`` would have done with the same plan.

    It gathers the agents' coroutines without isolation or timeouts: the first exception
    (by time) aborts the step and with it the simulation; a hang blocks it forever; every
    step lasts as long as its slowest agent. Returns a dict with ``completed_steps``,
    ``agent_steps_done`` (work done in the steps it completed), ``stopped_at`` (step or
    ``None``), ``why`` (one line), ``model_seconds`` (time it ran, ``inf`` if it hangs)
    and, for comparison, ``ours_agent_steps_done`` and ``ours_model_seconds`` (the
    oracle's, with every step capped by the timeout or deadline).
    """
    done = 0
    seconds = 0.0
    ours = sum(sum(1 for s in e.statuses.values() if s is Status.OK) for e in run.steps)
    limit = run.scenario.limit
    ours_seconds = sum(
        min(
            limit,
            max(
                (t for u, t in e.ends.items() if e.calls[u].flavor is not Flavor.SYNC),
                default=0.0,
            ),
        )
        for e in run.steps
    )
    out: dict[str, Any] = {"ours_agent_steps_done": ours, "ours_model_seconds": ours_seconds}
    # mesa-llm's own stepping does not retry: its n-th call is step n's.
    for expected in without_retries(run).steps:
        ends: list[tuple[float, int, PlannedCall]] = []
        for uid, call in expected.calls.items():
            if call.kind is FaultKind.OK:
                continue
            # sync agents run first, inline, at time 0
            at = 0.0 if call.flavor is Flavor.SYNC else call.latency
            ends.append((at, uid, call))
        if not ends:
            done += len(expected.calls)
            seconds += max(
                (c.latency for c in expected.calls.values() if c.flavor is not Flavor.SYNC),
                default=0.0,
            )
            continue
        at, uid, call = min(ends, key=lambda e: (e[0], e[1]))
        if at == math.inf:
            why = f"step {expected.step} hangs forever: agent {uid}'s call never returns"
        else:
            name = "KeyboardInterrupt" if call.kind is FaultKind.INTERRUPT else call.exception_name
            why = (
                f"step {expected.step} aborts at {at:.2f} s: agent {uid} raised {name}, "
                "which ends the simulation"
            )
        return {
            **out,
            "completed_steps": expected.step - 1,
            "agent_steps_done": done,
            "stopped_at": expected.step,
            "why": why,
            "model_seconds": seconds + at,
        }
    return {
        **out,
        "completed_steps": len(run.steps),
        "agent_steps_done": done,
        "stopped_at": None,
        "why": "no call fails, so every step completes, each as slow as its slowest agent",
        "model_seconds": seconds,
    }
