"""What an agent's code needs to run: Trio, asyncio, or a plain sync call.

``@trio_native`` marks Trio-flavored code; any other ``async def`` is taken to be
asyncio-flavored (every mesa-llm agent is: litellm runs on asyncio); anything else is sync.
"""

from __future__ import annotations

import enum
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

_MARK = "__trio_mesa_native__"

T = TypeVar("T")


class Flavor(enum.Enum):
    """The event loop an agent call needs."""

    TRIO = "trio"
    ASYNCIO = "asyncio"
    SYNC = "sync"

    # Members are singletons: identity hashing in C instead of Enum's Python __hash__,
    # which showed up once per agent in profiles of a 10,000-agent step.
    __hash__ = object.__hash__


def trio_native[T](obj: T) -> T:
    """Mark an agent class, or one ``async def`` method, as Trio-flavored.

    Trio-flavored code may use ``trio.sleep``, nurseries, cancel scopes and other Trio
    APIs; it runs directly in the step's Trio task, with no bridge. On a class the mark
    is inherited by subclasses and applies to all their ``async def`` methods.

    Raises:
        TypeError: when ``obj`` is neither a class nor an ``async def`` function.
    """
    if isinstance(obj, type) or inspect.iscoroutinefunction(obj):
        setattr(obj, _MARK, True)
        return obj
    raise TypeError(f"@trio_native marks a class or an 'async def' function, not {obj!r}")


def flavor_of(fn: Callable[..., Any], owner: type | None = None) -> Flavor:
    """The flavor of ``fn`` (a function or bound method), seen as a member of ``owner``."""
    if not inspect.iscoroutinefunction(fn):
        return Flavor.SYNC
    if getattr(fn, _MARK, False) or (owner is not None and getattr(owner, _MARK, False)):
        return Flavor.TRIO
    return Flavor.ASYNCIO


# (class) -> (method name, flavor): resolved once per class, since the per-agent path
# runs up to 100,000 times a step.
_step_plans: dict[type, tuple[str, Flavor]] = {}


def step_plan(agent: Any) -> tuple[str, Flavor]:
    """Which method steps ``agent`` (``astep`` if it has one, else ``step``) and its flavor.

    Raises:
        TypeError: naming the agent, when ``astep`` is not an ``async def`` or when the
            agent has neither a callable ``astep`` nor ``step``.
    """
    cls = type(agent)
    plan = _step_plans.get(cls)
    if plan is None:
        plan = _step_plans[cls] = _resolve_step(cls, agent)
    return plan


def _resolve_step(cls: type, agent: Any) -> tuple[str, Flavor]:
    astep = getattr(cls, "astep", None)
    if astep is not None:
        if not inspect.iscoroutinefunction(astep):
            raise TypeError(
                f"{cls.__qualname__}.astep of agent {_agent_name(agent)} must be an "
                f"'async def' coroutine function, got {astep!r}"
            )
        return "astep", flavor_of(astep, cls)
    if callable(getattr(cls, "step", None)):
        return "step", Flavor.SYNC
    raise TypeError(
        f"agent {_agent_name(agent)} ({cls.__qualname__}) has neither an 'astep' "
        "coroutine method nor a 'step' method"
    )


def method_plan(agent: Any, method: str | Callable[..., Any]) -> Flavor:
    """The flavor of calling ``method`` (a name or a function taking the agent) on ``agent``.

    Raises:
        TypeError: when the method does not exist or is not callable.
    """
    if isinstance(method, str):
        cls = type(agent)
        fn = getattr(cls, method, None)
        if fn is None:
            fn = getattr(agent, method, None)
        if not callable(fn):
            raise TypeError(
                f"agent {_agent_name(agent)} ({cls.__qualname__}) has no callable method {method!r}"
            )
        return flavor_of(fn, cls)
    if not callable(method):
        raise TypeError(f"method must be a method name or a callable, not {method!r}")
    return flavor_of(method)


def _agent_name(agent: Any) -> str:
    uid = getattr(agent, "unique_id", None)
    return f"unique_id={uid!r}" if uid is not None else repr(agent)
