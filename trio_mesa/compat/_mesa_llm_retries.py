"""Bound mesa-llm's own endless LLM retry, so that trio-mesa's step-level retry is the one loop.

mesa-llm 0.3.2's ``ModuleLLM.generate`` and ``ModuleLLM.agenerate`` retry
``APIConnectionError``, ``Timeout`` and ``RateLimitError`` with tenacity's
``wait_exponential(min=1, max=60)`` and no stop, ignoring ``Retry-After``; and under
them litellm's OpenAI client retries 408, 429, 5xx and dropped connections twice more.
Against a quota-limited provider every agent then backs off on its own, for ever. This
module's switch bounds both, as litellm's Router sets its provider SDK's
``max_retries`` to 0 and keeps one retry loop of its own: with ``attempts=1`` and
``sdk_retries=0`` one ``generate`` call is one HTTP request, and its exception reaches
the agent's step, where `trio_mesa.Retry` (and the shared rate limit) decide.

How, and why this way: ``generate`` is decorated with ``@tenacity.retry``, whose
``retry_with(stop=...)`` builds a new decorated function around the same undecorated
one; ``agenerate`` builds an ``AsyncRetrying(...)`` on each call from the module-level
name ``mesa_llm.module_llm.AsyncRetrying``, which is swapped for a subclass that adds
the stop; the module-level ``completion``/``acompletion`` are wrapped to pass
``max_retries`` unless the caller gave one. Nothing is copied from mesa-llm's code, so
its own error mapping (``_build_rate_limit_error`` and the rest) still applies, and
`restore_mesa_llm_retries` puts back the very objects it replaced.

Calling either function imports ``mesa_llm.module_llm`` if it is not imported yet (and
so litellm, and mesa-llm's patch of Mesa's ``AgentSet``, as any use of mesa-llm does);
importing this module imports neither.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import threading
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MesaLLMRetryBound",
    "bound_mesa_llm_retries",
    "mesa_llm_retry_bound",
    "restore_mesa_llm_retries",
]


@dataclass(frozen=True, slots=True)
class MesaLLMRetryBound:
    """The bound in force: what `bound_mesa_llm_retries` was last called with.

    Attributes:
        attempts: tries per ``ModuleLLM.generate``/``agenerate`` call.
        sdk_retries: ``max_retries`` passed to litellm (the provider SDK's own retries
            per try), or ``None`` if litellm's default was left alone.
    """

    attempts: int
    sdk_retries: int | None


@dataclass(slots=True)
class _Originals:
    module: Any
    generate: Any
    async_retrying: Any
    completion: Any
    acompletion: Any


_lock = threading.Lock()
_originals: _Originals | None = None
_bound: MesaLLMRetryBound | None = None


def _module_llm() -> Any:
    try:
        return importlib.import_module("mesa_llm.module_llm")
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"bounding mesa-llm's retries needs mesa-llm installed ({exc})", name=exc.name
        ) from exc


def _check(module: Any) -> None:
    """Fail, naming what is missing, if this mesa-llm is not shaped like 0.3.x."""
    generate = module.ModuleLLM.__dict__.get("generate")
    checks = {
        "ModuleLLM.generate.retry_with (a tenacity-decorated method)": hasattr(
            generate, "retry_with"
        ),
        "mesa_llm.module_llm.AsyncRetrying": isinstance(
            getattr(module, "AsyncRetrying", None), type
        ),
        "mesa_llm.module_llm.completion": callable(getattr(module, "completion", None)),
        "mesa_llm.module_llm.acompletion": callable(getattr(module, "acompletion", None)),
    }
    missing = [name for name, ok in checks.items() if not ok]
    if missing:
        raise RuntimeError(
            "cannot bound mesa-llm's retries: this mesa-llm has no " + ", ".join(missing)
        )


def _with_max_retries(fn: Any, sdk_retries: int) -> Any:
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def acall(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("max_retries", sdk_retries)
            return await fn(*args, **kwargs)

        return acall

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("max_retries", sdk_retries)
        return fn(*args, **kwargs)

    return call


def bound_mesa_llm_retries(attempts: int = 1, *, sdk_retries: int | None = 0) -> MesaLLMRetryBound:
    """Make mesa-llm's ``ModuleLLM`` give up after ``attempts`` tries, process-wide.

    After this, ``ModuleLLM.generate`` and ``ModuleLLM.agenerate`` (of every instance,
    existing or new) try at most ``attempts`` times, still only on the exceptions
    mesa-llm retries and with its own backoff between tries, then raise the last
    exception unchanged (mesa-llm's ``reraise=True``). With ``sdk_retries`` (default 0)
    every litellm call they make gets ``max_retries=sdk_retries`` unless mesa-llm
    passed one, so the OpenAI client under litellm does not retry either: with the
    defaults, one call is one HTTP request. ``sdk_retries=None`` leaves litellm's
    default (2 SDK retries per try). Calls already running keep the policy they
    started with.

    Idempotent: calling it again replaces the bound (the originals are kept from the
    first call); `restore_mesa_llm_retries` undoes it. Thread-safe. Imports
    ``mesa_llm.module_llm`` if needed (see the module docstring).

    Returns:
        the `MesaLLMRetryBound` now in force.

    Raises:
        ValueError: ``attempts`` is not a positive integer, or ``sdk_retries`` is not
            ``None`` or a non-negative integer (checked before anything is changed).
        ModuleNotFoundError: mesa-llm is not installed.
        RuntimeError: this mesa-llm is not shaped like 0.3.x (the message says what
            is missing); nothing is changed.
    """
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ValueError(f"attempts must be a positive integer, not {attempts!r}")
    if sdk_retries is not None and (
        isinstance(sdk_retries, bool) or not isinstance(sdk_retries, int) or sdk_retries < 0
    ):
        raise ValueError(f"sdk_retries must be None or an integer >= 0, not {sdk_retries!r}")
    global _originals, _bound
    module = _module_llm()
    from tenacity import stop_after_attempt

    with _lock:
        if _originals is None:
            _check(module)
            _originals = _Originals(
                module=module,
                generate=module.ModuleLLM.__dict__["generate"],
                async_retrying=module.AsyncRetrying,
                completion=module.completion,
                acompletion=module.acompletion,
            )
        o = _originals
        stop = stop_after_attempt(attempts)
        base = o.async_retrying

        class BoundedAsyncRetrying(base):  # type: ignore[misc, valid-type]
            """mesa-llm's ``AsyncRetrying``, stopping after the bounded attempts."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                given = kwargs.get("stop")
                kwargs["stop"] = stop if given is None else given | stop
                super().__init__(*args, **kwargs)

        BoundedAsyncRetrying.__qualname__ = BoundedAsyncRetrying.__name__
        own_stop = o.generate.retry.stop
        module.ModuleLLM.generate = o.generate.retry_with(stop=own_stop | stop)
        module.AsyncRetrying = BoundedAsyncRetrying
        if sdk_retries is None:
            module.completion, module.acompletion = o.completion, o.acompletion
        else:
            module.completion = _with_max_retries(o.completion, sdk_retries)
            module.acompletion = _with_max_retries(o.acompletion, sdk_retries)
        _bound = MesaLLMRetryBound(attempts, sdk_retries)
        return _bound


def restore_mesa_llm_retries() -> MesaLLMRetryBound | None:
    """Undo `bound_mesa_llm_retries`: put back exactly the objects it replaced.

    ``ModuleLLM.generate``, ``mesa_llm.module_llm.AsyncRetrying``, ``completion`` and
    ``acompletion`` are again the very objects they were (mesa-llm's endless retry).
    Does nothing if no bound is in force. Thread-safe.

    Returns:
        the bound that was in force, or ``None``.
    """
    global _originals, _bound
    with _lock:
        if _originals is None:
            return None
        o = _originals
        o.module.ModuleLLM.generate = o.generate
        o.module.AsyncRetrying = o.async_retrying
        o.module.completion = o.completion
        o.module.acompletion = o.acompletion
        was, _originals, _bound = _bound, None, None
        return was


def mesa_llm_retry_bound() -> MesaLLMRetryBound | None:
    """The bound in force, or ``None`` (mesa-llm retries as it was written to)."""
    with _lock:
        return _bound
