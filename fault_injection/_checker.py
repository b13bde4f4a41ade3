"""The checker: compare what a step did with what the oracle said, and check invariants.

`check_step` returns a list of human-readable mismatches (empty when all is well). Beyond
each agent's status and exception type it checks what must hold in every step: one
outcome per agent; the step raised exactly what was expected (``KeyboardInterrupt`` as
itself, `trio_mesa.StepFailed` with one leaf per failed outcome and nothing else);
every agent made exactly the calls planned (one per attempt); work was recorded exactly
once for each OK agent and for no other; and nothing the step started is still running
(no agent code, no pending asyncio task, no extra Trio task) unless the report says its
thread was abandoned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trio_mesa import StepFailed, StepReport
from trio_mesa._text import describe_exception

from ._oracle import ExpectedStep


@dataclass(slots=True)
class ObservedStep:
    """What the runner saw of one step.

    Attributes:
        step: the model step (``model.steps`` during it).
        report: the step's `StepReport` (from ``StepFailed.report`` in strict mode);
            ``None`` when the step raised something else.
        raised: the exception the step call raised, or ``None``.
        work_before, work_after: ``model.work_snapshot()`` around the step.
        tally_before, tally_after: ``model.tally`` around the step.
        calls_after: ``unique_id`` -> ``agent.llm.calls`` after the step.
        running_after: ``model.running`` after the step.
        pending_aio_tasks: asyncio tasks the agents ran in that are not done.
        leftover_tasks: names of Trio (or host asyncio) tasks started by the step and
            still alive after it.
    """

    step: int
    report: StepReport | None
    raised: BaseException | None
    work_before: dict[int, int]
    work_after: dict[int, int]
    tally_before: int
    tally_after: int
    calls_after: dict[int, int]
    running_after: set[int] = field(default_factory=set)
    pending_aio_tasks: list[Any] = field(default_factory=list)
    leftover_tasks: list[str] = field(default_factory=list)


def check_step(expected: ExpectedStep, observed: ObservedStep) -> list[str]:
    """Every way ``observed`` differs from ``expected`` or breaks an invariant."""
    out: list[str] = []
    where = f"step {expected.step}"
    raised = observed.raised
    report = observed.report

    if expected.raises == "KeyboardInterrupt":
        if type(raised) is not KeyboardInterrupt:
            out.append(f"{where}: expected KeyboardInterrupt to propagate, got {raised!r}")
    elif expected.raises == "StepFailed":
        if not isinstance(raised, StepFailed):
            out.append(f"{where}: strict mode: expected StepFailed, got {raised!r}")
        elif report is not None:
            leaves = list(raised.exceptions)
            planned = [o.exception for o in report.failed]
            mismatched = any(a is not b for a, b in zip(leaves, planned, strict=False))
            if len(leaves) != len(planned) or mismatched:
                out.append(f"{where}: StepFailed leaves are not exactly the failed outcomes")
            names = sorted(type(e).__name__ for e in leaves)
            if names != sorted(expected.failures.values()):
                out.append(
                    f"{where}: StepFailed leaves {names} != planned "
                    f"{sorted(expected.failures.values())}"
                )
    elif raised is not None:
        out.append(f"{where}: the step raised {raised!r}, expected it to return a report")

    if expected.raises != "KeyboardInterrupt":
        if report is None:
            out.append(f"{where}: no report")
        else:
            out.extend(_check_report(expected, report))

    # Every agent made exactly this step's calls: none lost, none doubled.
    calls_made = expected.calls_made
    for uid, calls in observed.calls_after.items():
        want = calls_made.get(uid, expected.step)
        if calls != want:
            out.append(
                f"{where}: agent {uid} made {calls} calls in {expected.step} steps, planned {want}"
            )

    tally = observed.tally_after - observed.tally_before
    done_count = 0
    for uid, should in expected.work.items():
        did = observed.work_after.get(uid, 0) - observed.work_before.get(uid, 0)
        done_count += did
        if did not in (0, 1):
            out.append(f"{where}: agent {uid} recorded its work {did} times")
        elif should is not None and did != int(should):
            what = "lost the work of" if should else "recorded work for"
            out.append(f"{where}: {what} agent {uid} (planned {expected.calls[uid].kind.value})")
    if tally != done_count:
        out.append(f"{where}: model tally grew by {tally}, agents recorded {done_count}")

    abandoned = {o.unique_id for o in report.abandoned} if report is not None else set()
    still = observed.running_after - abandoned
    if still:
        out.append(f"{where}: agent code still running after the step: {sorted(still)}")
    if observed.pending_aio_tasks:
        out.append(f"{where}: {len(observed.pending_aio_tasks)} asyncio task(s) still pending")
    if observed.leftover_tasks:
        out.append(f"{where}: tasks still alive after the step: {observed.leftover_tasks}")
    return out


def _check_report(expected: ExpectedStep, report: StepReport) -> list[str]:
    out: list[str] = []
    where = f"step {expected.step}"
    ids = [o.unique_id for o in report.outcomes]
    if len(ids) != len(set(ids)):
        out.append(f"{where}: some agents have more than one outcome")
    if set(ids) != set(expected.statuses):
        missing = sorted(set(expected.statuses) - set(ids))
        extra = sorted(set(ids) - set(expected.statuses), key=str)
        out.append(f"{where}: outcomes missing for {missing}, unexpected for {extra}")
    if report.step != expected.step:
        out.append(f"{where}: the report says step {report.step}")
    for o in report.outcomes:
        want = expected.statuses.get(o.unique_id)
        if want is None:
            continue
        if o.status is not want:
            call = expected.calls[o.unique_id]
            out.append(
                f"{where}: agent {o.unique_id} ({call.flavor.value}, planned {call.kind.value}, "
                f"latency {call.latency:g} s) is {o.status.value}, expected {want.value}"
                + (f" ({describe_exception(o.exception, limit=200)})" if o.exception else "")
            )
            continue
        tries = expected.attempts.get(o.unique_id, 1)
        if o.attempts != tries:
            out.append(
                f"{where}: agent {o.unique_id} made {o.attempts} attempt(s), expected {tries}"
            )
        name = expected.exceptions.get(o.unique_id)
        got = type(o.exception).__name__ if o.exception is not None else None
        if got != name:
            out.append(f"{where}: agent {o.unique_id} raised {got}, expected {name}")
        reason = expected.timeout_reason.get(o.unique_id)
        if reason is not None and getattr(o.exception, "reason", None) != reason:
            out.append(
                f"{where}: agent {o.unique_id} timed out by {o.exception.reason}, "  # type: ignore[union-attr]
                f"expected by {reason}"
            )
    return out
