"""The live progress display of a `trio_mesa.simulate` run (rich, imported lazily).

`ProgressView` renders the run's live figures (steps done of the total, agents ok,
failed and in flight, tokens, cost, ETA) as one rich renderable; `live_progress` shows
it on stderr with ``rich.live.Live``, refreshed a few times a second from rich's own
thread, and leaves the last frame on screen when the run ends. The figures come from the
run's hook (`trio_mesa._simulate.Run`): nothing here runs per agent.

While it is shown, ``sys.stderr`` (and ``sys.stdout`` when it is a terminal too) are
redirected (rich's redirection, with our thread-safe `_LineProxy` in place of rich's
``FileProxy``) so that prints appear above the display, each whole line once, and the
display is re-rendered in every such write, on the writing thread: an agent's worker
thread, the thread running ``model.step()``, the Trio thread. So rendering must work on
any thread and must never raise into the code that printed: it reads figures the run
keeps (never the Trio clock), and a failure to read them shows as a line in the display
instead of an exception in an agent.
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._simulate import Run


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class ProgressView:
    """The display of one run, rendered afresh from its figures whenever rich asks."""

    def __init__(self, run: Run) -> None:
        self.run = run

    def figures(self) -> dict[str, Any]:
        run = self.run
        usage = run.usage
        return {
            "done": len(run.finished),
            "total": run.requested,
            "ok": run.ok,
            "failed": run.failed,
            "in_flight": run.in_flight,
            "tokens": usage.total_tokens if usage.recorded else None,
            "cost": usage.cost,
            "eta": run.eta(),
            "stopped": run.stopped_because,
        }

    def __rich__(self) -> Any:
        try:
            return self.frame(self.figures())
        except Exception as exc:  # never into the agent whose print asked for a frame
            from rich.text import Text

            return Text(f"progress unavailable: {type(exc).__name__}: {exc}", style="yellow")

    def frame(self, f: dict[str, Any]) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        cost = "cost unknown" if f["cost"] is None else f"${f['cost']:.4f}"
        head = Table.grid(padding=(0, 1))
        head.add_column(no_wrap=True)
        head.add_column(ratio=1)
        head.add_column(no_wrap=True)
        head.add_row(
            Text(f"step {f['done']}/{f['total']}", style="bold"),
            ProgressBar(total=max(f["total"], 1), completed=f["done"]),
            Text(f"ETA {_clock(f['eta'])}"),
        )
        line = Text()
        line.append(f"agents ok {f['ok']}", style="green")
        line.append("  ")
        line.append(f"failed {f['failed']}", style="red" if f["failed"] else "")
        tokens = "n/a" if f["tokens"] is None else f"{f['tokens']:,}"
        line.append(f"  in flight {f['in_flight']}  tokens {tokens}  {cost}")
        parts: list[Any] = [head, line]
        if f["stopped"]:
            parts.append(Text(f"stopped: {f['stopped']}", style="yellow"))
        return Group(*parts)


@contextmanager
def live_progress(run: Run) -> Iterator[ProgressView]:
    """Show the run's `ProgressView` on stderr while the block runs."""
    from rich.console import Console
    from rich.live import Live

    view = ProgressView(run)
    # rich sends redirected stdout to the display's console, on stderr: with stdout
    # going to a file (``python run.py > out.txt``), the agents' prints would land on
    # the terminal instead. So stdout is redirected only when it is a terminal too.
    with Live(
        view,
        console=Console(stderr=True),
        refresh_per_second=4,
        transient=False,
        redirect_stdout=_is_terminal(sys.stdout),
    ) as live:
        proxies = _own_proxies(live.console)
        try:
            yield view
        finally:
            for proxy in proxies:
                proxy.drain()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:  # no isatty, or a closed file
        return False


class _LineProxy(io.TextIOBase):
    """What rich's ``FileProxy`` does (whole lines above the display), made safe for
    agents: one lock around the pending piece (rich's buffer is shared by every thread
    unguarded: pieces were lost and duplicated), lines printed as text, never markup,
    and ``flush()`` keeps a piece until its newline (rich's printed it as markup, on a
    line of its own: ``print("[/x]", end="", flush=True)`` raised ``MarkupError``)."""

    def __init__(self, console: Any, file: Any) -> None:
        self._console, self._file = console, file
        self._piece, self._lock = "", threading.Lock()

    @property
    def rich_proxied_file(self) -> Any:  # where rich's console writes the display
        return self._file

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            lines, newline, self._piece = (self._piece + text).rpartition("\n")
        if newline:  # printed outside the lock: the console has its own
            self._show(lines)
        return len(text)

    def flush(self) -> None:
        """A piece waits for its newline: shown now, it would break the line."""

    def drain(self) -> None:
        """Show the piece still waiting (the display is about to stop)."""
        with self._lock:
            piece, self._piece = self._piece, ""
        if piece:
            self._show(piece)

    def _show(self, lines: str) -> None:
        from rich.ansi import AnsiDecoder
        from rich.text import Text

        decoded = AnsiDecoder().decode_line
        text = Text("\n").join(decoded(line) for line in lines.split("\n"))
        self._console.print(text, soft_wrap=True)  # the terminal wraps, as without us

    def fileno(self) -> int:
        return self._file.fileno()

    def isatty(self) -> bool:
        return self._file.isatty()


def _own_proxies(console: Any) -> list[_LineProxy]:
    # Live has just put its FileProxy on sys.stdout/sys.stderr (it restores the real
    # streams itself when it stops): ours take their place.
    from rich.file_proxy import FileProxy

    proxies = []
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, FileProxy):
            proxy = _LineProxy(console, stream.rich_proxied_file)
            setattr(sys, name, proxy)
            proxies.append(proxy)
    return proxies


__all__ = ["ProgressView", "live_progress"]
