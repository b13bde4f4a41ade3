"""The live progress display of a `trio_mesa.sweep` (rich, imported lazily).

One display for the whole sweep, drawn by the driver: runs done of the total, running,
failed, tokens and cost of the finished runs, and an ETA. Workers never draw (each run's
own `simulate` display is off): they share the driver's terminal, and a dozen live
displays on one stderr would be noise. `SweepFigures` is what the driver's loop updates
as futures finish; `SweepView` renders it whenever rich's refresh thread asks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ._usage import NO_USAGE, Usage


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class SweepFigures:
    """The sweep's live figures (updated by the driver, read by rich's thread)."""

    def __init__(self, total: int, workers: int, now: Callable[[], float]) -> None:
        self.total = total
        self.workers = workers
        self.now = now
        self.started = now()
        self.lock = threading.Lock()
        self.done = 0
        self.failed = 0
        self.running = 0
        self.usage: Usage = NO_USAGE

    def finished(self, usage: Usage | None, failed: bool) -> None:
        with self.lock:
            self.done += 1
            self.failed += failed
            if usage:
                self.usage = self.usage + usage

    def eta(self) -> float | None:
        """Seconds left at the mean pace of the runs done so far (``None`` before one)."""
        with self.lock:
            done, total = self.done, self.total
        if not done:
            return None
        return max(0.0, (self.now() - self.started) / done * (total - done))


class SweepView:
    """The display of one sweep, rendered afresh from its figures."""

    def __init__(self, figures: SweepFigures) -> None:
        self.figures = figures

    def __rich__(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        f = self.figures
        with f.lock:
            done, failed, running, usage, total = f.done, f.failed, f.running, f.usage, f.total
        cost = "cost unknown" if usage.cost is None else f"${usage.cost:.4f}"
        head = Table.grid(padding=(0, 1))
        head.add_column(no_wrap=True)
        head.add_column(ratio=1)
        head.add_column(no_wrap=True)
        head.add_row(
            Text(f"runs {done}/{total}", style="bold"),
            ProgressBar(total=max(total, 1), completed=done),
            Text(f"ETA {_clock(f.eta())}"),
        )
        line = Text()
        line.append(f"running {running}  ")
        line.append(f"failed {failed}", style="red" if failed else "")
        line.append(f"  tokens {usage.total_tokens:,}  {cost}")
        return Group(head, line)


@contextmanager
def live_sweep_progress(figures: SweepFigures, show: bool) -> Iterator[None]:
    """Show the sweep's display on stderr while the block runs (nothing if not ``show``)."""
    if not show:
        yield
        return
    from rich.console import Console
    from rich.live import Live

    with Live(
        SweepView(figures), console=Console(stderr=True), refresh_per_second=4, transient=False
    ):
        yield


__all__ = ["SweepFigures", "SweepView", "live_sweep_progress"]
