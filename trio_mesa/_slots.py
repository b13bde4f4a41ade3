"""Concurrency slots: how many agents of a step may be in flight at once.

Two kinds with one interface (``take_nowait(i)``, ``await take(i)``, ``give_back(i)``,
where ``i`` is the agent's index in its step): `Slots` for ``max_concurrency`` (this
step only) and `SharedSlots` for a user's ``trio.CapacityLimiter`` shared across steps.
Only the spawner waits for a slot; an agent gives its slot back when it finishes.
"""

from __future__ import annotations

import trio

from ._policy import StepPolicy


class Slots:
    """Free places for ``max_concurrency``: a counter that only the spawner waits on.

    A private ``trio.CapacityLimiter`` would do the same with a borrower set and a
    parking lot per call, several times the cost on a path taken 100,000 times a step.
    ``free`` is public so the spawner can take every slot of a batch at once.
    """

    __slots__ = ("free", "wakeup")

    def __init__(self, total: int) -> None:
        self.free = total
        self.wakeup: trio.Event | None = None

    def take_nowait(self, i: int) -> bool:
        if self.free:
            self.free -= 1
            return True
        return False

    async def take(self, i: int) -> None:
        while not self.free:
            self.wakeup = trio.Event()
            await self.wakeup.wait()
        self.free -= 1

    def give_back(self, i: int) -> None:
        self.free += 1
        wakeup = self.wakeup
        if wakeup is not None:
            self.wakeup = None
            wakeup.set()


class SharedSlots:
    """A user's ``trio.CapacityLimiter`` (shared across steps) behind `Slots`' interface.

    The borrower of agent ``i``'s token is ``(self, i)``: unique across concurrent steps
    (a limiter refuses a borrower that already holds a token) and cheap to hash.
    """

    __slots__ = ("limiter",)

    def __init__(self, limiter: trio.CapacityLimiter) -> None:
        self.limiter = limiter

    def take_nowait(self, i: int) -> bool:
        try:
            self.limiter.acquire_on_behalf_of_nowait((self, i))
        except trio.WouldBlock:
            return False
        return True

    async def take(self, i: int) -> None:
        await self.limiter.acquire_on_behalf_of((self, i))

    def give_back(self, i: int) -> None:
        self.limiter.release_on_behalf_of((self, i))


def slots_for(policy: StepPolicy) -> Slots | SharedSlots | None:
    """The slots a step with ``policy`` takes before starting each agent, if any."""
    if policy.max_concurrency is not None:
        return Slots(policy.max_concurrency)
    if policy.limiter is not None:
        return SharedSlots(policy.limiter)
    return None


__all__ = ["SharedSlots", "Slots", "slots_for"]
