"""What happened to one agent in one step: the `Status` enum and the immutable `AgentOutcome`."""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

from ._text import CELL_LIMIT, safe_repr
from ._usage import NO_USAGE, Usage


class Status(enum.Enum):
    """How one agent's call ended.

    ``OK``
        The call returned; ``AgentOutcome.result`` holds its return value.
    ``FAILED``
        The call raised an `Exception`; ``AgentOutcome.exception`` holds it.
    ``TIMED_OUT``
        The per-agent ``timeout`` or the step's ``deadline`` elapsed first
        (``exception`` is an `AgentTimeout`). An agent that never started because the
        deadline had passed is ``TIMED_OUT`` with ``attempts == 0``.
    ``CANCELLED``
        ``fail_fast`` stopped the agent, or kept it from starting, after another
        agent failed (``exception`` is an `AgentCancelled`).
    ``SKIPPED``
        The agent was removed from its model before its turn came, so it was not
        called (as Mesa's ``shuffle_do`` skips it). Not a failure.
    """

    OK = "ok"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    def __repr__(self) -> str:
        return f"Status.{self.name}"

    __hash__ = object.__hash__  # singletons: identity hashing in C (counts are per agent)


#: Statuses that count as failures (`StepReport.failed`, strict mode). SKIPPED is not one.
FAILURE_STATUSES = frozenset({Status.FAILED, Status.TIMED_OUT, Status.CANCELLED})


class AgentOutcome(NamedTuple):
    """The captured result of one agent's call in one step; a plain immutable value.

    A named tuple (like ``os.stat_result``): fields are read-only, outcomes compare
    equal field by field, and ``outcome._asdict()`` gives a dict. It is a tuple so that
    a step of 100,000 agents builds its outcomes at tuple speed.

    Attributes:
        agent: the Mesa agent that was called.
        unique_id: ``agent.unique_id`` when the call was made.
        status: how the call ended (`Status`).
        exception: the exception for ``FAILED`` (the agent's own), ``TIMED_OUT``
            (`AgentTimeout`) and ``CANCELLED`` (`AgentCancelled`); ``None`` otherwise.
        result: the call's return value when ``OK``; ``None`` otherwise.
        duration: seconds the call ran, on Trio's clock (virtual under ``MockClock``).
        attempts: how many times the call was started (0 when it never started).
        abandoned: ``True`` when a sync agent running in a worker thread was still
            running when the step returned (threads cannot be cancelled; see
            ``StepPolicy.abandon_threads``). Its side effects may still happen.
        usage: the LLM calls the agent made in this call and what they cost (`Usage`),
            as reported by the litellm callback or `record_usage`; ``Usage()`` (falsy)
            when none were reported.
    """

    agent: Any
    unique_id: Any
    status: Status
    exception: BaseException | None = None
    result: Any = None
    duration: float = 0.0
    attempts: int = 1
    abandoned: bool = False
    usage: Usage = NO_USAGE

    @property
    def is_ok(self) -> bool:
        """``True`` when the call returned normally."""
        return self.status is Status.OK

    def unwrap(self) -> Any:
        """Return ``result`` if OK, else raise ``exception`` (like `outcome.Outcome.unwrap`).

        A ``SKIPPED`` outcome has nothing to return or raise: it raises `LookupError`.
        """
        if self.status is Status.OK:
            return self.result
        if self.exception is not None:
            raise self.exception
        raise LookupError(f"agent {self.unique_id!r} was skipped: it has no result")

    def __repr__(self) -> str:
        parts = [f"unique_id={safe_repr(self.unique_id)}", f"status={self.status!r}"]
        if self.exception is not None:
            parts.append(f"exception={safe_repr(self.exception, limit=CELL_LIMIT)}")
        if self.result is not None:
            parts.append(f"result={safe_repr(self.result, limit=CELL_LIMIT)}")
        parts.append(f"duration={self.duration:.6g}")
        parts.append(f"attempts={self.attempts}")
        if self.abandoned:
            parts.append("abandoned=True")
        if self.usage:
            parts.append(f"usage={self.usage!r}")
        return f"AgentOutcome({', '.join(parts)})"
