"""Outcome hooks: where each finished `AgentOutcome` and each step's `StepReport` go.

In stamina's manner, trio-mesa reports events and the user decides where they go. A hook
is any object with an ``on_outcome(outcome)`` method, an ``on_report(report)`` method, or
both. The process-wide hooks (`set_outcome_hooks`; by default one `LoggingHook`) run for
every step; a `StepPolicy`'s ``hooks`` run after them, for the steps that policy shapes.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._log import logger
from ._outcome import AgentOutcome, Status
from ._text import describe_exception, exception_message, safe_repr, safe_str

if TYPE_CHECKING:
    from ._report import StepReport


@runtime_checkable
class OutcomeHook(Protocol):
    """What a hook may implement; both methods are optional (define one or both).

    ``on_outcome(outcome)`` is called once per agent, as soon as its outcome is recorded,
    in the task that ran the agent (so while the step is still running, in completion
    order, not start order). ``on_report(report)`` is called once per step with the
    complete report, before strict mode raises. Hooks run synchronously on the step's
    path: keep them cheap, and never block. An exception raised by a hook is logged and
    never changes an agent's outcome or the step's result.

    A hook whose class sets ``failures_only = True`` is not called for ``OK`` outcomes,
    which spares the 100,000-agent hot path a call per agent.
    """

    def on_outcome(self, outcome: AgentOutcome, /) -> None: ...  # pragma: no cover

    def on_report(self, report: StepReport, /) -> None: ...  # pragma: no cover


class LoggingHook:
    """The default hook: logs each failure once on the ``trio_mesa`` logger.

    ``FAILED`` is an ERROR with the traceback (``exc_info``); ``TIMED_OUT`` and an
    abandoned worker thread are WARNINGs; a ``CANCELLED`` outcome caused by code outside
    trio-mesa is a WARNING (one cancelled by ``fail_fast`` or the caller is not logged:
    it is a consequence, not a failure of its own). Every record carries
    ``agent_unique_id``, ``agent_class`` and ``agent_status`` attributes.
    """

    failures_only = True

    def on_outcome(self, outcome: AgentOutcome, /) -> None:
        status = outcome.status
        if status is Status.OK or status is Status.SKIPPED:
            return
        uid = outcome.unique_id
        cls = type(outcome.agent).__qualname__
        exc = outcome.exception
        extra = {"agent_unique_id": uid, "agent_class": cls, "agent_status": status.value}
        # The message is made here, safely: logging would call the agent's __str__ and
        # __repr__ itself, and print "--- Logging error ---" if either raised.
        who = safe_repr(uid)
        if status is Status.FAILED:
            logger.error(
                "agent %s (%s) failed: %s",
                who,
                cls,
                describe_exception(exc),
                exc_info=exc,
                extra=extra,
            )
        elif status is Status.TIMED_OUT:
            detail = getattr(exc, "detail", None)
            if detail is not None:
                what = safe_str(detail)
            else:
                what = exception_message(exc) if exc is not None else "no exception"
            if outcome.abandoned:
                logger.warning(
                    "agent %s (%s) timed out and its worker thread was ABANDONED: it is "
                    "still running and its side effects may still happen (%s)",
                    who,
                    cls,
                    what,
                    extra=extra,
                )
            else:
                logger.warning("agent %s (%s) timed out: %s", who, cls, what, extra=extra)
        elif getattr(exc, "external", False):  # CANCELLED by code outside trio-mesa
            logger.warning(
                "agent %s (%s) was cancelled by code outside trio-mesa (CancelledError)",
                who,
                cls,
                extra=extra,
            )

    def __repr__(self) -> str:
        return "LoggingHook()"


_hooks: tuple[Any, ...] = (LoggingHook(),)

#: Set by `trio_mesa.simulate` in the context its model steps run in: every step
#: started there calls it once, as it starts, with a ``stop(reason)`` function that
#: cancels that step (its agents end ``CANCELLED``). ``None`` elsewhere (one lookup a step).
step_watch: contextvars.ContextVar[Callable[[Callable[[str], None]], None] | None] = (
    contextvars.ContextVar("trio_mesa_step_watch", default=None)
)


def set_outcome_hooks(hooks: Iterable[OutcomeHook]) -> None:
    """Replace the process-wide hooks (the default is ``[LoggingHook()]``).

    Steps already running keep the hooks they started with. Pass ``[]`` to silence
    trio-mesa's own failure logging; keep a `LoggingHook` in the list to add yours to it.

    Raises:
        TypeError: when an item has neither a callable ``on_outcome`` nor ``on_report``.
    """
    global _hooks
    _hooks = check_hooks(hooks, "set_outcome_hooks()")


def get_outcome_hooks() -> tuple[OutcomeHook, ...]:
    """The process-wide hooks, in the order they are called."""
    return _hooks


def check_hooks(hooks: Iterable[Any], where: str) -> tuple[Any, ...]:
    """``hooks`` as a tuple, each checked to implement at least one hook method."""
    if isinstance(hooks, (str, bytes)) or not isinstance(hooks, Iterable):
        raise TypeError(f"{where}: hooks must be an iterable of hooks, not {hooks!r}")
    out = tuple(hooks)
    for hook in out:
        if not (
            callable(getattr(hook, "on_outcome", None))
            or callable(getattr(hook, "on_report", None))
        ):
            raise TypeError(
                f"{where}: a hook needs an on_outcome(outcome) or on_report(report) "
                f"method; {hook!r} has neither"
            )
    return out


class HookCalls:
    """The bound hook methods of one step, resolved once when the step starts."""

    __slots__ = ("on_failure", "on_ok", "on_report")

    def __init__(self, hooks: tuple[Any, ...]) -> None:
        self.on_ok = tuple(
            h.on_outcome
            for h in hooks
            if callable(getattr(h, "on_outcome", None)) and not getattr(h, "failures_only", False)
        )
        self.on_failure = tuple(
            h.on_outcome for h in hooks if callable(getattr(h, "on_outcome", None))
        )
        self.on_report = tuple(
            h.on_report for h in hooks if callable(getattr(h, "on_report", None))
        )


def call_safely(hook: Any, value: Any) -> None:
    """Call one hook; log (never raise) what it raises."""
    try:
        hook(value)
    except Exception as exc:
        logger.error(
            "trio-mesa outcome hook %s raised %s; the step goes on",
            safe_repr(hook),
            describe_exception(exc),
            exc_info=exc,
        )


__all__ = ["LoggingHook", "OutcomeHook", "get_outcome_hooks", "set_outcome_hooks"]
