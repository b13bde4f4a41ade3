"""The ``trio_mesa`` logger, and the one-line fallback it prints when nothing else listens.

Every record trio-mesa emits goes through ``logger``. Python's logging HOWTO asks a
library to attach only a ``NullHandler``, so that the application decides where records
go and nothing is printed twice. But then a failed agent in a program that never
configured logging (the common case for a drop-in) leaves no trace at all. So the
logger's one handler is `FallbackHandler`, which keeps that intent: it prints a record
(WARNING and above) only when no other handler would see it, by the rule logging's own
``lastResort`` uses: no handler on the record's logger or on any ancestor it propagates
to. Any handler the application adds (``logging.basicConfig()``, a file handler,
pytest's capture, or ``logging.NullHandler()`` on the ``trio_mesa`` logger to silence
it) turns the fallback off; the application's handlers get the full structured records.

What it prints is short, for a terminal: one line per record (wrapped at 79 columns, at
most `MAX_ROWS` rows, no traceback), a one-time hint saying how to get full records or
silence it, and at most `LINES_PER_STEP` lines per step: the scheduler calls
`step_ended` with each report, which prints how many more were held back.
"""

from __future__ import annotations

import logging
import sys
import textwrap
from typing import TYPE_CHECKING

from ._outcome import Status

if TYPE_CHECKING:
    from ._report import StepReport

#: Lines the fallback prints per step; the rest are counted and summed up at step end.
LINES_PER_STEP = 10
#: Rows (of `WIDTH` columns) one record may take; a longer message is cut with "...".
MAX_ROWS = 4
WIDTH = 79

HINT = (
    "trio_mesa: logging is not configured: trio-mesa's warnings are printed here in "
    'short. For full records: logging.basicConfig(). For none: logging.getLogger("trio_mesa")'
    ".addHandler(logging.NullHandler())."
)


def fit(text: str, rows: int | None = MAX_ROWS) -> str:
    """``text`` on one logical line, wrapped at `WIDTH` columns, cut after ``rows`` rows."""
    lines = textwrap.wrap(
        " ".join(text.split()),
        WIDTH,
        subsequent_indent="    ",
        break_long_words=True,
        break_on_hyphens=False,
    )
    if rows is not None and len(lines) > rows:
        lines = lines[:rows]
        lines[-1] = lines[-1][: WIDTH - 4] + " ..."
    return "\n".join(lines)


class FallbackHandler(logging.Handler):
    """Prints trio-mesa's warnings to stderr, one line each, when no other handler would.

    Looks up ``sys.stderr`` at each record (so redirections apply), as
    ``logging.lastResort`` does. At most `LINES_PER_STEP` records are printed between
    two `end_step` calls; the others are counted.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.shown = 0  # records printed since the last step ended
        self.held_back = 0  # records not printed since then, over the limit
        self.hinted = False

    def handle(self, record: logging.LogRecord) -> bool:
        if self.listened_to_elsewhere(record):
            return False
        return super().handle(record)

    def listened_to_elsewhere(self, record: logging.LogRecord) -> bool:
        """Whether some other handler sees ``record`` (the lastResort rule)."""
        log: logging.Logger | None = logging.getLogger(record.name)
        while log is not None:
            for handler in log.handlers:
                if handler is not self:
                    return True
            if not log.propagate:
                return False
            log = log.parent
        return False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.shown >= LINES_PER_STEP:
                self.held_back += 1
                return
            self.shown += 1
            text = fit(f"{record.name}: {record.getMessage()}")
            if not self.hinted:
                self.hinted = True
                text = f"{fit(HINT, None)}\n{text}"
            self.write(text)
        except RecursionError:  # pragma: no cover - as logging's own handlers do
            raise
        except Exception:
            self.handleError(record)

    def end_step(self, report: StepReport) -> None:
        """A step ended: print how many records were held back, and start counting anew."""
        with self.lock:  # type: ignore[union-attr]  # Handler.createLock made it
            held_back, self.held_back, self.shown = self.held_back, 0, 0
        if not held_back:
            return
        counts = report.counts
        tally = ", ".join(
            f"{counts[status]} {status.value.replace('_', ' ')}"
            for status in (Status.FAILED, Status.TIMED_OUT, Status.CANCELLED)
            if counts[status]
        )
        where = "this step" if report.step is None else f"model step {report.step}"
        self.write(
            fit(
                f"trio_mesa: ... and {held_back} more not shown (logging.basicConfig() "
                f"shows all); {where}: {tally or 'no failures'} of {len(report)} agents",
                None,
            )
        )

    @staticmethod
    def write(text: str) -> None:
        stream = sys.stderr
        if stream is None:  # pythonw: nowhere to print
            return
        stream.write(text + "\n")
        stream.flush()

    def __repr__(self) -> str:
        return "<trio_mesa FallbackHandler (prints only when no other handler listens)>"


logger = logging.getLogger("trio_mesa")
fallback = FallbackHandler()
logger.addHandler(fallback)


def step_ended(report: StepReport) -> None:
    """Called by the scheduler once per step, with its report."""
    if fallback.shown:  # the common case (nothing printed) takes no lock
        fallback.end_step(report)


__all__ = ["fallback", "logger", "step_ended"]
