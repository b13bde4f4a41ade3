"""Real Mesa agents of every flavor for the core tests, driven by a per-agent script.

Each agent takes a ``behaviour``: ``("ok",)``, ``("raise", exc)`` (at once, any
BaseException too), ``("sleep", seconds)``, ``("sleep_raise", seconds, exc)`` or
``("hang",)``. Every agent counts its calls and records whether it was cancelled, so
tests can see lost, doubled or orphaned work.
"""

from __future__ import annotations

import asyncio
from typing import Any

import mesa
import trio

import trio_mesa


class Model(mesa.Model):
    def __init__(self, seed: int = 42) -> None:
        super().__init__(rng=seed)
        self.log: list[Any] = []  # unique_ids in the order their calls started


class _Base(mesa.Agent):
    def __init__(self, model: Model, behaviour: tuple = ("ok",)) -> None:
        super().__init__(model)
        self.behaviour = behaviour
        self.calls = 0
        self.finished = 0
        self.cancelled = False

    def _begin(self) -> tuple:
        self.calls += 1
        self.model.log.append(self.unique_id)
        kind = self.behaviour[0]
        if kind == "raise":
            raise self.behaviour[1]
        return self.behaviour

    def _end(self) -> str:
        self.finished += 1
        return f"done-{self.unique_id}"


@trio_mesa.trio_native
class TrioAgent(_Base):
    async def astep(self) -> str:
        kind, *rest = self._begin()
        try:
            if kind in ("sleep", "sleep_raise"):
                await trio.sleep(rest[0])
            elif kind == "hang":
                await trio.sleep_forever()
        except trio.Cancelled:
            self.cancelled = True
            raise
        if kind == "sleep_raise":
            raise rest[1]
        return self._end()


class AsyncioAgent(_Base):
    async def astep(self) -> str:
        kind, *rest = self._begin()
        try:
            if kind in ("sleep", "sleep_raise"):
                await asyncio.sleep(rest[0])
            elif kind == "hang":
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if kind == "sleep_raise":
            raise rest[1]
        return self._end()


class SyncAgent(_Base):
    """Sync ``step``; ``("block", event)`` / ``("barrier", barrier)`` wait on a threading object."""

    def step(self) -> str:
        kind, *rest = self._begin()
        if kind in ("block", "barrier"):
            rest[0].wait()
        return self._end()


FLAVORS = {"trio": TrioAgent, "asyncio": AsyncioAgent, "sync": SyncAgent}
