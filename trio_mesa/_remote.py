"""Stand-ins for the live objects of a report that ran elsewhere: an agent of another
process (`RemoteAgent`: ``unique_id`` and class name) and an exception that could not
travel (`RemoteException`: type name and message), each an instance of a subclass named
after the original class, so ``type(x).__name__`` reads as it did there. Both pickle by
value. Used by sweeps (`trio_mesa._portable`) and by run directories' ledgers (the JSON
form in `trio_mesa._run_report`)."""

from __future__ import annotations

import functools
import pickle
from typing import Any

from ._text import safe_repr

__all__ = ["RemoteAgent", "RemoteException", "remote_agent", "remote_exception", "round_trips"]


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
        return (remote_agent, (self.unique_id, self.class_name))

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
        return (remote_exception, (self.type_name, str(self)))

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


def remote_agent(unique_id: Any, class_name: str) -> RemoteAgent:
    cls = _named(RemoteAgent, class_name)
    return cls(unique_id, class_name)  # type: ignore[no-any-return]


def remote_exception(type_name: str, message: str) -> RemoteException:
    cls = _named(RemoteException, type_name)
    return cls(type_name, message)  # type: ignore[no-any-return]
