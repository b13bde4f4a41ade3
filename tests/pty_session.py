"""Run a script of ``tests/terminal_scripts`` as a user runs it: on a terminal.

`PtySession` starts ``python script args...`` with stdin, stdout and stderr all on one
fresh pseudo-terminal that is the child's controlling terminal, so ``isatty()`` is true
(rich's live display turns itself on, as it does for a user) and writing ``^C`` to the
terminal is a real Ctrl-C: the terminal driver sends SIGINT to the child. A thread
drains the terminal while the child runs (a full pty would block the child's prints).

The timeouts here are watchdogs that turn a hang into a failure with the output so far;
no test asserts anything about how long something took.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

SCRIPTS = Path(__file__).parent / "terminal_scripts"
WATCHDOG = 60.0  # seconds: only ever reached by a hang

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def plain(text: str) -> str:
    """``text`` without terminal control sequences and carriage returns."""
    return _ANSI.sub("", text)


def _make_controlling_terminal() -> None:  # in the child, after setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class PtySession:
    """One script running on its own pseudo-terminal (100 columns)."""

    def __init__(self, script: str, *args: str, stdout: Path | None = None) -> None:
        """``stdout``: a file to send the child's stdout to (``> file``), not the terminal."""
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
        environment = {**os.environ, "TERM": "xterm-256color"}
        for name in ("NO_COLOR", "COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE"):
            environment.pop(name, None)
        self.master = master
        with open(stdout, "w") if stdout is not None else os.fdopen(os.dup(slave), "w") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(SCRIPTS / script), *args],
                stdin=slave,
                stdout=out,
                stderr=slave,
                env=environment,
                start_new_session=True,
                preexec_fn=_make_controlling_terminal,  # one child at a time
            )
        os.close(slave)
        self._chunks: list[bytes] = []
        self._changed = threading.Condition()
        self._eof = False
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: the child closed its last handle on the terminal
                chunk = b""
            with self._changed:
                if chunk:
                    self._chunks.append(chunk)
                else:
                    self._eof = True
                self._changed.notify_all()
            if not chunk:
                return

    @property
    def output(self) -> str:
        """Everything the child wrote so far, as the terminal got it."""
        with self._changed:
            return b"".join(self._chunks).decode(errors="replace")

    def expect(self, marker: str) -> str:
        """Wait until ``marker`` shows in the (plain) output; return the output so far."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: (
                    marker in plain(b"".join(self._chunks).decode(errors="replace")) or self._eof
                ),
                timeout=WATCHDOG,
            )
        text = plain(self.output)
        if not found or marker not in text:
            self.kill()
            raise AssertionError(f"{marker!r} never showed; the terminal said:\n{text}")
        return text

    def ctrl_c(self) -> None:
        """Press Ctrl-C: the terminal driver sends SIGINT to the child."""
        os.write(self.master, b"\x03")

    def finish(self) -> tuple[int, str]:
        """Wait for the child to exit; its return code and its whole plain output."""
        try:
            code = self.process.wait(timeout=WATCHDOG)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"the script hung; the terminal said:\n{plain(self.output)}"
            ) from None
        self._reader.join(timeout=WATCHDOG)
        os.close(self.master)
        return code, plain(self.output)

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def run_on_terminal(script: str, *args: str, stdout: Path | None = None) -> tuple[int, str]:
    """Run ``script`` to its end on a terminal: its return code and plain output."""
    return PtySession(script, *args, stdout=stdout).finish()


def run_piped(script: str, *args: str) -> tuple[int, str]:
    """Run ``script`` with its output piped (no terminal): return code and output."""
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / script), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=WATCHDOG,
    )
    return done.returncode, done.stdout + done.stderr
