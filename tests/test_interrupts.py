"""A run or step stopped from outside: KeyboardInterrupt reaches the caller as itself,
nothing is left running or unretrieved, and no Ctrl-C can strand a step.

(`tests/test_terminal.py` presses a real Ctrl-C at every entry point; these pin the
same fixes in-process.)
"""

from __future__ import annotations

import asyncio
import gc
import signal
from typing import Any

import mesa
import pytest
import trio
from trio.testing import MockClock

import trio_mesa


class Interrupting(mesa.Agent):
    async def astep(self) -> None:  # asyncio-flavored: a trio-asyncio loop on a Trio host
        await asyncio.sleep(1)
        if self.model.steps == 2:
            raise KeyboardInterrupt


class Model(mesa.Model):
    def __init__(self, agent: type[mesa.Agent], n: int = 3) -> None:
        super().__init__(rng=0)
        for _ in range(n):
            agent(self)

    def step(self) -> None:
        self.agents.shuffle_do("step")


def test_keyboard_interrupt_with_asyncio_agents_reaches_the_caller_as_itself() -> None:
    """It came out nested twice in BaseExceptionGroup (trio-asyncio's two nurseries)."""
    with pytest.raises(KeyboardInterrupt) as caught:
        trio_mesa.simulate(
            Model(Interrupting), 5, progress=False, clock=MockClock(autojump_threshold=0)
        )
    assert type(caught.value) is KeyboardInterrupt
    # its own traceback, down to the agent that raised it
    assert "astep" in [entry.name for entry in caught.traceback]


def test_an_error_from_model_step_with_asyncio_agents_is_not_wrapped() -> None:
    class Failing(Model):
        def step(self) -> None:
            super().step()
            raise ValueError("the model's own bug")

    class Calm(mesa.Agent):
        async def astep(self) -> None:
            await asyncio.sleep(0)

    with pytest.raises(ValueError, match="the model's own bug"):
        trio_mesa.simulate(Failing(Calm), 2, progress=False)


def test_fatal_in_unwraps_only_an_interrupt_among_cancellations() -> None:
    from trio_mesa._aio_bridge import fatal_in

    interrupt = KeyboardInterrupt()
    cancelled = asyncio.CancelledError()
    nested = BaseExceptionGroup("outer", [BaseExceptionGroup("inner", [cancelled, interrupt])])
    assert fatal_in(nested) is interrupt
    assert fatal_in(BaseExceptionGroup("x", [SystemExit(3), cancelled])).code == 3  # type: ignore[union-attr]
    # a real error beside it: the group is an error of its own, never swallowed
    assert fatal_in(BaseExceptionGroup("x", [interrupt, ValueError()])) is None
    assert fatal_in(BaseExceptionGroup("x", [cancelled])) is None


class Waiting(mesa.Agent):
    started: asyncio.Event

    async def astep(self) -> None:
        Waiting.started.set()
        await asyncio.sleep(3600)


def test_cancelled_aio_simulate_leaves_no_task_and_no_unretrieved_future() -> None:
    """It left "Future exception was never retrieved: CancelledError" at exit."""

    async def main() -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        reported: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, context: reported.append(context))
        Waiting.started = asyncio.Event()
        run = asyncio.create_task(trio_mesa.aio_simulate(Model(Waiting), 3, progress=False))
        await Waiting.started.wait()
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        assert asyncio.all_tasks() == {asyncio.current_task()}  # no agent left running
        del run
        gc.collect()
        return reported

    assert asyncio.run(main()) == []


def test_a_trio_cancellation_inside_the_loop_is_left_to_its_scope() -> None:
    class Sleeper(mesa.Agent):
        async def astep(self) -> None:
            await asyncio.sleep(10)

    async def main() -> None:
        with trio.move_on_after(1) as scope:
            await trio_mesa.step_agents(Model(Sleeper).agents)
        assert scope.cancelled_caught

    trio.run(main, clock=MockClock(autojump_threshold=0))


async def test_upstream_trio_asyncio_open_loop_still_wraps_its_body_in_two_groups() -> None:
    # Pins the trio-asyncio 0.16 behaviour `with_trio_host_loop` works around: what
    # escapes the body of open_loop() comes out nested in two BaseExceptionGroups (its
    # two nurseries). If this starts failing upstream, the workaround can go.
    import trio_asyncio

    with pytest.raises(BaseExceptionGroup) as caught:
        async with trio_asyncio.open_loop():
            raise KeyboardInterrupt
    inner = caught.value.exceptions[0]
    assert isinstance(inner, BaseExceptionGroup)
    assert isinstance(inner.exceptions[0], KeyboardInterrupt)


def test_an_agent_set_step_submitted_as_the_run_is_cancelled_starts_no_agent() -> None:
    started: list[int] = []

    class Recording(mesa.Agent):
        async def astep(self) -> None:
            started.append(self.unique_id)

    class CancelledMidStep(Model):
        def step(self) -> None:
            # The cancellation is queued on the loop just before the step is submitted.
            self.loop.call_soon_threadsafe(self.run.cancel)
            super().step()

    async def main() -> None:
        model = CancelledMidStep(Recording)
        model.loop = asyncio.get_running_loop()
        model.run = asyncio.current_task()
        await trio_mesa.aio_simulate(model, 3, progress=False)

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    assert started == []


def test_ctrl_c_while_asyncio_agents_start_on_a_trio_host_cannot_strand_the_step() -> None:
    """A Ctrl-C that landed while a batch of asyncio agents was being started (between
    making an agent's coroutine and keeping its task) left a coroutine never awaited, a
    pending task destroyed and the step waiting forever (1 in 20 runs of 300 printing
    agents). Starting them is KI-protected: Trio hands the interrupt to the main task,
    which cancels the step as usual."""
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Trio's to take
    went_on: list[int] = []

    class PressesCtrlC(mesa.Agent):
        async def astep(self) -> None:
            if not went_on:
                signal.raise_signal(signal.SIGINT)  # handled at once, in this frame
            went_on.append(self.unique_id)  # the start of the batch was not cut short
            await asyncio.sleep(3600)

    with pytest.raises(KeyboardInterrupt) as caught:
        trio_mesa.run_step(Model(PressesCtrlC, 5).agents)
    assert type(caught.value) is KeyboardInterrupt
    assert sorted(went_on) == [1, 2, 3, 4, 5]
