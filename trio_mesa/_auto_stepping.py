"""Automatic stepping: the one ``shuffle_do`` patch, used by `trio_mesa.simulate` and by
`trio_mesa.compat.enable_automatic_parallel_stepping`.

Mesa 3.5 has two concrete agent sets: ``AgentSet`` (weak references; ``agents_by_type``
values are not these) and ``_HardKeyAgentSet`` (``model.agents`` and
``model.agents_by_type[T]``). mesa-llm 0.3.2 patches only ``AgentSet``, so
``model.agents.shuffle_do("step")`` stayed sequential; we patch both, and keep Mesa's own
functions to put back exactly.

The patched ``shuffle_do("step")`` (or ``("astep")``, no other arguments) goes, in order:
to the stepper of the `simulate` run whose model step runs in this context
(`run_stepper`); else, for ``"step"`` on a model with ``parallel_stepping = True``, to
the automatic stepping compat enabled (`automatic`); else to Mesa's own (with a
one-time warning while compat's is enabled, if the model has no ``parallel_stepping``
attribute at all). Lives in the
core, not in compat, because `simulate` needs it and the core never imports compat.
"""

from __future__ import annotations

import contextvars
import functools
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from mesa.agentset import AbstractAgentSet, AgentSet, _HardKeyAgentSet

from ._policy import StepPolicy

PATCHED_CLASSES: tuple[type[AbstractAgentSet], ...] = (AgentSet, _HardKeyAgentSet)


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


ORIGINAL_SHUFFLE_DO: dict[type[AbstractAgentSet], Callable[..., Any]] = {
    cls: _mesa_original(cls) for cls in PATCHED_CLASSES
}

#: The agent-set stepper of the `simulate` run whose ``model.step()`` runs in this
#: context: ``stepper(agent_set, "step" | "astep")``. ``None`` elsewhere.
run_stepper: contextvars.ContextVar[Callable[[Any, str], Any] | None] = contextvars.ContextVar(
    "trio_mesa_run_stepper", default=None
)
#: The `StepPolicy` of that run (compat's ``do_async`` uses it there). ``None`` elsewhere.
run_policy: contextvars.ContextVar[StepPolicy | None] = contextvars.ContextVar(
    "trio_mesa_run_policy", default=None
)


class _Automatic:
    # compat's step_set_sync while enable_automatic_parallel_stepping is in force.
    step_set: Callable[[Any], Any] | None = None


automatic = _Automatic()


_UNSET = object()
_warned_flag_unset = False


def _warn_flag_unset(model: Any) -> None:
    """Warn, once per process, that automatic stepping skipped a model without the flag.

    mesa-llm 0.3.2 steps a model in parallel only if it has ``parallel_stepping = True``
    and runs the rest sequentially without a word; compat keeps that contract (a model
    that sets ``parallel_stepping = False`` opted out and gets no warning), but a model
    with no such attribute at all was most likely meant to run in parallel.
    """
    global _warned_flag_unset
    if _warned_flag_unset:
        return
    _warned_flag_unset = True
    warnings.warn(
        f"automatic parallel stepping is enabled, but {type(model).__qualname__} has no "
        "`parallel_stepping` attribute, so shuffle_do('step') ran its agents one after "
        "another (as mesa-llm does). Set `self.parallel_stepping = True` in the model's "
        "__init__ to step them in parallel, or `= False` to silence this warning.",
        UserWarning,
        stacklevel=3,  # the caller of shuffle_do: the model's step()
    )


def parallel_shuffle_do(original: Callable[..., Any]) -> Callable[..., Any]:
    """The patched ``shuffle_do`` wrapping Mesa's ``original``."""

    @functools.wraps(original)
    def shuffle_do(self: Any, method: Any, *args: Any, **kwargs: Any) -> Any:
        if not args and not kwargs and (method == "step" or method == "astep") and len(self):
            stepper = run_stepper.get()
            if stepper is not None:  # inside a trio_mesa.simulate model step
                stepper(self, method)
                return self
            step_set = automatic.step_set
            if method == "step" and step_set is not None:
                model = getattr(next(iter(self)), "model", None)
                flag = getattr(model, "parallel_stepping", _UNSET)
                if flag is _UNSET:
                    _warn_flag_unset(model)
                elif flag:
                    step_set(self)
                    return self
        return original(self, method, *args, **kwargs)

    shuffle_do.__trio_mesa_original__ = original  # type: ignore[attr-defined]
    return shuffle_do


def install_patch() -> None:
    """Patch ``shuffle_do`` on both agent set classes (idempotent)."""
    for cls in PATCHED_CLASSES:
        cls.shuffle_do = parallel_shuffle_do(ORIGINAL_SHUFFLE_DO[cls])


def remove_patch() -> None:
    """Put Mesa's original ``shuffle_do`` functions back (the very same objects)."""
    for cls, original in ORIGINAL_SHUFFLE_DO.items():
        cls.shuffle_do = original


_run_patch_lock = threading.Lock()
_run_patch: dict[str, Any] = {"runs": 0, "previous": {}}


@contextmanager
def stepping_for_run(stepper: Callable[[Any, str], Any], policy: StepPolicy) -> Iterator[None]:
    """Inside the block, ``shuffle_do("step")``/``("astep")`` in this context calls
    ``stepper``, and compat's ``do_async`` uses ``policy``. The patch is installed for the
    block if it was not (and then put back as it was, even on KeyboardInterrupt), left
    alone if it was (compat's automatic stepping). Runs going on at once share it."""
    with _run_patch_lock:
        if _run_patch["runs"] == 0:
            previous = {}
            for cls in PATCHED_CLASSES:
                current = cls.__dict__["shuffle_do"]
                if not hasattr(current, "__trio_mesa_original__"):
                    previous[cls] = current
                    cls.shuffle_do = parallel_shuffle_do(ORIGINAL_SHUFFLE_DO[cls])
            _run_patch["previous"] = previous
        _run_patch["runs"] += 1
    stepper_token = run_stepper.set(stepper)
    policy_token = run_policy.set(policy)
    try:
        yield
    finally:
        run_policy.reset(policy_token)
        run_stepper.reset(stepper_token)
        with _run_patch_lock:
            _run_patch["runs"] -= 1
            if _run_patch["runs"] == 0:
                for cls, previous_fn in _run_patch["previous"].items():
                    cls.shuffle_do = previous_fn
                _run_patch["previous"] = {}


__all__ = ["run_policy", "run_stepper", "stepping_for_run"]
