"""The batching main loop we install on trio-asyncio loops keeps asyncio's semantics."""

from __future__ import annotations

import asyncio

import pytest
import trio
import trio_asyncio

from trio_mesa._trio_asyncio_batching import install, supported


async def test_upstream_loop_still_has_the_internals_we_replace():
    # Pins trio-asyncio 0.16's one-callback-per-pass _main_loop_one (and the fields it
    # uses): if they change, `install` leaves the loop alone, and this test says so.
    async with trio_asyncio.open_loop() as loop:
        assert supported(loop)
        assert install(loop)


async def test_callbacks_run_in_fifo_order_and_new_ones_in_a_later_pass():
    order = []
    async with trio_asyncio.open_loop() as loop:
        install(loop)
        done = trio.Event()

        def first():
            order.append("first")
            loop.call_soon(later)  # queued while a batch runs: runs after "third"

        def later():
            order.append("later")
            done.set()

        loop.call_soon(first)
        loop.call_soon(order.append, "second")
        loop.call_soon(order.append, "third")
        await done.wait()
    assert order == ["first", "second", "third", "later"]


async def test_timers_fire_in_time_order(mock_clock):
    fired = []
    async with trio_asyncio.open_loop() as loop:
        install(loop)
        done = trio.Event()
        loop.call_later(3, fired.append, 3)
        loop.call_later(1, fired.append, 1)
        handle = loop.call_later(2, fired.append, 2)
        handle.cancel()
        loop.call_at(loop.time() + 4, done.set)
        await done.wait()
        assert trio.current_time() == 4
    assert fired == [1, 3]


async def test_a_timer_that_came_due_during_a_slow_batch_fires(mock_clock):
    # A batch that takes longer than the timer it scheduled: the next pass must pick the
    # timer up as due (not wait on it). An earlier version could compute a negative
    # wait here, which trio refuses; the loop died and 500 agents hung.
    fired = trio.Event()
    async with trio_asyncio.open_loop() as loop:
        install(loop)

        def slow_callback():
            loop.call_later(0.5, fired.set)
            mock_clock.jump(1)  # the batch "took" a second

        loop.call_soon(slow_callback)
        with trio.fail_after(10):
            await fired.wait()


async def test_callbacks_queued_before_stop_still_run():
    ran = []
    async with trio_asyncio.open_loop() as loop:
        install(loop)
        for i in range(5):
            loop.call_soon(ran.append, i)
    assert ran == [0, 1, 2, 3, 4]


async def test_asyncio_tasks_and_sleeps_work(mock_clock):
    async def worker(i):
        await asyncio.sleep(i)
        return i * 10

    async def gather():
        return await asyncio.gather(*(worker(i) for i in range(5)))

    async with trio_asyncio.open_loop() as loop:
        install(loop)
        results = await trio_asyncio.aio_as_trio(gather)()
    assert results == [0, 10, 20, 30, 40]
    assert trio.current_time() == 4


async def test_debug_mode_still_checks_callbacks():
    async def not_a_callback():
        pass

    async with trio_asyncio.open_loop() as loop:
        install(loop)
        loop.set_debug(True)
        with pytest.raises(TypeError, match="coroutines cannot be used"):
            loop.call_soon(not_a_callback)


async def test_a_callback_rescheduling_itself_forever_does_not_starve_trio():
    # Several batches run per Trio pass (ITERATIONS_PER_PASS), but not without end: a
    # Trio task still gets its turns while an asyncio callback keeps requeueing itself.
    spins = 0
    spins_when_trio_ran: list[int] = []
    async with trio_asyncio.open_loop() as loop:
        install(loop)

        def spin():
            nonlocal spins
            spins += 1
            if spins < 10_000:  # a starved Trio task would first run after these
                loop.call_soon(spin)

        loop.call_soon(spin)
        for _ in range(3):
            await trio.lowlevel.checkpoint()
            spins_when_trio_ran.append(spins)
    assert spins_when_trio_ran[-1] < 100, spins_when_trio_ran


class _Passes(trio.abc.Instrument):
    """Counts passes of Trio's run loop (each waits for I/O once)."""

    def __init__(self) -> None:
        self.count = 0

    def before_io_wait(self, timeout: float) -> None:
        self.count += 1


async def test_a_tasks_wake_up_chain_runs_within_one_trio_pass():
    # An asyncio task's steps and its done callback are each a batch (each queued by
    # the one before); they run in one Trio pass, not one pass each.
    async with trio_asyncio.open_loop() as loop:
        install(loop)
        task_done = trio.Event()

        async def hops():
            for _ in range(4):
                await asyncio.sleep(0)

        passes = _Passes()
        trio.lowlevel.add_instrument(passes)
        task = loop.create_task(hops())
        task.add_done_callback(lambda _: task_done.set())
        await task_done.wait()
        trio.lowlevel.remove_instrument(passes)
    assert task.done() and task.exception() is None
    # Queueing the task reaches the loop through a channel (a pass), then one pass runs
    # its six batches; one more at most for this task's own wake-up.
    assert passes.count <= 3, passes.count
