"""Prints flushed in pieces never fail an agent, and show once, on a terminal.

rich's own stdout proxy (used by its live display until this fix) is not thread-safe,
and its ``flush()`` printed the pending piece as rich markup on a line of its own: on a
terminal, ``print("x [/done]", end="", flush=True)`` failed the agent with
``MarkupError`` (and every agent whose flush met that piece in the shared buffer), and
the run itself raised it at the end; worker threads printing pieces at once lost and
duplicated pieces. Piped, nothing of this happened.
"""

from __future__ import annotations

import re
from collections import Counter

from pty_session import run_on_terminal, run_piped


def outcomes(text: str) -> list[str]:
    return sorted(line for line in text.splitlines() if line.startswith("OUTCOME"))


def test_partial_prints_on_a_terminal_fail_no_agent_and_show_once() -> None:
    code, text = run_on_terminal("partial_prints.py")
    assert code == 0, text
    assert "MarkupError" not in text, text
    found = outcomes(text)
    assert len(found) == 36 and all(" OK None" in line for line in found), found
    assert found == outcomes(run_piped("partial_prints.py")[1])
    pieces = Counter(re.findall(r"agent \d+ step \d+ (?:\[/done\]|warns \[bold\])", text))
    assert len(pieces) == 72 and set(pieces.values()) == {1}, pieces
    assert text.count("..") >= 36 and text.count("says bye") == 36, text
