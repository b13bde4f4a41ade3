"""`StepReport`: the complete, ordered account of one step, one `AgentOutcome` per agent."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ._breaker import CircuitOpen
from ._errors import StepFailed
from ._outcome import FAILURE_STATUSES, AgentOutcome, Status
from ._text import CELL_LIMIT, describe_exception, exception_message, safe_str
from ._usage import Usage, sum_usage


@dataclass(frozen=True, slots=True, repr=False)
class StepReport:
    """One outcome per agent, in the order the agents were started.

    Attributes:
        outcomes: every agent's `AgentOutcome`, in start order (Mesa's shuffled order
            when the agents came from an ``AgentSet``/``model.agents``).
        step: the model's ``steps`` counter when the step began, or ``None`` when the
            agents had no common model.
        duration: seconds the whole step took, on Trio's clock.
        circuit_events: what the step's `CircuitBreaker` did during the step, each
            change once, as ``(time, kind, reason)`` named tuples (``kind`` is
            ``"opened"``, ``"half_open"`` or ``"closed"``; ``time`` in seconds since the
            step began, negative for a half-open due before the step that the step's
            first attempt made).
    """

    outcomes: tuple[AgentOutcome, ...]
    step: int | None = None
    duration: float = 0.0
    circuit_events: tuple[Any, ...] = ()

    def __len__(self) -> int:
        return len(self.outcomes)

    def __repr__(self) -> str:
        # Short on purpose: a repr listing 100,000 outcomes is useless, and Python's own
        # machinery builds reprs of results it holds (asyncio.run does, via a task repr
        # in signal handling: 62 ms per 10,000-agent report in a profile).
        counts = " ".join(f"{s.name}={n}" for s, n in self.counts.items() if n)
        return (
            f"<StepReport step={self.step!r} agents={len(self.outcomes)} {counts or 'empty'} "
            f"duration={self.duration:.6g}>"
        )

    def __iter__(self) -> Iterator[AgentOutcome]:
        return iter(self.outcomes)

    @property
    def ok(self) -> tuple[AgentOutcome, ...]:
        """Outcomes whose status is ``OK``."""
        return tuple(o for o in self.outcomes if o.status is Status.OK)

    @property
    def failed(self) -> tuple[AgentOutcome, ...]:
        """Every outcome that is a failure: ``FAILED``, ``TIMED_OUT`` or ``CANCELLED``.

        ``SKIPPED`` agents (removed from the model before their turn) are neither ok nor
        failed: Mesa itself skips them silently, and strict mode does not raise for them.
        """
        return tuple(o for o in self.outcomes if o.status in FAILURE_STATUSES)

    @property
    def skipped(self) -> tuple[AgentOutcome, ...]:
        """Outcomes whose status is ``SKIPPED``."""
        return tuple(o for o in self.outcomes if o.status is Status.SKIPPED)

    @property
    def abandoned(self) -> tuple[AgentOutcome, ...]:
        """Outcomes of sync agents whose worker thread was still running at return."""
        return tuple(o for o in self.outcomes if o.abandoned)

    @property
    def retried(self) -> tuple[AgentOutcome, ...]:
        """Outcomes of agents whose call was tried again (a `Retry`): made more than one
        call, or made one that failed and were then refused the next by an open circuit
        (``FAILED`` with `CircuitOpen`, ``attempts`` counting the calls made)."""
        return tuple(
            o
            for o in self.outcomes
            if o.attempts > 1 or (o.attempts and type(o.exception) is CircuitOpen)
        )

    @property
    def attempts(self) -> int:
        """Calls started in this step, every agent's attempts summed."""
        return sum(o.attempts for o in self.outcomes)

    @property
    def usage(self) -> Usage:
        """Every agent's `AgentOutcome.usage` summed: the step's LLM calls, tokens, cost."""
        return sum_usage(o.usage for o in self.outcomes)

    @property
    def all_ok(self) -> bool:
        """``True`` when no agent failed (skipped agents allowed)."""
        return not any(o.status in FAILURE_STATUSES for o in self.outcomes)

    @property
    def counts(self) -> dict[Status, int]:
        """Number of outcomes per status, every `Status` present (zeros included)."""
        c = Counter(o.status for o in self.outcomes)
        return {s: c.get(s, 0) for s in Status}

    def by_id(self) -> dict[Any, AgentOutcome]:
        """Outcomes keyed by ``unique_id``."""
        return {o.unique_id: o for o in self.outcomes}

    def raise_for_failures(self) -> None:
        """Raise `StepFailed` (one leaf per failed outcome) if any agent failed."""
        failed = self.failed
        if failed:
            raise StepFailed(self._summary(), [o.exception for o in failed], self)  # type: ignore[misc]

    def to_records(self) -> list[dict[str, Any]]:
        """One plain dict per outcome, ready for ``pandas.DataFrame(report.to_records())``."""
        records = []
        for o in self.outcomes:
            exc = o.exception
            records.append(
                {
                    "step": self.step,
                    "unique_id": o.unique_id,
                    "agent_class": type(o.agent).__name__,
                    "status": o.status.value,
                    "exception_type": type(exc).__name__ if exc is not None else None,
                    "exception_message": exception_message(exc) if exc is not None else None,
                    "result": o.result,
                    "duration": o.duration,
                    "attempts": o.attempts,
                    "abandoned": o.abandoned,
                    "calls": o.usage.calls,
                    "prompt_tokens": o.usage.prompt_tokens,
                    "completion_tokens": o.usage.completion_tokens,
                    "cost": o.usage.cost,
                }
            )
        return records

    def _summary(self) -> str:
        counts = self.counts
        where = f"step {self.step}" if self.step is not None else "step"
        parts = ", ".join(f"{n} {s.value.replace('_', ' ')}" for s, n in counts.items() if n)
        line = f"{where}: {len(self.outcomes)} agents ({parts or 'none'}) in {self.duration:.3f} s"
        retried = self.retried
        if retried:
            recovered = sum(1 for o in retried if o.status is Status.OK)
            line += (
                f"; {len(retried)} retried ({recovered} recovered), {self.attempts} attempts in all"
            )
        usage = self.usage
        if usage:
            line += f"; {usage}"
        return line

    def __str__(self) -> str:
        lines = [self._summary()]
        abandoned = self.abandoned
        if abandoned:
            ids = ", ".join(safe_str(o.unique_id) for o in abandoned)
            lines.append(
                f"WARNING: {len(abandoned)} agent thread(s) still running after the step "
                f"returned (agents {ids}); their side effects may still happen"
            )
        lines.extend(map(_circuit_line, self.circuit_events))
        rows = [o for o in self.outcomes if o.status is not Status.OK]
        if rows:
            table = _rows_to_table(rows)
            lines.extend(table)
        return "\n".join(lines)

    def __rich__(self) -> Any:
        """Render as a rich ``Table`` of the agents that are not OK, like ``str()``.

        rich is imported only when rich itself asks for this.
        """
        from rich.table import Table
        from rich.text import Text

        ok = len(self.outcomes) - len([o for o in self.outcomes if o.status is not Status.OK])
        caption = f"{ok} OK agent(s) not listed" if ok else None
        if self.abandoned:
            caption = (caption + "; " if caption else "") + (
                f"WARNING: {len(self.abandoned)} agent thread(s) still running"
            )
        if self.circuit_events:
            caption = "\n".join(
                [*([caption] if caption else []), *map(_circuit_line, self.circuit_events)]
            )
        table = Table(title=self._summary(), caption=caption, show_lines=False)
        table.add_column("unique_id", no_wrap=True)
        table.add_column("class", no_wrap=True)
        table.add_column("status", no_wrap=True)
        table.add_column("exception", ratio=1)
        table.add_column("s", no_wrap=True, justify="right")
        table.add_column("tries", no_wrap=True, justify="right")
        style = {
            Status.OK: "green",
            Status.FAILED: "red",
            Status.TIMED_OUT: "yellow",
            Status.CANCELLED: "magenta",
            Status.SKIPPED: "dim",
        }
        for o in self.outcomes:
            if o.status is Status.OK:
                continue
            # Text, not str: an agent's message is shown as written, never read as markup
            # (a "[/]" in it would make rich raise).
            table.add_row(
                Text(safe_str(o.unique_id)),
                Text(type(o.agent).__name__),
                Text(o.status.value, style=style[o.status]),
                Text(describe_exception(o.exception, limit=CELL_LIMIT)),
                f"{o.duration:.3f}",
                str(o.attempts),
            )
        return table


def _rows_to_table(rows: Sequence[AgentOutcome]) -> list[str]:
    cells = [("unique_id", "class", "status", "exception")]
    cells += [
        (
            safe_str(o.unique_id),
            type(o.agent).__name__,
            o.status.value + (" (thread abandoned)" if o.abandoned else ""),
            describe_exception(o.exception, limit=CELL_LIMIT),
        )
        for o in rows
    ]
    widths = [max(len(r[i]) for r in cells) for i in range(3)]
    out = []
    for r in cells:
        out.append(
            "  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[3]
        )
    return out


def _circuit_line(event: Any) -> str:
    """One breaker event for ``str(report)``: when, relative to the step, and why."""
    when = f"+{event.time:.3f} s" if event.time >= 0 else f"{-event.time:.3f} s before the step"
    return f"circuit {event.kind.replace('_', '-')} at {when}: {event.reason}"
