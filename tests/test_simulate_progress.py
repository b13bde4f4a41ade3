"""The live progress display of `trio_mesa.simulate`: what it shows, and when rich is
imported at all."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import mesa
import pytest
import trio
from rich.console import Console
from trio.testing import MockClock

import trio_mesa
from trio_mesa import record_usage, trio_native
from trio_mesa._progress import ProgressView
from trio_mesa._simulate import Run


def _render(view: ProgressView) -> str:
    console = Console(record=True, width=80, force_terminal=True)
    console.print(view)
    return console.export_text()


def test_the_display_shows_the_figures() -> None:
    clock = iter([0.0, 30.0, 30.0, 30.0])
    run = Run(object(), 10, None, lambda: next(clock))
    run.finished = [object()] * 3  # type: ignore[list-item]
    run.ok, run.failed = 57, 3
    run.expected, run.done = 100, 80
    run.usage_done = trio_mesa.Usage(60, 9_000, 3_345, 0.0123, 0)
    text = _render(ProgressView(run))
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines)
    assert lines[0].startswith("step 3/10")
    assert lines[0].rstrip().endswith("ETA 01:10")  # 10 s a step, 7 steps to go
    assert lines[1] == "agents ok 57  failed 3  in flight 20  tokens 12,345  $0.0123"


def test_the_display_says_cost_unknown_and_why_it_stops() -> None:
    run = Run(object(), 4, trio_mesa.Budget(max_calls=1), lambda: 0.0)
    run.usage_done = trio_mesa.Usage(2, 10, 4, 0.0, 2)
    run.stopped_because = "max_calls=1 crossed: 2 calls in step 1"
    text = _render(ProgressView(run))
    assert "ETA --:--" in text
    assert "tokens 14  cost unknown" in text
    assert "stopped: max_calls=1 crossed: 2 calls in step 1" in text


class Agent(mesa.Agent):
    @trio_native
    async def astep(self) -> None:
        await trio.sleep(1)
        record_usage(prompt_tokens=2, completion_tokens=1)


class Model(mesa.Model):
    def __init__(self) -> None:
        super().__init__(rng=0)
        for _ in range(4):
            Agent(self)

    def step(self) -> None:
        self.agents.shuffle_do("step")


def test_progress_true_shows_the_last_frame_on_stderr(capsys) -> None:
    trio_mesa.simulate(Model(), 2, progress=True, clock=MockClock(autojump_threshold=0))
    err = capsys.readouterr().err
    assert "step 2/2" in err
    assert "agents ok 8  failed 0  in flight 0  tokens 24" in err


def test_progress_none_is_off_when_stderr_is_not_a_terminal(capsys) -> None:
    trio_mesa.simulate(Model(), 1, clock=MockClock(autojump_threshold=0))
    assert "step 1/1" not in capsys.readouterr().err


@pytest.mark.parametrize("progress", ["False", "None"])
def test_rich_is_not_imported_when_progress_is_off(progress: str) -> None:
    code = textwrap.dedent(
        f"""
        import sys, mesa, trio_mesa

        class M(mesa.Model):
            def __init__(self):
                super().__init__(rng=0)
                mesa.Agent(self)
            def step(self):
                self.agents.shuffle_do("step")

        trio_mesa.simulate(M(), 2, progress={progress})
        assert "rich" not in sys.modules, "rich was imported"
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
