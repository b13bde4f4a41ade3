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

import functools
import json
import pickle
from dataclasses import replace
from typing import Any

from ._breaker import BreakerEvent
from ._outcome import AgentOutcome, Status
from ._report import StepReport
from ._run_report import ModelStep, RunReport
from ._text import CELL_LIMIT, exception_message, safe_repr
from ._usage import NO_USAGE, Usage

__all__ = [
    "RemoteAgent",
    "RemoteException",
    "model_step_from_json",
    "model_step_to_json",
    "portable_report",
    "round_trips",
]


def round_trips(value: object) -> bool:
    """Whether ``value`` pickles and unpickles (as a worker's result must)."""
    try:
        pickle.loads(pickle.dumps(value))
    except Exception:
        return False
    return True


class RemoteAgent:
    """Stands for an agent of a run that ran in another process: ``unique_id`` and
    ``class_name`` (the agent's class's ``__name__``, also this object's class name)."""

    __slots__ = ("class_name", "unique_id")

    def __init__(self, unique_id: Any, class_name: str) -> None:
        self.unique_id = unique_id
        self.class_name = class_name

    def __reduce__(self) -> Any:
        return (_remote_agent, (self.unique_id, self.class_name))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RemoteAgent):
            return NotImplemented
        return (self.unique_id, self.class_name) == (other.unique_id, other.class_name)

    def __hash__(self) -> int:
        return hash((RemoteAgent, self.class_name, repr(self.unique_id)))

    def __repr__(self) -> str:
        return f"<remote {self.class_name} unique_id={safe_repr(self.unique_id, limit=80)}>"


class RemoteException(Exception):
    """Stands for an agent's exception that could not be sent back from its worker:
    ``type_name`` and the message (``str()`` of it), under a class of the same name."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name

    def __reduce__(self) -> Any:
        return (_remote_exception, (self.type_name, str(self)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RemoteException):
            return NotImplemented
        return (self.type_name, self.args) == (other.type_name, other.args)

    def __hash__(self) -> int:
        return hash((RemoteException, self.type_name, self.args))


def _named(base: type, name: str) -> type:
    return _subclass(base, name if name.isidentifier() else base.__name__)


@functools.cache
def _subclass(base: type, name: str) -> type:
    # One class per (base, name), so stand-ins of one agent class share a type.
    return type(name, (base,), {"__slots__": ()} if base is RemoteAgent else {})


def _remote_agent(unique_id: Any, class_name: str) -> RemoteAgent:
    cls = _named(RemoteAgent, class_name)
    return cls(unique_id, class_name)  # type: ignore[no-any-return]


def _remote_exception(type_name: str, message: str) -> RemoteException:
    cls = _named(RemoteException, type_name)
    return cls(type_name, message)  # type: ignore[no-any-return]


def _portable_outcome(o: AgentOutcome, agents: dict[int, RemoteAgent]) -> AgentOutcome:
    agent = agents.get(id(o.agent))
    if agent is None:
        agent = agents[id(o.agent)] = _remote_agent(o.unique_id, type(o.agent).__name__)
    exc = o.exception
    if exc is not None and not round_trips(exc):
        exc = _remote_exception(type(exc).__name__, exception_message(exc))
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


# -- JSON: the ledger of a run directory, `RunReport.from_json` ---------------------------
#
# One model step as plain JSON values, and back. What cannot be JSON is kept as the
# portable stand-ins above: an agent as a `RemoteAgent` (``unique_id``, class name), an
# exception as a `RemoteException` (type name, message), a result that is not JSON as
# its ``repr``. ``unique_id``s that are not ``int`` or ``str`` come back as ``str``.

_USAGE_FIELDS = (
    "calls",
    "prompt_tokens",
    "completion_tokens",
    "known_cost",
    "unpriced_calls",
    "request_retries",
)


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    try:
        json.dumps(value, allow_nan=True)
    except (TypeError, ValueError):
        return safe_repr(value, limit=CELL_LIMIT)
    return value


def _uid(value: Any) -> Any:
    return value if isinstance(value, (int, str)) else safe_repr(value, limit=200)


def _outcome_to_json(o: AgentOutcome) -> dict[str, Any]:
    exc = o.exception
    doc: dict[str, Any] = {
        "unique_id": _uid(o.unique_id),
        "agent_class": type(o.agent).__name__,
        "status": o.status.value,
        "exception": None
        if exc is None
        else [
            exc.type_name if isinstance(exc, RemoteException) else type(exc).__name__,
            exception_message(exc),
        ],
        "result": _json_value(o.result),
        "duration": o.duration,
        "attempts": o.attempts,
        "abandoned": o.abandoned,
    }
    if o.usage:
        doc["usage"] = [getattr(o.usage, name) for name in _USAGE_FIELDS]
    return doc


def model_step_to_json(step: ModelStep) -> dict[str, Any]:
    """``step`` as plain JSON values (`model_step_from_json` reads it back)."""
    return {
        "step": step.step,
        "duration": step.duration,
        "reports": [
            {
                "step": r.step,
                "duration": r.duration,
                "circuit_events": [[e[0], e[1], e[2]] for e in r.circuit_events],
                "unattributed_requests": r.unattributed_requests,
                "outcomes": [_outcome_to_json(o) for o in r.outcomes],
            }
            for r in step.reports
        ],
    }


def model_step_from_json(doc: dict[str, Any]) -> ModelStep:
    """The `ModelStep` `model_step_to_json` wrote, with portable agents and exceptions.

    Raises:
        KeyError, TypeError, ValueError: ``doc`` is not what `model_step_to_json` writes.
    """
    agents: dict[tuple[Any, str], RemoteAgent] = {}
    reports = []
    for r in doc["reports"]:
        outcomes = []
        for o in r["outcomes"]:
            key = (o["unique_id"], o["agent_class"])
            agent = agents.get(key)
            if agent is None:
                agent = agents[key] = _remote_agent(*key)
            exc = o["exception"]
            usage = o.get("usage")
            outcomes.append(
                AgentOutcome(
                    agent,
                    o["unique_id"],
                    Status(o["status"]),
                    None if exc is None else _remote_exception(str(exc[0]), str(exc[1])),
                    o["result"],
                    float(o["duration"]),
                    int(o["attempts"]),
                    bool(o["abandoned"]),
                    NO_USAGE if usage is None else Usage(*usage),
                )
            )
        reports.append(
            StepReport(
                tuple(outcomes),
                r["step"],
                float(r["duration"]),
                tuple(BreakerEvent(*e) for e in r["circuit_events"]),
                int(r["unattributed_requests"]),
            )
        )
    return ModelStep(int(doc["step"]), tuple(reports), float(doc["duration"]))
