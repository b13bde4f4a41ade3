"""Input preparation: every agent validated and its call resolved before any agent runs.

The result is a list of entries, one per agent in start order: ``(agent, call, flavor)``
where ``call`` takes no arguments. Bad input raises here, naming the offending object, so
a step is never half done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from mesa import Agent, Model
from mesa.agentset import AbstractAgentSet

from ._flavor import Flavor, _step_plans, method_plan, step_plan

# One prepared call: (agent, zero-argument callable, flavor).
Entry = tuple[Any, Callable[[], Any], Flavor]


def prepare(
    agents: Iterable[Agent],
    method: str | Callable[..., Any] | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    shuffle: bool | None,
    where: str,
) -> list[Entry]:
    """Validate every agent and resolve its call (``method=None``: its step).

    ``shuffle`` is `StepPolicy.shuffle`; ``where`` names the public function, for errors.
    """
    if isinstance(agents, Agent):
        raise TypeError(
            f"{where}: agents must be an iterable of agents, not a single agent: {agents!r} "
            "(pass [agent])"
        )
    if isinstance(agents, Model):
        raise TypeError(
            f"{where}: agents must be an iterable of Mesa agents, not the model {agents!r} "
            "(pass model.agents)"
        )
    if isinstance(agents, (str, bytes)) or not isinstance(agents, Iterable):
        raise TypeError(f"{where}: agents must be an iterable of Mesa agents, not {agents!r}")
    entries: list[Entry] = []
    step_plans = _step_plans
    seen: set[int] = set()
    append = entries.append
    for agent in agents:
        if not isinstance(agent, Agent):
            raise TypeError(f"{where}: not a Mesa agent (mesa.Agent): {agent!r}")
        key = id(agent)
        if key in seen:
            raise ValueError(
                f"{where}: agent unique_id={agent.unique_id!r} ({agent!r}) appears twice"
            )
        seen.add(key)
        if method is None:
            plan = step_plans.get(type(agent)) or step_plan(agent)
            append((agent, getattr(agent, plan[0]), plan[1]))
        else:
            flavor = method_plan(agent, method)
            if isinstance(method, str):
                bound = getattr(agent, method)
                call = partial(bound, *args, **kwargs) if (args or kwargs) else bound
            else:
                call = partial(method, agent, *args, **kwargs)
            append((agent, call, flavor))
    if shuffle is None:
        shuffle = isinstance(agents, AbstractAgentSet)
    if shuffle and entries:
        # Same length, same RNG: the same permutation Mesa's shuffle_do draws.
        rng = agents.random if isinstance(agents, AbstractAgentSet) else entries[0][0].model.random
        rng.shuffle(entries)
    return entries


__all__ = ["Entry", "prepare"]
