"""What users run, run as they run it: on a terminal, with printing agents, Ctrl-C.

Each test starts a script of ``tests/terminal_scripts`` on a pseudo-terminal of its own
(`pty_session.PtySession`), with default options, so whatever trio-mesa turns on when it
sees a terminal (the live progress display) is on. They prove that those defaults never
change what happens to an agent, that every print reaches the terminal exactly once,
and that Ctrl-C reaches the caller as a plain ``KeyboardInterrupt`` from every entry
point, host and agent flavor, leaving nothing behind on stderr.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pty_session import PtySession, run_on_terminal, run_piped

# What Python or asyncio print when something was started and never finished or awaited.
LEFT_BEHIND = (
    "Traceback",
    "Future exception was never retrieved",
    "was never awaited",
    "Task was destroyed but it is pending",
    "Exception ignored",
    "Exception in thread",
)


def _shown(output: str) -> str:
    """``output`` for a failure message: without the agents' own lines, the end of it."""
    lines = [line for line in output.splitlines() if not re.search(r"agent \d+ (out|err)$", line)]
    return "\n".join(lines)[-6000:]


def _outcomes(output: str) -> list[str]:
    return re.findall(r"OUTCOME \d+ \d+ [A-Z_]+ \S+", output)


# -- the progress display --------------------------------------------------------------


@pytest.fixture(scope="module", params=["simulate", "aio_simulate"])
def printing_run(request: pytest.FixtureRequest) -> tuple[str, str]:
    """`printing.py` run once on a terminal: the host, and what the terminal showed."""
    code, output = run_on_terminal("printing.py", request.param)
    assert code == 0, output
    return request.param, output


def test_printing_agents_end_the_same_on_a_terminal_as_piped(printing_run) -> None:
    """Default-on progress changes no outcome: 6 printing thread agents failed 12 of 18
    agent-steps under a pty with `simulate` (rich re-rendered the display in the
    printing thread, which asked Trio for the time from outside the Trio thread)."""
    host, on_terminal = printing_run
    assert "step 3/3" in on_terminal  # the live display was on...
    piped_code, piped = run_piped("printing.py", host)
    assert piped_code == 0, piped
    assert "step 3/3" not in piped  # ...and off when piped

    outcomes = _outcomes(on_terminal)
    assert len(outcomes) == 36  # 12 agents x 3 steps
    assert all(line.endswith(" OK -") for line in outcomes), outcomes
    assert outcomes == _outcomes(piped)
    assert not [bad for bad in LEFT_BEHIND if bad in on_terminal], on_terminal


def test_every_print_shows_once_on_the_terminal_before_the_run_returns(printing_run) -> None:
    _, output = printing_run
    flavors = (("thread", range(1, 7)), ("trio", range(7, 10)), ("asyncio", range(10, 13)))
    for flavor, agents in flavors:
        for agent in agents:
            for step in (1, 2, 3):
                for words in ("says hi", "warns"):
                    line = f"{flavor} agent {agent} step {step} {words}"
                    assert output.count(line) == 1, line
    # The last write had no newline: rich holds such a tail until the next newline and
    # put the real stderr back without it; it must still show, once, in its place.
    tail = "the model's last words, no newline"
    assert output.count(tail) == 1, output
    assert output.index(tail) < output.index("OUTCOME 1 ")


@pytest.mark.parametrize("host", ["simulate", "aio_simulate"])
def test_prints_go_where_stdout_goes_while_the_display_is_on_the_terminal(
    host: str, tmp_path: Path
) -> None:
    """``python run.py > out.txt`` on a terminal: the display shows on stderr, and the
    agents' prints still go to the file (rich had sent them to the terminal)."""
    out = tmp_path / "out.txt"
    code, on_terminal = run_on_terminal("printing.py", host, stdout=out)
    assert code == 0, on_terminal
    assert "step 3/3" in on_terminal
    assert "says hi" not in on_terminal
    assert "thread agent 1 step 2 warns" in on_terminal  # stderr stays on the terminal
    in_file = out.read_text()
    assert in_file.count("says hi") == 36
    assert len(_outcomes(in_file)) == 36


# -- Ctrl-C -----------------------------------------------------------------------------

ENTRIES = [
    "run_step",  # sync; a Trio run of its own
    "step_agents",  # Trio host
    "aio_step_agents",  # asyncio host (Trio guest mode)
    "compat_parallel",  # asyncio host
    "compat_parallel_sync",  # sync; an asyncio.run of its own
    "simulate",  # sync; a Trio run, model.step() in a worker thread
    "aio_simulate",  # asyncio host, model.step() in a worker thread
]
FLAVORS = ["trio", "asyncio", "sync", "thread"]


@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("entry", ENTRIES)
def test_ctrl_c_is_a_plain_keyboard_interrupt(entry: str, flavor: str) -> None:
    """``except KeyboardInterrupt`` catches Ctrl-C mid-run, and nothing is left behind.

    Before: `simulate` with asyncio agents raised it nested twice in
    ``BaseExceptionGroup`` (trio-asyncio's nurseries), and `aio_simulate` left "Future
    exception was never retrieved: CancelledError" on stderr at exit.
    """
    session = PtySession("interrupt.py", entry, flavor)
    session.expect("READY")  # agents are running (and printing)
    session.ctrl_c()
    code, output = session.finish()
    assert "ESCAPED" not in output, _shown(output)
    assert "CAUGHT KeyboardInterrupt" in output, _shown(output)
    assert code == 0, _shown(output)
    assert not [bad for bad in LEFT_BEHIND if bad in output], _shown(output)
