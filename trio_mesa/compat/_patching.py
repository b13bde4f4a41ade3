"""Automatic parallel stepping: mesa-llm's switch for the ``shuffle_do`` patch, and
``do_async`` on agent sets.

The patch itself (both of Mesa 3.5's agent set classes, Mesa's own functions kept to
put back exactly) lives in the core, `trio_mesa._auto_stepping`, which `simulate` uses
too; this module turns it on and off the way mesa-llm's functions do.
"""

from __future__ import annotations

from mesa.agentset import AbstractAgentSet

from trio_mesa._auto_stepping import PATCHED_CLASSES, automatic, install_patch, remove_patch

from ._config import set_mode
from ._stepping import do_async, step_set_sync


def enable_automatic_parallel_stepping(mode: str = "asyncio"):  # mesa-llm's: no return type
    """Make ``shuffle_do("step")`` step in parallel for models with ``parallel_stepping``.

    Drop-in for mesa-llm's function of the same name. Patches ``shuffle_do`` on Mesa's
    ``AgentSet`` and on ``_HardKeyAgentSet`` (``model.agents``, ``agents_by_type[T]``):
    when the set's first agent's model has ``parallel_stepping = True``, a
    ``shuffle_do("step")`` steps the agents concurrently in Mesa's shuffled order (drawn
    from the set's RNG, as Mesa does) via `step_agents_parallel_sync`, skipping agents
    removed from the model before their turn, and returns the set. Every other
    ``shuffle_do`` call runs Mesa's original. ``mode`` is ``"asyncio"`` or
    ``"threading"`` (sync agents in worker threads). Also (re)installs ``do_async``.

    As in mesa-llm, a model without ``parallel_stepping = True`` is stepped by Mesa's
    sequential original; one with no such attribute at all also gets a one-time
    ``UserWarning`` (mesa-llm says nothing), since it was most likely meant to run in
    parallel. ``parallel_stepping = False`` opts a model out without a warning.

    Raises:
        ValueError: for any other ``mode`` (nothing is patched then).
    """
    set_mode(mode)
    automatic.step_set = step_set_sync
    install_patch()
    install_do_async()


def disable_automatic_parallel_stepping():  # mesa-llm's signature: no annotations
    """Put Mesa's original ``shuffle_do`` functions back (the very same objects)."""
    automatic.step_set = None
    remove_patch()


def install_do_async() -> None:
    """Make ``do_async`` available on every Mesa agent set (replacing mesa-llm's)."""
    for cls in (AbstractAgentSet, *PATCHED_CLASSES):
        cls.do_async = do_async
