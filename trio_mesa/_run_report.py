"""`RunReport` and `ModelStep`: the account of a whole `trio_mesa.simulate` run."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ._breaker import BreakerEvent
from ._outcome import FAILURE_STATUSES, AgentOutcome, Status
from ._remote import RemoteAgent, RemoteException, remote_agent, remote_exception
from ._report import WIDTH, StepReport, fit_summary, own_words, wrap
from ._text import CELL_LIMIT, exception_message, one_line, safe_repr, safe_str
from ._usage import NO_USAGE, Usage, sum_usage


def resume_hint(directory: str) -> str:
    """How to continue the run kept in ``directory`` (a line for messages and notes)."""
    return f"resume it with trio_mesa.resume({directory!r})"


def _counts(outcomes: Iterable[AgentOutcome]) -> dict[Status, int]:
    counts = dict.fromkeys(Status, 0)
    for o in outcomes:
        counts[o.status] += 1
    return counts


def _tokens(usage: Usage) -> str:
    """A token count for a table cell: ``n/a`` when no call was recorded (unknown, not 0)."""
    return str(usage.total_tokens) if usage.recorded else "n/a"


class Outcomes(tuple[AgentOutcome, ...]):
    """The tuple `ModelStep.outcomes` and `RunReport.outcomes` return.

    ``outcomes`` was a method on those two and an attribute on `StepReport`; it is an
    attribute (a property) on all three now. Calling it, the old spelling, still works
    (an iterator, as before) but warns: drop the ``()``.
    """

    __slots__ = ()

    def __call__(self) -> Iterator[AgentOutcome]:
        warnings.warn(
            "outcomes is a property now (as on StepReport): write .outcomes, not .outcomes()",
            DeprecationWarning,
            stacklevel=2,
        )
        return iter(self)


@dataclass(frozen=True, slots=True, repr=False)
class ModelStep:
    """One call of ``model.step()`` in a run, with the agent-set steps made inside it.

    Attributes:
        step: the run's step number, from 1.
        reports: the `StepReport` of every agent-set step (``shuffle_do("step")``,
            ``do_async``...) made during this ``model.step()`` call, in the order they
            ended: none, one or several.
        duration: seconds the ``model.step()`` call took (on the run's clock).
    """

    step: int
    reports: tuple[StepReport, ...] = ()
    duration: float = 0.0

    @property
    def outcomes(self) -> Outcomes:
        """Every agent outcome of this model step, report after report (a tuple)."""
        return Outcomes(self._outcomes())

    def _outcomes(self) -> Iterator[AgentOutcome]:
        for report in self.reports:
            yield from report.outcomes

    @property
    def counts(self) -> dict[Status, int]:
        """Outcomes per status over this step's reports, every `Status` present."""
        return _counts(self._outcomes())

    @property
    def usage(self) -> Usage:
        """The summed `Usage` of this step's reports."""
        return sum_usage(r.usage for r in self.reports)

    @property
    def attempts(self) -> int:
        """Calls started in this step, every agent's attempts summed."""
        return sum(r.attempts for r in self.reports)

    @property
    def retries(self) -> int:
        """Attempts beyond each agent's first (what a `Retry` added)."""
        return sum(o.attempts - 1 for o in self._outcomes() if o.attempts > 1)

    @property
    def lost(self) -> int:
        """Agent-steps that did not succeed (``FAILED``, ``TIMED_OUT``, ``CANCELLED``)."""
        return sum(1 for o in self._outcomes() if o.status in FAILURE_STATUSES)

    def __repr__(self) -> str:
        agents = sum(len(r) for r in self.reports)
        return (
            f"<ModelStep step={self.step} reports={len(self.reports)} agents={agents} "
            f"lost={self.lost} duration={self.duration:.6g}>"
        )


@dataclass(frozen=True, slots=True, repr=False)
class RunReport:
    """What a `simulate` run did: every model step's reports, totals, and why it stopped.

    Attributes:
        steps: one `ModelStep` per ``model.step()`` call made, in order.
        requested: the number of steps asked for.
        stopped_because: ``None`` when every requested step ran; otherwise what
            stopped the run early, naming the `Budget` limit and the figures (e.g.
            ``"max_tokens=10000 crossed: 10342 tokens after step 7"``).
        duration: seconds the whole run took (on the run's clock; a resumed run: the
            steps before the resume plus the resumed part).
        resumed_after: for a run continued by `trio_mesa.resume`, the step each resume
            started after (its snapshot's step), in order; ``()`` for a run that ran
            through.
        checkpoint: the run directory (``simulate(checkpoint=...)``), or ``None``.
    """

    steps: tuple[ModelStep, ...]
    requested: int
    stopped_because: str | None = None
    duration: float = 0.0
    resumed_after: tuple[int, ...] = ()
    checkpoint: str | None = None

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[ModelStep]:
        return iter(self.steps)

    @property
    def reports(self) -> tuple[StepReport, ...]:
        """Every `StepReport` of the run, in order."""
        return tuple(r for s in self.steps for r in s.reports)

    @property
    def outcomes(self) -> Outcomes:
        """Every agent outcome of the run, in order (a tuple)."""
        return Outcomes(self._outcomes())

    def _outcomes(self) -> Iterator[AgentOutcome]:
        for s in self.steps:
            yield from s._outcomes()

    @property
    def counts(self) -> dict[Status, int]:
        """Outcomes per status over the whole run, every `Status` present (zeros too)."""
        return _counts(self._outcomes())

    @property
    def failures_by_type(self) -> dict[str, tuple[int, str]]:
        """Why agent-steps were lost: exception type name -> ``(count, example)``,
        the commonest first, over the ``FAILED``, ``TIMED_OUT`` and ``CANCELLED``
        outcomes of the run. ``example`` is the first such outcome's message, on one
        line (at most 500 characters), with the step and agent it came from:
        ``"step 3, agent 7: Rate limit reached"``. `to_records` has every message."""
        found: dict[str, list[Any]] = {}
        for s in self.steps:
            for o in s._outcomes():
                if o.status not in FAILURE_STATUSES:
                    continue
                name = type(o.exception).__name__
                if name in found:
                    found[name][0] += 1
                    continue
                words = own_words(o).removeprefix(name).removeprefix(": ")
                where = f"step {s.step}, agent {safe_str(o.unique_id, limit=40)}"
                found[name] = [1, one_line(f"{where}: {words}" if words else where, 500)]
        order = sorted(found, key=lambda name: -found[name][0])
        return {name: (found[name][0], found[name][1]) for name in order}

    @property
    def agent_steps(self) -> int:
        """Agent outcomes over the whole run (one per agent per agent-set step)."""
        return sum(len(r) for r in self.reports)

    @property
    def lost(self) -> int:
        """Lost agent-steps: outcomes ``FAILED``, ``TIMED_OUT`` or ``CANCELLED``."""
        return sum(s.lost for s in self.steps)

    @property
    def attempts(self) -> int:
        """Calls started over the run, every agent's attempts summed."""
        return sum(s.attempts for s in self.steps)

    @property
    def retries(self) -> int:
        """Attempts beyond each agent's first, over the run."""
        return sum(s.retries for s in self.steps)

    @property
    def usage(self) -> Usage:
        """The run's LLM calls, tokens and cost: every outcome's `Usage` summed."""
        return sum_usage(s.usage for s in self.steps)

    def usage_by_agent(self) -> dict[Any, Usage]:
        """Each agent's `Usage` summed over the run, keyed by ``unique_id`` (the ledger)."""
        ledger: dict[Any, list[Usage]] = {}
        for o in self._outcomes():
            ledger.setdefault(o.unique_id, []).append(o.usage)
        return {uid: sum_usage(us) for uid, us in ledger.items()}

    def to_records(self) -> list[dict[str, Any]]:
        """One plain dict per agent outcome, ready for ``pandas.DataFrame``.

        The columns of `StepReport.to_records` (its ``step`` is renamed
        ``model_steps``: Mesa's counter when the agent-set step began), plus ``step``
        (the run's step number, from 1) and ``report`` (the agent-set step's index in
        that model step, from 0).
        """
        records = []
        for s in self.steps:
            for k, report in enumerate(s.reports):
                for record in report.to_records():
                    record["model_steps"] = record.pop("step")
                    records.append({"step": s.step, "report": k, **record})
        return records

    def to_json(self, **dumps: Any) -> str:
        """The run as a JSON document (``json.loads`` reads it back).

        Holds ``requested``, ``completed``, ``stopped_because``, ``duration``, the
        totals, and ``records`` (`to_records`, exceptions as type and message strings).
        A ``result`` that is not JSON is written as its ``str()``. ``dumps`` go to
        ``json.dumps`` (``indent=2``, say). ``steps`` holds every model step in the
        run directory ledger's form, which `from_json` reads back.
        """

        usage = self.usage
        doc = {
            "requested": self.requested,
            "completed": len(self.steps),
            "stopped_because": self.stopped_because,
            "duration": self.duration,
            "counts": {s.value: n for s, n in self.counts.items()},
            "lost": self.lost,
            "attempts": self.attempts,
            "retries": self.retries,
            "failures_by_type": {
                name: {"count": n, "example": example}
                for name, (n, example) in self.failures_by_type.items()
            },
            "usage": {
                "calls": usage.calls,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "cost": usage.cost,
                "known_cost": usage.known_cost,
                "unpriced_calls": usage.unpriced_calls,
            },
            "records": self.to_records(),
            "resumed_after": list(self.resumed_after),
            "checkpoint": self.checkpoint,
            "steps": [model_step_to_json(s) for s in self.steps],
        }
        return json.dumps(doc, default=safe_str, **dumps)

    @classmethod
    def from_json(cls, text: str | bytes) -> RunReport:
        """The `RunReport` `to_json` wrote. Agents come back as
        `trio_mesa._portable.RemoteAgent` stand-ins (``unique_id`` and class name),
        exceptions as ``RemoteException`` stand-ins of a class named after the original
        (type name and message), a ``result`` that was not JSON as its ``repr``.

        Raises:
            ValueError: ``text`` is not a document `to_json` wrote (naming the field).
        """
        try:
            doc = json.loads(text)
            steps = tuple(model_step_from_json(s) for s in doc["steps"])
            return cls(
                steps,
                int(doc["requested"]),
                doc["stopped_because"],
                float(doc["duration"]),
                tuple(int(n) for n in doc.get("resumed_after", ())),
                doc.get("checkpoint"),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(
                f"RunReport.from_json: not a RunReport.to_json document "
                f"({type(exc).__name__}: {exc})"
            ) from None

    def _summary(self) -> str:
        counts = self.counts
        parts = ", ".join(f"{n} {s.value.replace('_', ' ')}" for s, n in counts.items() if n)
        line = (
            f"run: {len(self.steps)}/{self.requested} steps, {self.agent_steps} agent-steps "
            f"({parts or 'none'}) in {self.duration:.3f} s"
        )
        if self.lost:
            line += f"; {self.lost} lost"
        if self.retries:
            line += f"; {self.retries} retries"
        return line

    def __repr__(self) -> str:
        counts = " ".join(f"{s.name}={n}" for s, n in self.counts.items() if n)
        stopped = f" stopped_because={self.stopped_because!r}" if self.stopped_because else ""
        return (
            f"<RunReport steps={len(self.steps)}/{self.requested} {counts or 'empty'} "
            f"tokens={_tokens(self.usage)}{stopped} duration={self.duration:.6g}>"
        )

    def __str__(self) -> str:
        lines = fit_summary(self._summary())
        usage = self.usage
        if usage:
            lines += wrap(f"usage: {usage}")
        if self.stopped_because:
            lines += wrap(f"stopped early: {self.stopped_because}")
        if self.resumed_after:
            lines += wrap(f"resumed after step {', '.join(map(str, self.resumed_after))}")
        if self.checkpoint is not None and len(self.steps) < self.requested:
            lines += wrap(f"run kept in {self.checkpoint}: {resume_hint(self.checkpoint)}")
        lines.append(
            f"  {'step':>4}  {'ok':>6}  {'failed':>6}  {'timed':>6}  "
            f"{'cancel':>6}  {'retry':>5}  {'tokens':>8}  {'s':>7}"
        )
        for s in self.steps:
            c = s.counts
            lines.append(
                f"  {s.step:>4}  {c[Status.OK]:>6}  {c[Status.FAILED]:>6}  "
                f"{c[Status.TIMED_OUT]:>6}  {c[Status.CANCELLED]:>6}  {s.retries:>5}  "
                f"{_tokens(s.usage):>8}  {s.duration:>7.3f}"
            )
        lines += self._failure_lines()
        return "\n".join(lines)

    def _failure_lines(self) -> list[str]:
        kinds = self.failures_by_type
        if not kinds:
            return []
        lines = ["lost agent-steps by exception type:"]
        for name, (n, example) in kinds.items():
            lines.append(one_line(f"  {n:>6}  {name}, e.g. {example}", WIDTH))
        return lines

    def __rich__(self) -> Any:
        """Render as a rich ``Table``, one row per model step, like ``str()``.

        rich is imported only when rich itself asks for this.
        """
        from rich.table import Table

        notes = [f"usage: {self.usage}"] if self.usage else []
        if self.stopped_because:
            notes.append(f"stopped early: {self.stopped_because}")
        notes += self._failure_lines()
        caption = "\n".join(notes) or None
        table = Table(title=self._summary(), caption=caption)
        for name in ("step", "ok", "failed", "timed out", "cancelled", "retries", "tokens", "s"):
            table.add_column(name, justify="right", no_wrap=True)
        for s in self.steps:
            c = s.counts
            table.add_row(
                str(s.step),
                str(c[Status.OK]),
                str(c[Status.FAILED]),
                str(c[Status.TIMED_OUT]),
                str(c[Status.CANCELLED]),
                str(s.retries),
                _tokens(s.usage),
                f"{s.duration:.3f}",
            )
        return table


# -- JSON: the ledger of a run directory, `RunReport.from_json` ---------------------------
#
# One model step as plain JSON values, and back. What cannot be JSON is kept as the
# portable stand-ins above: an agent as a `RemoteAgent` (``unique_id``, class name), an
# exception as a `RemoteException` (type name, message), a result that is not JSON as
# its ``repr``. ``unique_id``s that are not ``int`` or ``str`` come back as ``str``.

_USAGE_FIELDS = (
    "calls",
    "prompt_tokens",
    "completion_tokens",
    "known_cost",
    "unpriced_calls",
    "request_retries",
)


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        return safe_repr(value, limit=CELL_LIMIT)
    return value


def _uid(value: Any) -> Any:
    return value if isinstance(value, (int, str)) else safe_repr(value, limit=200)


def _outcome_to_json(o: AgentOutcome) -> dict[str, Any]:
    exc = o.exception
    doc: dict[str, Any] = {
        "unique_id": _uid(o.unique_id),
        "agent_class": type(o.agent).__name__,
        "status": o.status.value,
        "exception": None
        if exc is None
        else [
            exc.type_name if isinstance(exc, RemoteException) else type(exc).__name__,
            exception_message(exc),
        ],
        "result": _json_value(o.result),
        "duration": o.duration,
        "attempts": o.attempts,
        "abandoned": o.abandoned,
    }
    if o.usage:
        doc["usage"] = [getattr(o.usage, name) for name in _USAGE_FIELDS]
    return doc


def model_step_to_json(step: ModelStep) -> dict[str, Any]:
    """``step`` as plain JSON values (`model_step_from_json` reads it back)."""
    return {
        "step": step.step,
        "duration": step.duration,
        "reports": [
            {
                "step": r.step,
                "duration": r.duration,
                "circuit_events": [[e[0], e[1], e[2]] for e in r.circuit_events],
                "unattributed_requests": r.unattributed_requests,
                "outcomes": [_outcome_to_json(o) for o in r.outcomes],
            }
            for r in step.reports
        ],
    }


def model_step_from_json(doc: dict[str, Any]) -> ModelStep:
    """The `ModelStep` `model_step_to_json` wrote, with portable agents and exceptions.

    Raises:
        KeyError, TypeError, ValueError: ``doc`` is not what `model_step_to_json` writes.
    """
    agents: dict[tuple[Any, str], RemoteAgent] = {}
    reports = []
    for r in doc["reports"]:
        outcomes = []
        for o in r["outcomes"]:
            key = (o["unique_id"], o["agent_class"])
            agent = agents.get(key)
            if agent is None:
                agent = agents[key] = remote_agent(*key)
            exc = o["exception"]
            usage = o.get("usage")
            # Rebuilt from the ledger, not made by a step: the recorder builds the live ones.
            outcomes.append(
                AgentOutcome._make(
                    (
                        agent,
                        o["unique_id"],
                        Status(o["status"]),
                        None if exc is None else remote_exception(str(exc[0]), str(exc[1])),
                        o["result"],
                        float(o["duration"]),
                        int(o["attempts"]),
                        bool(o["abandoned"]),
                        NO_USAGE if usage is None else Usage(*usage),
                    )
                )
            )
        reports.append(
            StepReport(
                tuple(outcomes),
                r["step"],
                float(r["duration"]),
                tuple(BreakerEvent(*e) for e in r["circuit_events"]),
                int(r["unattributed_requests"]),
            )
        )
    return ModelStep(int(doc["step"]), tuple(reports), float(doc["duration"]))


__all__ = ["ModelStep", "RunReport", "model_step_from_json", "model_step_to_json"]
