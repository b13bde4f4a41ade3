"""The portable form of a `RunReport`: what a sweep's worker process sends back.

A `RunReport` holds live objects: every `AgentOutcome` names its Mesa ``agent`` (which
pickles the whole model with it, grid and all, or fails to), its ``exception`` (whose
class may not rebuild from its pickled ``args``: an exception class with required
keyword arguments pickles fine and fails to unpickle, in the driver, taking the whole
run's result with it) and its ``result`` (anything). `portable_report` copies the report
with each agent replaced by a `RemoteAgent` (its ``unique_id`` and class name), each
exception kept if it survives a pickle round trip and otherwise replaced by a
`RemoteException` (its type name and message), and each result kept on the same
condition, else replaced by its ``repr``. Both stand-ins are instances of a subclass
named after the original class, so ``type(o.agent).__name__`` and ``"TypeName:
message"`` descriptions read as they did in the worker, and both pickle by value.
"""

from __future__ import annotations

from dataclasses import replace

from ._outcome import AgentOutcome
from ._remote import RemoteAgent, RemoteException, remote_agent, remote_exception, round_trips
from ._run_report import ModelStep, RunReport
from ._text import CELL_LIMIT, exception_message, safe_repr

__all__ = ["RemoteAgent", "RemoteException", "portable_report", "round_trips"]


def _portable_outcome(o: AgentOutcome, agents: dict[int, RemoteAgent]) -> AgentOutcome:
    agent = agents.get(id(o.agent))
    if agent is None:
        agent = agents[id(o.agent)] = remote_agent(o.unique_id, type(o.agent).__name__)
    exc = o.exception
    if exc is not None and not round_trips(exc):
        exc = remote_exception(type(exc).__name__, exception_message(exc))
    result = o.result
    if result is not None and not round_trips(result):
        result = safe_repr(result, limit=CELL_LIMIT)
    return o._replace(agent=agent, exception=exc, result=result)


def portable_report(report: RunReport) -> RunReport:
    """A copy of ``report`` that pickles and unpickles anywhere (see the module notes).

    Exceptions kept lose their traceback, ``__cause__`` and ``__context__``, as every
    pickled exception does; their ``__notes__`` (naming the agent) are kept.
    """
    agents: dict[int, RemoteAgent] = {}
    steps = []
    for step in report.steps:
        reports = tuple(
            replace(r, outcomes=tuple(_portable_outcome(o, agents) for o in r.outcomes))
            for r in step.reports
        )
        steps.append(ModelStep(step.step, reports, step.duration))
    return replace(report, steps=tuple(steps))
