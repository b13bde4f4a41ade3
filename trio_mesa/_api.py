"""The public entry points, side by side: sync, Trio and asyncio twins alike.

Each one resolves its options into one `StepPolicy` (``policy=`` and keyword options on
top, errors naming the function called), prepares the agents (every one validated before
any runs) and hands both to a host: a Trio run of its own (`run_step`), the current Trio
run (`step_agents`, `call_agents`) or the running asyncio loop (`aio_step_agents`,
`aio_call_agents`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable
from typing import Any

import trio
from mesa import Agent

from ._guest import run_on_asyncio_host
from ._policy import StepPolicy, resolve_policy
from ._prepare import prepare
from ._recording import Recording, using_recording
from ._report import StepReport
from ._trio_host import run_on_trio_host

# -- stepping: each agent's astep() (or step()) ----------------------------------------


def run_step(
    agents: Iterable[Agent],
    *,
    policy: StepPolicy | None = None,
    clock: trio.abc.Clock | None = None,
    cassette: str | os.PathLike[str] | Recording | None = None,
    record: str | None = None,
    **options: Any,
) -> StepReport:
    """Synchronous `step_agents`: start a Trio run, step the agents, return the report.

    Takes the same ``policy``, ``cassette``, ``record`` and keyword options as
    `step_agents`, plus ``clock`` (passed to ``trio.run``; a
    ``trio.testing.MockClock`` runs timeouts in virtual time).

    Raises:
        RuntimeError: when called from inside a running Trio or asyncio event loop (it
            would block that loop); the message names the async API to await instead.
        TypeError, ValueError: before any agent runs, for bad input (naming it).
        StepFailed: in strict mode, after every agent has finished, if any failed.
    """
    where = "trio_mesa.run_step()"
    refuse_inside_event_loop(where)
    resolved = resolve_policy(where, policy, options)
    if clock is not None and not isinstance(clock, trio.abc.Clock):
        raise TypeError(f"{where}: clock must be a trio.abc.Clock or None, not {clock!r}")
    entries = prepare(agents, None, (), {}, resolved.shuffle, where)
    with using_recording(where, cassette, record):
        return trio.run(run_on_trio_host, entries, resolved, clock=clock)


async def step_agents(
    agents: Iterable[Agent],
    *,
    policy: StepPolicy | None = None,
    cassette: str | os.PathLike[str] | Recording | None = None,
    record: str | None = None,
    **options: Any,
) -> StepReport:
    """Step every agent concurrently, each in its own Trio task, and report on each.

    Each agent's ``astep()`` (or ``step()`` if it has no ``astep``) is called once. An
    `Exception` raised by one agent is captured in that agent's `AgentOutcome` and
    handed to the outcome hooks (by default, logged on the ``trio_mesa`` logger); it
    never cancels or disturbs another agent. ``KeyboardInterrupt``, ``SystemExit`` and
    cancellation of the caller are not captured: the other agents are cancelled, every
    task the step started has finished, and the exception itself (not a group)
    propagates.

    Args:
        agents: Mesa agents: a ``model.agents``, an ``AgentSet``, ``agents_by_type[T]``
            or any iterable of agents.
        policy: a `StepPolicy`; ``None`` means the defaults.
        options: `StepPolicy` fields (``strict``, ``fail_fast``, ``timeout``,
            ``deadline``, ``max_concurrency``, ``limiter``, ``sync_mode``,
            ``max_threads``, ``abandon_threads``, ``shuffle``, ``hooks``,
            ``retry``, ``request_retry``, ...), applied on top of ``policy``.
        cassette: record or replay every LLM request of the agents to or from this
            cassette file (or a `Recording` from `use_cassette`), keyed by (agent
            ``unique_id``, call number), as `use_cassette` describes; checked before
            any agent runs. A path given here is a recording of this call alone: for
            several steps, open it once with ``with trio_mesa.use_cassette(...)``.
        record: the record mode for ``cassette``: ``"none"`` (replay only),
            ``"once"`` (default), ``"new_episodes"`` or ``"all"``.

    Returns:
        A `StepReport` with one outcome per agent, in start order.

    Raises:
        RuntimeError: when awaited outside a Trio run (from asyncio, say); the message
            names `aio_step_agents`, its asyncio twin.
        TypeError, ValueError: before any agent runs, for bad input (naming it).
        CassetteError: a cassette that cannot be replayed, before any agent runs.
        StepFailed: in strict mode, after every agent has finished, if any failed.
    """
    where = "trio_mesa.step_agents()"
    require_trio_run(where, "aio_step_agents")
    resolved = resolve_policy(where, policy, options)
    entries = prepare(agents, None, (), {}, resolved.shuffle, where)
    with using_recording(where, cassette, record):
        return await run_on_trio_host(entries, resolved)


async def aio_step_agents(
    agents: Iterable[Agent],
    *,
    policy: StepPolicy | None = None,
    cassette: str | os.PathLike[str] | Recording | None = None,
    record: str | None = None,
    **options: Any,
) -> StepReport:
    """Asyncio twin of `step_agents`: await it from asyncio code.

    Steps every agent once (``astep()`` if it has one, else ``step()``), each in its own
    Trio task driven in guest mode on the running asyncio loop; asyncio-flavored
    ``astep`` coroutines run as tasks on that loop, so objects bound to it keep working.
    Isolation, ``policy``, ``cassette``, ``record``, options and the returned
    `StepReport` are exactly as in `step_agents`.

    Cancellation: if the awaiting task is cancelled, every agent still running is
    cancelled (its asyncio task gets ``CancelledError``) and the call waits until all
    of them have finished before raising ``CancelledError``; a second cancellation
    while it waits does not cut that wait short. When the call returns or raises, no
    task it started is pending.

    Raises:
        TypeError, ValueError: bad input, before any agent runs.
        StepFailed: in strict mode, after every agent has finished, if any failed.
        KeyboardInterrupt, SystemExit: raised by an agent, after the others were
            cancelled and finished.
    """
    where = "trio_mesa.aio_step_agents()"
    resolved = resolve_policy(where, policy, options)
    entries = prepare(agents, None, (), {}, resolved.shuffle, where)
    with using_recording(where, cassette, record):
        return await run_on_asyncio_host(entries, resolved)


# -- calling any method, keeping return values -------------------------------------------


async def call_agents(
    agents: Iterable[Agent],
    method: str | Callable[..., Any],
    /,
    *args: Any,
    policy: StepPolicy | None = None,
    **kwargs: Any,
) -> StepReport:
    """Call ``method`` on every agent concurrently and keep each return value.

    ``method`` is a method name (``agent.method(*args, **kwargs)`` is called) or a
    function (``method(agent, *args, **kwargs)``), as in Mesa's ``AgentSet.do``. Its
    flavor decides how it runs: an ``async def`` is asyncio-flavored unless marked
    `trio_native`, anything else is sync. Return values are in each outcome's
    ``result``. Isolation and cancellation are as in `step_agents`. Options come only
    as ``policy=``: every other keyword argument is the method's own (``timeout=`` here
    is passed to the method, not taken as a step option). Awaited outside a Trio run,
    it raises RuntimeError naming `aio_call_agents`.
    """
    where = "trio_mesa.call_agents()"
    require_trio_run(where, "aio_call_agents")
    resolved = resolve_policy(where, policy, {})
    entries = prepare(agents, method, args, kwargs, resolved.shuffle, where)
    return await run_on_trio_host(entries, resolved)


async def aio_call_agents(
    agents: Iterable[Agent],
    method: str | Callable[..., Any],
    /,
    *args: Any,
    policy: StepPolicy | None = None,
    **kwargs: Any,
) -> StepReport:
    """Asyncio twin of `call_agents`: call ``method`` on every agent, keep results.

    Host, cancellation and errors are as in `aio_step_agents`; options as in
    `call_agents` (``policy=`` only).
    """
    where = "trio_mesa.aio_call_agents()"
    resolved = resolve_policy(where, policy, {})
    entries = prepare(agents, method, args, kwargs, resolved.shuffle, where)
    return await run_on_asyncio_host(entries, resolved)


def require_trio_run(name: str, aio_twin: str) -> None:
    """Raise a RuntimeError naming the asyncio twin when awaited outside a Trio run.

    Awaited from asyncio, a Trio entry point would otherwise fail deep inside Trio with
    an error that names neither the cause nor the fix.
    """
    if trio.lowlevel.in_trio_run():
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        where = "outside any Trio run"
    else:
        where = "from asyncio"
    raise RuntimeError(
        f"{name} must be awaited inside a Trio run (trio.run), but was awaited {where}; "
        f"in asyncio code use `await trio_mesa.{aio_twin}(...)` instead"
    )


def refuse_inside_event_loop(name: str) -> None:
    """Raise a RuntimeError naming the async API when an event loop runs in this thread."""
    if trio.lowlevel.in_trio_run():
        raise RuntimeError(
            f"{name} starts its own Trio run and cannot be called from inside a running "
            "Trio event loop; in Trio code use `await trio_mesa.step_agents(...)` "
            "(or `await trio_mesa.call_agents(...)`) instead"
        )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(
        f"{name} starts its own Trio run and cannot be called from inside a running "
        "asyncio event loop; in asyncio code use `await trio_mesa.aio_step_agents(...)` "
        "(or `await trio_mesa.compat.step_agents_parallel(...)`) instead"
    )


__all__ = [
    "aio_call_agents",
    "aio_step_agents",
    "call_agents",
    "run_step",
    "step_agents",
]
