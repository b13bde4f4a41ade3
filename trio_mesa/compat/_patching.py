"""Automatic parallel stepping: the ``shuffle_do`` patch and ``do_async`` on agent sets.

Mesa 3.5 has two concrete agent sets: ``AgentSet`` (weak references; ``agents_by_type``
values are not these) and ``_HardKeyAgentSet`` (``model.agents`` and
``model.agents_by_type[T]``). mesa-llm 0.3.2 patches only ``AgentSet``, so
``model.agents.shuffle_do("step")`` stayed sequential; we patch both, and keep Mesa's own
functions to put back exactly.
"""

from __future__ import annotations

import contextvars
import functools
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from mesa.agentset import AbstractAgentSet, AgentSet, _HardKeyAgentSet

from ._config import set_mode
from ._stepping import do_async, step_set_sync

_PATCHED_CLASSES: tuple[type[AbstractAgentSet], ...] = (AgentSet, _HardKeyAgentSet)


def _mesa_original(cls: type) -> Callable[..., Any]:
    """Mesa's own ``cls.shuffle_do``, even if mesa-llm replaced it before we were imported."""
    current = cls.__dict__["shuffle_do"]
    current = getattr(current, "__trio_mesa_original__", current)
    if getattr(current, "__module__", None) != "mesa.agentset":
        mesa_llm = sys.modules.get("mesa_llm.parallel_stepping")
        original = getattr(mesa_llm, "_original_shuffle_do", None)
        if getattr(original, "__module__", None) == "mesa.agentset":
            current = original
    return current


_ORIGINAL_SHUFFLE_DO: dict[type, Callable[..., Any]] = {
    cls: _mesa_original(cls) for cls in _PATCHED_CLASSES
}


def _parallel_shuffle_do(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def shuffle_do(self: Any, method: Any, *args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs and (method == "step" or method == "astep") and len(self):
            stepper = run_stepper.get()
            if stepper is not None:  # inside a trio_mesa.simulate model step
                stepper(self, method)
                return self
            if method == "step":
                model = getattr(next(iter(self)), "model", None)
                if getattr(model, "parallel_stepping", False):
                    step_set_sync(self)
                    return self
        return original(self, method, *args, **kwargs)

    shuffle_do.__trio_mesa_original__ = original  # type: ignore[attr-defined]
    return shuffle_do


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

    Raises:
        ValueError: for any other ``mode`` (nothing is patched then).
    """
    set_mode(mode)
    for cls in _PATCHED_CLASSES:
        cls.shuffle_do = _parallel_shuffle_do(_ORIGINAL_SHUFFLE_DO[cls])
    install_do_async()


def disable_automatic_parallel_stepping():  # mesa-llm's signature: no annotations
    """Put Mesa's original ``shuffle_do`` functions back (the very same objects)."""
    for cls, original in _ORIGINAL_SHUFFLE_DO.items():
        cls.shuffle_do = original


#: The agent-set stepper of the `trio_mesa.simulate` run whose ``model.step()`` runs in
#: this context: ``stepper(agent_set, "step" | "astep")``. ``None`` elsewhere.
run_stepper: contextvars.ContextVar[Callable[[Any, str], Any] | None] = contextvars.ContextVar(
    "trio_mesa_run_stepper", default=None
)
_run_patch_lock = threading.Lock()
_run_patch: dict[str, Any] = {"runs": 0, "previous": {}}


@contextmanager
def stepping_for_run(stepper: Callable[[Any, str], Any]) -> Iterator[None]:
    """Inside the block, ``shuffle_do("step")``/``("astep")`` in this context calls
    ``stepper``: the patch `enable_automatic_parallel_stepping` makes, installed for the
    block if it was not (and then put back as it was, even on KeyboardInterrupt),
    left alone if the user had installed it. Runs going on at once share one patch."""
    with _run_patch_lock:
        if _run_patch["runs"] == 0:
            previous = {}
            for cls in _PATCHED_CLASSES:
                current = cls.__dict__["shuffle_do"]
                if not hasattr(current, "__trio_mesa_original__"):
                    previous[cls] = current
                    cls.shuffle_do = _parallel_shuffle_do(_ORIGINAL_SHUFFLE_DO[cls])
            _run_patch["previous"] = previous
        _run_patch["runs"] += 1
    token = run_stepper.set(stepper)
    try:
        yield
    finally:
        run_stepper.reset(token)
        with _run_patch_lock:
            _run_patch["runs"] -= 1
            if _run_patch["runs"] == 0:
                for cls, previous_fn in _run_patch["previous"].items():
                    cls.shuffle_do = previous_fn
                _run_patch["previous"] = {}


def install_do_async() -> None:
    """Make ``do_async`` available on every Mesa agent set (replacing mesa-llm's)."""
    for cls in (AbstractAgentSet, *_PATCHED_CLASSES):
        cls.do_async = do_async
