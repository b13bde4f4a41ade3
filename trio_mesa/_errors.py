"""Exceptions trio-mesa raises or records: `StepFailed`, `AgentTimeout`, `AgentCancelled`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    from ._report import StepReport


class AgentTimeout(TimeoutError):
    """Recorded as the exception of a ``TIMED_OUT`` outcome.

    ``reason`` is ``"timeout"`` (the per-agent timeout elapsed) or ``"deadline"`` (the
    step's deadline passed while the agent ran or before it could start).
    """

    def __init__(
        self, message: str, *, reason: str, limit: float, detail: str | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.limit = limit
        #: What elapsed, without the agent's name ("its timeout of 5 s elapsed").
        self.detail = message if detail is None else detail


class AgentCancelled(Exception):
    """Recorded as the exception of a ``CANCELLED`` outcome.

    ``external`` is ``False`` when trio-mesa cancelled the agent (``fail_fast``, or the
    caller's cancellation), ``True`` when code outside trio-mesa cancelled its asyncio
    task (the agent's own, or other code); then ``__cause__`` is that ``CancelledError``.
    """

    def __init__(self, message: str, *, external: bool = False) -> None:
        super().__init__(message)
        self.external = external


class StepFailed(ExceptionGroup):
    """Raised in strict mode once every agent of the step has finished.

    It holds exactly one leaf per outcome in ``report.failed``, in start order: the
    agent's own exception for ``FAILED``, an `AgentTimeout` for ``TIMED_OUT`` and an
    `AgentCancelled` for ``CANCELLED``. Every leaf carries a PEP 678 note naming the
    agent's ``unique_id``, class and (when known) the model step. The whole step's
    `StepReport` is ``.report``; splitting the group (``except*``) keeps it.
    """

    report: StepReport

    def __new__(
        cls, message: str, exceptions: Sequence[Exception], report: StepReport | None = None
    ) -> Self:
        self = super().__new__(cls, message, exceptions)
        self.report = report  # type: ignore[assignment]
        return self

    def __init__(
        self, message: str, exceptions: Sequence[Exception], report: StepReport | None = None
    ) -> None:
        super().__init__(message, exceptions)

    def derive(self, excs: Sequence[Exception]) -> StepFailed:  # type: ignore[override]
        return StepFailed(self.message, excs, self.report)
