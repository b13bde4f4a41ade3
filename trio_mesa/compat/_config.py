"""Compat's policy: process-wide defaults, scoped overrides, and the environment switch.

mesa-llm's functions take only ``agents``, so options cannot come as arguments. The
policy of a call is built, at call time, from (lowest first) `StepPolicy`'s defaults,
`configure`'s process-wide defaults, the innermost `policy` block active in the calling
context, and finally ``TRIO_MESA_STRICT=1``, which forces strict mode on.
"""

from __future__ import annotations

import contextvars
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from typing import Any, Literal

from trio_mesa import StepPolicy

POLICY_FIELDS = frozenset(f.name for f in fields(StepPolicy))

Mode = Literal["asyncio", "threading"]

# mesa-llm users step LLM agents, whose sync step() blocks on HTTP: worker threads by
# default, so those calls overlap (mesa-llm's step_agents_parallel ran them one after
# another). The core's own default stays "inline", Mesa's sequential semantics.
_defaults = StepPolicy(sync_mode="thread")
_defaults_lock = threading.Lock()
_scoped: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "trio_mesa_compat_policy", default=None
)
_mode: Mode = "asyncio"


def configure(**options: Any) -> StepPolicy:
    """Set process-wide defaults for every `trio_mesa.compat` call; return them.

    Options are `trio_mesa.StepPolicy` fields (``strict``, ``fail_fast``, ``timeout``,
    ``deadline``, ``max_concurrency``, ``limiter``, ``sync_mode``, ``max_threads``,
    ``abandon_threads``, ``hooks``, ...). Options not given keep their current value;
    ``configure()`` alone returns the current defaults. Validated before anything
    changes, exactly as `StepPolicy` validates them: what it refuses, this refuses.
    ``max_concurrency`` and ``limiter`` exclude each other: giving both is an error,
    and giving one replaces the other set by an earlier call.

    Raises:
        TypeError: for an unknown option name; TypeError/ValueError for a bad value.
    """
    global _defaults
    where = "trio_mesa.compat.configure()"
    _check(options, where)
    with _defaults_lock:
        if options:
            _defaults = _apply(_defaults, _layer({}, options), where)
        return _defaults


@contextmanager
def policy(**options: Any) -> Iterator[StepPolicy]:
    """Apply ``options`` to `trio_mesa.compat` calls made inside the ``with`` block.

    Scoped by ``contextvars``: nested blocks stack (inner wins; an inner
    ``max_concurrency`` replaces an outer ``limiter`` and the other way round), each
    asyncio task or thread sees the blocks it entered itself (tasks started inside a
    block inherit it), and leaving the block restores the outer policy even when it
    raises. Yields the effective policy. Options are as in `configure`, validated on
    entry.
    """
    where = "trio_mesa.compat.policy()"
    _check(options, where)
    merged = _layer(_scoped.get() or {}, options)
    effective = _resolve(merged, where)  # validate now, not at the first step
    token = _scoped.set(merged)
    try:
        yield effective
    finally:
        _scoped.reset(token)


def current_policy(**overrides: Any) -> StepPolicy:
    """The `StepPolicy` a compat call made here and now would use (``overrides`` on top)."""
    scoped = _scoped.get() or {}
    if overrides:
        scoped = _layer(scoped, overrides)
    return _resolve(scoped, "trio_mesa.compat")


def _resolve(scoped: dict[str, Any], where: str) -> StepPolicy:
    result = _apply(_defaults, scoped, where) if scoped else _defaults
    if not result.strict and os.environ.get("TRIO_MESA_STRICT", "").strip() == "1":
        result = result.replace(strict=True)
    return result


def _apply(base: StepPolicy, options: dict[str, Any], where: str) -> StepPolicy:
    try:
        return base.replace(**options)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{where}: {exc}") from None


def _layer(outer: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` over ``outer``: one layer's concurrency limit replaces the other's."""
    merged = {**outer, **options}
    if options.get("max_concurrency") is not None:
        merged["limiter"] = None
    elif options.get("limiter") is not None:
        merged["max_concurrency"] = None
    return merged


def _check(options: dict[str, Any], where: str) -> None:
    unknown = sorted(set(options) - POLICY_FIELDS)
    if unknown:
        raise TypeError(
            f"{where}: unknown trio_mesa.compat option(s) {', '.join(map(repr, unknown))}; "
            f"expected some of {', '.join(sorted(POLICY_FIELDS))}"
        )
    if options.get("max_concurrency") is not None and options.get("limiter") is not None:
        # The very check StepPolicy makes, with its message: one layer may not set both.
        _apply(StepPolicy(), options, where)


def get_mode() -> Mode:
    return _mode


def set_mode(mode: str) -> None:
    global _mode
    if mode not in ("asyncio", "threading"):
        raise ValueError("mode must be either 'asyncio' or 'threading'")
    _mode = mode  # type: ignore[assignment]
