"""Text for what agents hand us: an exception's message, a result's repr, made safe to show.

An agent's exception is the agent's code, not ours: its ``__str__`` or ``__repr__`` can
raise, return something other than a string, run to megabytes, or carry terminal escape
sequences, lone surrogates (which cannot be written to a UTF-8 stream) or rich markup.
Every renderer and log record of trio-mesa and fault_injection turns an agent's exception
into text through `describe_exception` (or `exception_message`, `safe_repr`), so one
hostile exception class never breaks the summary of a step, and a message is shown as
the agent wrote it, escaped where a terminal would otherwise act on it.

The placeholder for text that could not be made names the exception's type and what
went wrong: ``<ValueError.__str__ raised RuntimeError>``.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

# C0/C1 control characters other than tab and newline: a terminal acts on them (ESC
# starts a sequence that can move the cursor, clear the screen or set the title).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

_BREAKS = re.compile(r"\s*[\t\n\r\f\v\u0085\u2028\u2029]\s*")

# What a table cell shows of one message; `to_records` and logs keep it all.
CELL_LIMIT = 500


def _escape_control(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def clean(text: str, limit: int | None = None) -> str:
    """``text`` safe to write to a terminal or a UTF-8 file: control characters other
    than tab and newline shown as ``\\xNN``, lone surrogates as ``\\udNNN``, and, given
    ``limit``, cut to that many characters with a count of what was left out."""
    if limit is not None and len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit} more characters)"
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return _CONTROL.sub(_escape_control, text)


def _call(obj: Any, what: str) -> str:
    # The method itself, not str()/repr(): they would turn "returned an int" into a
    # TypeError, and the placeholder should say which of the two went wrong.
    name = type(obj).__name__
    try:
        text = getattr(type(obj), what)(obj)
    except Exception as exc:  # the agent's code, not ours: never let it end a summary
        return f"<{name}.{what} raised {type(exc).__name__}>"
    if not isinstance(text, str):
        return f"<{name}.{what} returned {type(text).__name__}>"
    return str.__str__(text)


def exception_message(exc: BaseException, *, limit: int | None = None) -> str:
    """``str(exc)``, or a placeholder naming its type when ``__str__`` raises."""
    return clean(_call(exc, "__str__"), limit)


def describe_exception(exc: BaseException | None, *, limit: int | None = None) -> str:
    """``"TypeName: message"`` (``"TypeName"`` when the message is empty; ``""`` for
    ``None``), never raising whatever ``exc``'s ``__str__`` does."""
    if exc is None:
        return ""
    message = exception_message(exc, limit=limit)
    name = type(exc).__name__
    return f"{name}: {message}" if message else name


def safe_str(obj: object, *, limit: int | None = None) -> str:
    """``str(obj)``, or a placeholder naming its type when ``__str__`` raises."""
    return clean(_call(obj, "__str__"), limit)


def safe_repr(obj: object, *, limit: int | None = None) -> str:
    """``repr(obj)``, or a placeholder naming its type when ``__repr__`` raises."""
    return clean(_call(obj, "__repr__"), limit)


def one_line(text: str, width: int) -> str:
    """``text`` on one line of at most ``width`` characters: each line break or tab,
    with the whitespace around it, made one space (runs of spaces are kept, so columns
    stay aligned), and a longer text ending in ``...``. For text already made safe
    (`clean` keeps newlines and tabs, which a one-line view cannot)."""
    text = _BREAKS.sub(" ", text)
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)``, unless the agent's exception refuses notes (its
    ``__notes__`` is not a list, or ``add_note`` is overridden and raises): the outcome
    is recorded either way, and the note was only a courtesy."""
    with contextlib.suppress(Exception):
        exc.add_note(note)


__all__ = [
    "CELL_LIMIT",
    "add_note",
    "clean",
    "describe_exception",
    "exception_message",
    "one_line",
    "safe_repr",
    "safe_str",
]
