"""The watch on a step with no ``timeout``: one warning when an agent runs far too long.

Without a ``timeout`` (``None``, the default; ``math.inf`` says "no limit, on purpose"
and is not watched) a step waits for every agent, however long: one hung LLM call
(mesa-llm's ``ModuleLLM`` retries some errors for ever) hangs the whole step, silently.
Such a step runs `watch_slow_agents` in a task next to its agents. An agent is *far
slower than usual* once it has run for at least `SLOW_AFTER` seconds **and** at least
`SLOW_FACTOR` times the median duration of the agents of this step that have already
finished (``OK`` or ``FAILED``; with none finished yet, the first bound alone). The first
agent to get there is named in one WARNING on the ``trio_mesa`` logger (its
``unique_id``, class, and the option to set); the watch then ends: one warning per step.

The watch sleeps on the step's clock (so a ``MockClock`` runs it in virtual time) until
the oldest agent still running could cross the bound, and only then looks at the step:
the start time of each batch and the recorder's outcomes, both kept anyway. A quick step
costs one task, cancelled when the agents are done; nothing is done per agent. An inline
sync agent (``sync_mode="inline"``) runs on the step's own thread and blocks the watch
with everything else, so it cannot be named while it runs. A worker thread's time is
real time: under a ``trio.testing.MockClock`` a step with thread agents is not watched,
since the watch's wake-up would be a deadline that autojump moves the virtual clock to
while a thread works (a thread working 20 ms would read 60 virtual seconds, and warn).
"""

from __future__ import annotations

import math
import statistics
import sys
from typing import Any

import trio

from ._flavor import Flavor
from ._log import logger
from ._outcome import Status
from ._text import safe_repr

#: Seconds an agent must have run before it can be called far slower than usual.
SLOW_AFTER = 60.0
#: ... and how many times the median duration of the agents that finished.
SLOW_FACTOR = 10.0

_FINISHED = (Status.OK, Status.FAILED)


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.2g} s"


def watches(step: Any) -> bool:
    """Whether ``step`` (the scheduler's `Step`, launchers made) is watched: not when a
    virtual clock would have to measure worker threads (see the module's notes)."""
    if Flavor.SYNC not in step.launchers or step.policy.sync_mode != "thread":
        return True
    testing = sys.modules.get("trio.testing")  # not imported: no MockClock either
    return testing is None or not isinstance(trio.lowlevel.current_clock(), testing.MockClock)


async def watch_slow_agents(step: Any, start: float) -> None:
    """Warn once about the first agent of ``step`` (started at ``start``) to run far slower
    than usual; return after warning. The step cancels this task when its agents end.

    ``step`` is the scheduler's `Step`: its ``batches`` list holds ``(start, indices)`` of
    every batch started, its recorder the outcomes so far (``None`` while running).
    """
    outcomes = step.recorder.outcomes
    now = step.now
    await trio.sleep_until(start + SLOW_AFTER)
    while True:
        oldest, index = math.inf, -1
        for batch_start, batch in step.batches:  # in start order: the first found is oldest
            index = next((i for i in batch if outcomes[i] is None), -1)
            if index >= 0:
                oldest = batch_start
                break
        durations = [o.duration for o in outcomes if o is not None and o.status in _FINISHED]
        median = statistics.median(durations) if durations else 0.0
        bound = max(SLOW_AFTER, SLOW_FACTOR * median)
        if index < 0:  # nothing running: agents wait for an inline one, say
            await trio.sleep(SLOW_AFTER)
            continue
        ran = now() - oldest
        if ran >= bound:
            _warn(step, index, ran, median, len(durations))
            return
        await trio.sleep_until(oldest + bound)


def _warn(step: Any, i: int, ran: float, median: float, finished: int) -> None:
    agent, _, flavor = step.entries[i]
    uid = agent.unique_id
    cls = type(agent).__qualname__
    if finished:
        usual = f"over {SLOW_FACTOR:g}x the median {_seconds(median)} of {finished} agents done"
    else:
        usual = "no other agent done yet"
    how = ""
    if flavor is Flavor.SYNC:
        how = (
            " It is in a worker thread, which cannot be killed:"
            " abandon_threads=True lets a timeout stop the wait."
        )
    logger.warning(
        "agent %s (%s) has run %s (%s); with no timeout the step waits for ever: "
        "set timeout= (compat: configure(timeout=...)).%s",
        safe_repr(uid),
        cls,
        _seconds(ran),
        usual,
        how,
        extra={"agent_unique_id": uid, "agent_class": cls, "trio_mesa_event": "slow_agent"},
    )


__all__ = ["SLOW_AFTER", "SLOW_FACTOR", "watch_slow_agents", "watches"]
