"""Model factories for the sweep tests: module-level, so worker processes import them.

Spawned workers get the test process's ``sys.path`` (pytest put this directory on it);
Ray's workers do not, so the Ray test uses `fault_injection.FakeLLMModel` instead.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import mesa
import trio

from trio_mesa import record_usage, trio_native


class StampAgent(mesa.Agent):
    """Records when its step starts (virtual time) and bills 3 + 2 tokens."""

    @trio_native
    async def astep(self) -> None:
        self.model.starts.append(trio.current_time())
        record_usage(prompt_tokens=3, completion_tokens=2)


class StartTimes(mesa.Model):
    """``n`` agents stepped once per model step; ``starts`` holds when each began."""

    def __init__(self, n: int = 4, rng: int | None = None) -> None:
        super().__init__(rng=rng)
        self.starts: list[float] = []
        for _ in range(n):
            StampAgent(self)
        self.datacollector = mesa.DataCollector(
            model_reporters={"starts": lambda m: tuple(sorted(m.starts))}
        )

    def step(self) -> None:
        self.agents.shuffle_do("step")
        self.datacollector.collect(self)


def _wait_for(path: Path) -> None:
    # A safety bound only: the test's outcome never depends on it running out.
    deadline = time.monotonic() + 120
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)


def fragile(mode: str = "ok", rng: int | None = None, shared: str = "") -> StartTimes:
    """A small model, unless ``mode`` says how this run goes wrong.

    ``"raise"``: the factory raises. ``"step"``: ``model.step()`` raises in step 2.
    ``"sigkill"``/``"exit3"``: the worker process dies (SIGKILL, ``os._exit(3)``).
    ``"innocent"``: on its first start, marks ``shared/innocent`` and then waits for a
    file that never comes (its process is killed with the pool); started again, it
    finds the mark and runs normally. ``"killer"``: waits for that mark, then SIGKILLs
    its own process: so the innocent run is surely in flight when the pool breaks.
    """
    if mode == "raise":
        raise ValueError(f"no model for mode {mode!r}")
    if mode == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "exit3":
        os._exit(3)
    if mode == "innocent":
        mark = Path(shared, "innocent")
        if not mark.exists():
            mark.write_text(str(os.getpid()))
            _wait_for(Path(shared, "never"))
    if mode == "killer":
        _wait_for(Path(shared, "innocent"))
        os.kill(os.getpid(), signal.SIGKILL)
    return FailingStep(2, rng=rng) if mode == "step" else StartTimes(2, rng=rng)


class FailingStep(StartTimes):
    def step(self) -> None:
        super().step()
        if self.steps == 2:
            raise RuntimeError("the model's own step failed in step 2")


def no_seed(n: int) -> StartTimes:
    """A factory that takes no seed (refused by sweep)."""
    return StartTimes(n)


class NeedsKeyword(Exception):
    """Pickles, but cannot be rebuilt from its args (a required keyword argument)."""

    def __init__(self, message: str, *, code: int) -> None:
        super().__init__(message)
        self.code = code


class AwkwardAgent(mesa.Agent):
    """Fails with `NeedsKeyword` (odd ids) or returns a generator (even ids)."""

    @trio_native
    async def astep(self) -> object:
        if self.unique_id % 2:
            raise NeedsKeyword(f"agent {self.unique_id} says no", code=7)
        return (i for i in range(3))


class Awkward(mesa.Model):
    def __init__(self, n: int = 4, rng: int | None = None) -> None:
        super().__init__(rng=rng)
        for _ in range(n):
            AwkwardAgent(self)

    def step(self) -> None:
        self.agents.shuffle_do("step")
