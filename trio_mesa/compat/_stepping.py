"""The stepping functions of `trio_mesa.compat`, with mesa-llm 0.3.2's names and parameters.

Every function builds its `StepPolicy` at call time (see `_config`) and hands it to
trio-mesa's public asyncio entry points (`trio_mesa.aio_step_agents`,
`trio_mesa.aio_call_agents`), which validate all agents before any runs: on the caller's
running asyncio loop when awaited, or on a fresh ``asyncio.run`` loop when called
synchronously.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import trio
from mesa.agent import Agent

from trio_mesa import Status, StepPolicy, StepReport, aio_call_agents, aio_step_agents
from trio_mesa._auto_stepping import run_policy

from ._config import current_policy, get_mode

if TYPE_CHECKING:
    from collections.abc import Iterable

    from mesa_llm.llm_agent import LLMAgent  # type: ignore[import-not-found]

logger = logging.getLogger("trio_mesa")


async def step_agents_parallel(agents: list[Agent | LLMAgent]) -> StepReport:
    """Step all agents concurrently on the running asyncio loop; return the `StepReport`.

    Drop-in for ``mesa_llm.parallel_stepping.step_agents_parallel``. Each agent's
    ``astep()`` (if it has one, else ``step()``) is called once, in the given order.
    ``astep`` coroutines run as tasks on the caller's own loop; sync ``step()`` runs in
    worker threads, so blocking calls overlap (compat's default ``sync_mode="thread"``;
    ``policy(sync_mode="inline")`` runs them one after another on the loop). One
    agent's exception is logged with its ``unique_id`` and recorded in the report; it
    does not stop the others (mesa-llm's version raised it and abandoned the rest).

    Cancelling the awaiting task cancels the agents still running and waits for them
    before ``CancelledError`` propagates: nothing it started is left pending.

    Raises:
        TypeError, ValueError: bad input, before any agent runs.
        StepFailed: in strict mode (``configure``, ``policy``, ``TRIO_MESA_STRICT=1``),
            once every agent has finished, if any failed.
        KeyboardInterrupt, SystemExit: as raised by an agent, after the rest stopped.
    """
    return await aio_step_agents(agents, policy=current_policy(shuffle=False))


def step_agents_multithreaded(agents: list[Agent | LLMAgent]) -> StepReport:
    """Step all agents concurrently, sync ``step()`` agents each in a worker thread.

    Drop-in for ``mesa_llm.parallel_stepping.step_agents_multithreaded``. Blocks until
    every agent has finished and returns the `StepReport`. Sync agents run in up to
    ``max_threads`` (default 128) worker threads at once, so blocking calls overlap;
    ``astep`` coroutines all share one asyncio loop (never one loop per agent). Called
    from a thread running an event loop, the step runs in a helper thread and this
    thread blocks until it ends, as mesa-llm's does. Errors as in `step_agents_parallel`.
    """
    return _run_blocking(agents, current_policy(sync_mode="thread", shuffle=False))


def step_agents_parallel_sync(agents: list[Agent | LLMAgent]) -> StepReport:
    """Synchronous parallel stepping in the mode set by `enable_automatic_parallel_stepping`.

    Drop-in for ``mesa_llm.parallel_stepping.step_agents_parallel_sync``: mode
    ``"asyncio"`` steps as `step_agents_parallel` on a fresh ``asyncio.run`` loop (in a
    helper thread if this thread already runs an event loop); mode ``"threading"`` is
    `step_agents_multithreaded`. Blocks until every agent has finished; returns the
    `StepReport`. Errors as in `step_agents_parallel`.
    """
    if get_mode() == "threading":
        return step_agents_multithreaded(agents)
    return _run_blocking(agents, current_policy(shuffle=False))


def step_set_sync(agent_set: Any) -> StepReport:
    """The automatic parallel ``shuffle_do("step")``: Mesa's shuffled order, one step."""
    if get_mode() == "threading":
        return _run_blocking(agent_set, current_policy(sync_mode="thread", shuffle=True))
    return _run_blocking(agent_set, current_policy(shuffle=True))


class AgentResults(list):  # type: ignore[type-arg]
    """What ``await agent_set.do_async(method, ...)`` returns: one slot per agent, in order.

    The slot of an agent that returned holds its return value, as with mesa-llm. The
    slot of an agent that failed holds the exception it raised (as
    ``asyncio.gather(..., return_exceptions=True)`` would); a timed-out one holds an
    `trio_mesa.AgentTimeout`, one stopped by ``fail_fast`` an `trio_mesa.AgentCancelled`,
    and one removed from the model before its turn ``None``. The full `StepReport` is
    ``.report``; ``.report.failed`` lists the failures.
    """

    __slots__ = ("report",)

    def __init__(self, report: StepReport) -> None:
        super().__init__(o.result if o.status is Status.OK else o.exception for o in report)
        self.report = report


def do_async(self, method: str, *args, **kwargs):  # mesa-llm's signature
    """Call ``method(*args, **kwargs)`` on every agent of the set concurrently.

    Use as ``results = await agent_set.do_async("method", ...)``. Returns a coroutine
    that resolves to an `AgentResults` list in the set's order (not shuffled), keeping
    each agent's return value or, for a failed agent, its exception (the failure is
    logged too). ``async def`` methods run as tasks on the running loop; sync methods
    run as the policy's ``sync_mode`` says. Cancellation, strict mode and errors as in
    `step_agents_parallel`; a missing method raises TypeError before any agent runs.
    """
    return _do_async(self, method, args, kwargs)


async def _do_async(
    agent_set: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> AgentResults:
    logger.info("Running async method %r on %d agents", method, len(agent_set))
    run = run_policy.get()  # inside a trio_mesa.simulate model step: the run's policy
    policy = current_policy(shuffle=False) if run is None else run.replace(shuffle=False)
    return AgentResults(await aio_call_agents(agent_set, method, *args, policy=policy, **kwargs))


def _run_blocking(agents: Iterable[Agent], policy: StepPolicy) -> StepReport:
    if _event_loop_running_here():
        # Running a loop inside a running loop is impossible; blocking this thread on a
        # step run elsewhere is what mesa-llm does here (asyncio.run in a worker thread).
        context = contextvars.copy_context()
        with ThreadPoolExecutor(1, thread_name_prefix="trio-mesa-step") as pool:
            step = aio_step_agents(agents, policy=policy)
            return pool.submit(context.run, asyncio.run, step).result()
    return asyncio.run(aio_step_agents(agents, policy=policy))


def _event_loop_running_here() -> bool:
    if trio.lowlevel.in_trio_run():
        return True
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
