"""`StepReport`: the complete, ordered account of one step, one `AgentOutcome` per agent."""

from __future__ import annotations

import re
import textwrap
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ._breaker import CircuitOpen
from ._errors import StepFailed
from ._outcome import FAILURE_STATUSES, AgentOutcome, Status
from ._text import (
    CELL_LIMIT,
    clean,
    describe_exception,
    exception_message,
    one_line,
    safe_repr,
    safe_str,
)
from ._usage import Usage, sum_usage

#: ``str()`` of a report fits a terminal this wide.
WIDTH = 80
#: Kinds of failure ``str(StepReport)`` lists before it points at ``to_records()``.
MAX_KINDS = 20
# What may differ between messages of one kind: agent ids, call numbers, addresses.
_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|\d+")


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
        unattributed_requests: LLM requests that passed through the request seam
            during the step but were made outside any agent's call (by the model's own
            code, say): sent untouched, neither recorded nor retried, their usage in no
            agent's outcome.
    """

    outcomes: tuple[AgentOutcome, ...]
    step: int | None = None
    duration: float = 0.0
    circuit_events: tuple[Any, ...] = ()
    unattributed_requests: int = 0

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
        """One plain dict per outcome, ready for ``pandas.DataFrame(report.to_records())``.

        ``prompt_tokens``, ``completion_tokens`` and ``cost`` are ``None`` (NaN in
        pandas) for an agent with no recorded LLM call: unknown, not zero.
        """
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
                    # None, not 0, when nothing was recorded: unknown is not free
                    # (pandas shows NaN; JSON null).
                    "prompt_tokens": o.usage.prompt_tokens if o.usage.recorded else None,
                    "completion_tokens": o.usage.completion_tokens if o.usage.recorded else None,
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
        if self.unattributed_requests:
            line += f"; {self.unattributed_requests} request(s) made outside any agent"
        return line

    def __str__(self) -> str:
        """The summary, then the agents that are not OK grouped by what happened to
        them, every line at most 80 columns: one group per status and message (numbers
        in messages, such as agent ids or call numbers, may differ within a group), its
        agents' ids abbreviated. `to_records` and `outcomes` keep every detail."""
        lines = fit_summary(self._summary())
        abandoned = self.abandoned
        if abandoned:
            ids = id_list([o.unique_id for o in abandoned], WIDTH - 30)
            lines.append(
                f"WARNING: {len(abandoned)} agent thread(s) still running after the step "
                f"returned (agents {ids}); their side effects may still happen"
            )
        for event in self.circuit_events:
            lines.extend(wrap(_circuit_line(event)))
        rows = [o for o in self.outcomes if o.status is not Status.OK]
        if rows:
            lines.extend(_group_lines(rows))
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


def fit_summary(summary: str) -> list[str]:
    """The summary line, its ``;``-separated parts on lines of their own when it is
    wider than `WIDTH` (a part still too wide wrapped)."""
    if len(summary) <= WIDTH:
        return [summary]
    head, *parts = summary.split("; ")
    return [*wrap(head), *(line for p in parts for line in wrap(f"  {p}"))]


def wrap(line: str) -> list[str]:
    """``line`` in lines of at most `WIDTH` characters, continued with an indent."""
    if len(line) <= WIDTH:
        return [line]
    return textwrap.wrap(line, WIDTH, subsequent_indent="    ", break_on_hyphens=False) or [""]


def own_words(o: AgentOutcome) -> str:
    """``"Type: message"`` for the outcome's exception, on one line, without the
    ``agent ID (Class)`` that trio-mesa's own `AgentTimeout` and `AgentCancelled` put
    first (a group's line names its agents itself); ``""`` without an exception."""
    exc = o.exception
    if exc is None:
        return ""
    name = type(exc).__name__
    text = describe_exception(exc, limit=CELL_LIMIT)
    prefix = f"{name}: agent {safe_repr(o.unique_id)} ({type(o.agent).__qualname__})"
    if text.startswith(prefix):
        text = f"{name}: {text[len(prefix) :].lstrip(': ')}"
    return " ".join(text.split())


def id_list(ids: Sequence[Any], room: int) -> str:
    """Agent ids in at most ``room`` characters: integers sorted with runs as ``3-7``,
    others in the order given, and ``and N more`` for what does not fit."""
    if ids and all(type(u) is int for u in ids):
        ordered = sorted(set(ids))
        runs: list[list[int]] = []
        for n in ordered:
            if runs and n == runs[-1][-1] + 1:
                runs[-1].append(n)
            else:
                runs.append([n])
        items = [str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs]
        sizes = [len(r) for r in runs]
    else:
        items = [safe_str(u, limit=40) for u in ids]
        sizes = [1] * len(items)
    total = sum(sizes)
    shown: list[str] = []
    used = 0
    for item, size in zip(items, sizes, strict=True):
        rest = total - used - size
        text = ", ".join([*shown, item]) + (f" and {rest} more" if rest else "")
        if shown and len(text) > room:
            break
        shown.append(item)
        used += size
    rest = total - used
    return ", ".join(shown) + (f" and {rest} more" if rest else "")


def _group_lines(rows: Sequence[AgentOutcome]) -> list[str]:
    """Two lines per kind of outcome that is not OK (status, thread abandoned or not,
    and the message with its numbers masked): how many agents and the first one's
    exception, then which agents and their classes."""
    groups: dict[tuple[Status, bool, str], list[tuple[AgentOutcome, str]]] = {}
    for o in rows:
        words = own_words(o)
        groups.setdefault((o.status, o.abandoned, _NUMBERS.sub("#", words)), []).append((o, words))
    order = list(Status)
    kinds = sorted(groups.items(), key=lambda kv: (order.index(kv[0][0]), -len(kv[1])))
    lines = []
    for (status, abandoned, _), members in kinds[:MAX_KINDS]:
        words = members[0][1]
        label = status.value.replace("_", " ") + (" (thread abandoned)" if abandoned else "")
        if not words and status is Status.SKIPPED:
            words = "removed from the model before its turn"
        # "e.g." when the messages differ (in numbers only): the first one is shown.
        sep = ", e.g." if len({w for _, w in members}) > 1 else ":"
        lines.append(one_line(f"  {len(members)} {label}{sep} {words or '-'}", WIDTH))
        classes = sorted({clean(type(o.agent).__name__) for o, _ in members})
        who = ", ".join(classes[:3]) + (f" and {len(classes) - 3} more" if len(classes) > 3 else "")
        noun = "agent" if len(members) == 1 else "agents"
        room = WIDTH - len(f"    {noun}  ({who})")
        ids = id_list([o.unique_id for o, _ in members], max(room, 20))
        lines.append(one_line(f"    {noun} {ids} ({who})", WIDTH))
    if len(kinds) > MAX_KINDS:
        lines.append(
            f"  ... and {len(kinds) - MAX_KINDS} more kinds: report.to_records() has every agent"
        )
    return lines


def _circuit_line(event: Any) -> str:
    """One breaker event for ``str(report)``: when, relative to the step, and why."""
    when = f"+{event.time:.3f} s" if event.time >= 0 else f"{-event.time:.3f} s before the step"
    return f"circuit {event.kind.replace('_', '-')} at {when}: {event.reason}"
