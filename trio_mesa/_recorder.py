"""The outcome recorder: the one place an `AgentOutcome` is built, noted and reported.

Every launcher ends each agent with one call: `OutcomeRecorder.ok`, ``failed``,
``timed_out``, ``cancelled`` or ``skipped``. The recorder stores the outcome at the
agent's index, adds the PEP 678 note naming the agent to its exception, hands the
outcome to the step's hooks (logging is the default hook), and fires ``fail_fast``.
`OutcomeRecorder.report` fills in agents that never started and builds the report.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ._errors import AgentCancelled, AgentTimeout
from ._hooks import HookCalls, call_safely
from ._log import logger
from ._outcome import AgentOutcome, Status
from ._policy import StepPolicy
from ._report import StepReport
from ._text import add_note, safe_repr
from ._usage import NO_USAGE, PENDING, freeze, switch

_new_outcome = tuple.__new__  # AgentOutcome is a NamedTuple: skip its Python-level __new__
_OK = Status.OK
_NO_USAGE = NO_USAGE
_INF = math.inf


class OutcomeRecorder:
    """The outcomes of one step, in start order, and what is done with each.

    ``now`` is the step's clock (Trio's, read directly); ``step_deadline`` is set by the
    scheduler when the step starts. ``cancel_step`` is called once, by the first failure,
    when ``fail_fast`` is on.
    """

    __slots__ = (
        "cancel_step",
        "deadline_limit",
        "fail_fast",
        "hooks",
        "ledgers",
        "model_step",
        "now",
        "on_ok",
        "outcomes",
        "seam",
        "step_deadline",
        "stop_reason",
        "stopped_by",
        "timeout",
        "unsettled",
    )

    def __init__(
        self,
        size: int,
        policy: StepPolicy,
        hooks: HookCalls,
        model_step: int | None,
        now: Callable[[], float],
    ) -> None:
        self.outcomes: list[AgentOutcome | None] = [None] * size
        self.timeout = policy.effective_timeout
        self.deadline_limit = policy.deadline
        self.fail_fast = policy.fail_fast
        self.hooks = hooks
        self.on_ok = hooks.on_ok
        self.model_step = model_step
        self.now = now
        self.step_deadline = _INF
        self.stopped_by: Any = None  # the agent whose failure fired fail_fast
        self.stop_reason: str | None = None  # why `stop` cancelled the step (a Budget)
        self.cancel_step: Callable[[], None] | None = None
        # Each started agent's usage ledger (`trio_mesa._usage`), set by its launcher.
        # None when usage is not tracked (`track_usage`): then no agent gets a ledger.
        self.ledgers: list[list[Any] | None] | None = [None] * size if switch.on else None
        self.unsettled: list[int] = []  # agents that ended with litellm calls unlogged
        self.seam: Any = None  # the step's request seam (`trio_mesa._seam`), once running

    @property
    def stopping(self) -> bool:
        """``fail_fast`` or `stop` has fired: agents still running are being cancelled."""
        return self.stopped_by is not None or self.stop_reason is not None

    def stop(self, reason: str) -> None:
        """Cancel the step now (a `trio_mesa.Budget` with ``stop="now"``): agents still
        running and agents not yet started end ``CANCELLED``, naming ``reason``."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.cancel_step is not None:
            self.cancel_step()

    # -- the five endings --------------------------------------------------------------

    def ok(self, i: int, agent: Any, result: Any, duration: float, attempts: int = 1) -> None:
        """Agent ``i`` returned ``result`` (the hot path: no checks, no logging)."""
        ledgers = self.ledgers
        if ledgers is None or not ((ledger := ledgers[i]) and (ledger[0] or ledger[5])):
            usage = _NO_USAGE
        else:
            usage = self.usage(i)
        outcome = self.outcomes[i] = _new_outcome(
            AgentOutcome,
            (agent, agent.unique_id, _OK, None, result, duration, attempts, False, usage),
        )
        if self.on_ok:
            for hook in self.on_ok:
                call_safely(hook, outcome)

    def skipped(self, i: int, agent: Any) -> None:
        """Agent ``i`` was removed from its model before its turn: not called."""
        outcome = self.outcomes[i] = AgentOutcome(
            agent, agent.unique_id, Status.SKIPPED, None, None, 0.0, 0
        )
        for hook in self.hooks.on_ok:
            call_safely(hook, outcome)

    def failed(
        self, i: int, agent: Any, exc: BaseException, start: float, attempts: int = 1
    ) -> None:
        """Agent ``i`` raised ``exc`` (an `Exception`) after starting at ``start``."""
        add_note(exc, self._note(agent))
        self._finish(
            i,
            AgentOutcome(
                agent,
                agent.unique_id,
                Status.FAILED,
                exc,
                None,
                self.now() - start,
                attempts,
                False,
                self.usage(i),
            ),
        )

    def timed_out(
        self,
        i: int,
        agent: Any,
        start: float,
        deadline: float,
        *,
        started: bool,
        abandoned: bool = False,
        attempts: int | None = None,
    ) -> None:
        """Agent ``i``'s time ran out at ``deadline`` (before it started, or while it ran).

        Whether its own timeout or the step's deadline ended it is told apart here:
        ``deadline`` is the step's and earlier than the agent's own timeout.
        """
        uid = agent.unique_id
        cls = type(agent).__qualname__
        if deadline == self.step_deadline and deadline < start + self.timeout:
            limit, reason = self.deadline_limit, "deadline"
            what = f"the step deadline of {limit} s passed"
        else:
            limit, reason = self.timeout, "timeout"
            what = f"its timeout of {limit} s elapsed"
        if not started:
            what += " before it started"
        exc = AgentTimeout(
            f"agent {uid!r} ({cls}): {what}",
            reason=reason,
            limit=limit,  # type: ignore[arg-type]
            detail=what,
        )
        add_note(exc, self._note(agent))
        if attempts is None:
            attempts = 1 if started else 0
        duration = self.now() - start if started else 0.0
        self._finish(
            i,
            AgentOutcome(
                agent,
                uid,
                Status.TIMED_OUT,
                exc,
                None,
                duration,
                attempts,
                abandoned,
                self.usage(i, settle=False),
            ),
        )

    def cancelled(
        self,
        i: int,
        agent: Any,
        start: float,
        *,
        started: bool = True,
        external: BaseException | None = None,
        attempts: int | None = None,
    ) -> None:
        """Agent ``i`` was cancelled: by ``fail_fast`` or the caller, or (``external``,
        the ``CancelledError``) by code outside trio-mesa cancelling its asyncio task."""
        uid = agent.unique_id
        cls = type(agent).__qualname__
        if external is not None:
            why = "its asyncio task was cancelled"
        elif self.stopped_by is not None:
            why = f"fail_fast: agent {self.stopped_by.unique_id!r} failed first"
        elif self.stop_reason is not None:
            why = self.stop_reason
        else:
            why = "the step was cancelled"
        exc = AgentCancelled(
            f"agent {uid!r} ({cls}) cancelled: {why}", external=external is not None
        )
        if external is not None:
            exc.__cause__ = external
        add_note(exc, self._note(agent))
        duration = self.now() - start if started else 0.0
        if attempts is None:
            attempts = int(started)
        outcome = AgentOutcome(
            agent, uid, Status.CANCELLED, exc, None, duration, attempts, False, self.usage(i, False)
        )
        self.outcomes[i] = outcome
        for hook in self.hooks.on_failure:
            call_safely(hook, outcome)

    def overran(self, agent: Any, deadline: float) -> None:
        """A worker thread ran past ``deadline``; its outcome (recorded next) stands.

        Only a worker thread with ``abandon_threads=False`` gets here: it cannot be
        interrupted, so the step waited for it.
        """
        uid = agent.unique_id
        cls = type(agent).__qualname__
        logger.warning(
            "agent %s (%s) ran %.3f s past its %s in a worker thread, which cannot be "
            "interrupted: the step waited for it and kept its outcome",
            safe_repr(uid),
            cls,
            self.now() - deadline,
            "step deadline" if deadline == self.step_deadline else "timeout",
            extra={"agent_unique_id": uid, "agent_class": cls, "agent_status": "overran"},
        )

    # -- usage -------------------------------------------------------------------------

    def usage(self, i: int, settle: bool = True) -> Any:
        """Agent ``i``'s usage so far. With ``settle`` (its calls ended: OK or FAILED),
        notes it for `settle_usage` when litellm has not logged all of them yet; a call
        cut off by a timeout or cancellation may never be logged, so is not waited for."""
        ledger = None if self.ledgers is None else self.ledgers[i]
        if ledger is None:
            return _NO_USAGE
        if settle and ledger[PENDING]:
            self.unsettled.append(i)
        return freeze(ledger)

    def pending_calls(self) -> int:
        """litellm calls of ended agents that litellm has not logged yet."""
        ledgers: list[Any] = self.ledgers or []
        return sum(len(ledgers[i][PENDING] or ()) for i in self.unsettled)

    def settle_usage(self) -> None:
        """Put the usage that arrived after an agent's outcome was built into it."""
        outcomes, ledgers = self.outcomes, self.ledgers
        for i in dict.fromkeys(self.unsettled):
            outcome = outcomes[i]
            if outcome is not None:
                usage = freeze(ledgers[i])  # type: ignore[index]
                if usage != outcome.usage:
                    outcomes[i] = outcome._replace(usage=usage)
        self.unsettled = []

    # -- the step's end ----------------------------------------------------------------

    def report(
        self, agents: list[Any], duration: float, circuit_events: tuple[Any, ...] = ()
    ) -> StepReport:
        """The complete report: agents never started (kept from starting by
        ``fail_fast`` or the deadline) get their outcome first; then the hooks see it."""
        outcomes = self.outcomes
        if None in outcomes:  # the usual case is a C-level scan, not a Python loop
            now = self.now()
            for i, outcome in enumerate(outcomes):
                if outcome is None:
                    if self.stopped_by is not None or self.stop_reason is not None:
                        self.cancelled(i, agents[i], now, started=False)
                    else:
                        self.timed_out(i, agents[i], now, self.step_deadline, started=False)
        report = StepReport(
            tuple(outcomes),  # type: ignore[arg-type]
            self.model_step,
            duration,
            circuit_events,
            0 if self.seam is None else self.seam.unattributed,
        )
        for hook in self.hooks.on_report:
            call_safely(hook, report)
        return report

    # -- helpers -----------------------------------------------------------------------

    def _finish(self, i: int, outcome: AgentOutcome) -> None:
        self.outcomes[i] = outcome
        for hook in self.hooks.on_failure:
            call_safely(hook, outcome)
        if self.fail_fast and self.stopped_by is None:
            self.stopped_by = outcome.agent
            # A step-level record: none of the agent_* attributes, so a handler counting
            # agent records (its own record is logged above) counts that agent once.
            logger.info(
                "fail_fast: agent %s failed; cancelling the others",
                safe_repr(outcome.unique_id),
                extra={
                    "trio_mesa_event": "fail_fast",
                    "first_failed_unique_id": outcome.unique_id,
                },
            )
            if self.cancel_step is not None:
                self.cancel_step()

    def _note(self, agent: Any) -> str:
        where = f" in model step {self.model_step}" if self.model_step is not None else ""
        return f"trio-mesa: agent unique_id={agent.unique_id!r} ({type(agent).__qualname__}){where}"


__all__ = ["OutcomeRecorder"]
