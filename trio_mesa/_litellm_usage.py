"""The litellm callback that adds each call's tokens and cost to the agent that made it.

litellm calls a ``CustomLogger``'s ``log_pre_api_call`` in the caller's own context
(the agent's task or worker thread) before each request, and its success and failure
events later, from a logging task or thread of its own that runs in a copy of that
context: the agent's ledger (`trio_mesa._usage.current_ledger`) is there in all of them.
The pre-call hook marks the call pending in the ledger, the success event adds the
response's ``usage`` and litellm's ``response_cost`` (computed from litellm's cost map;
``None`` for a model it does not know) and clears it, a failure only clears it; the
step waits for pending calls before its report (`trio_mesa._scheduler`). litellm is
imported only by `track_litellm_usage`, or by a step once the user imported it.

Inside a step the request seam (`trio_mesa._seam`) is installed on litellm and takes
each call's usage from the response as it passes, so no event is waited for: there the
callback only counts the calls litellm starts (``log_pre_api_call``, in the agent's own
context), so that a call that bypassed the seam is reported loudly at the step's end.
The callback's own accounting remains for calls the seam does not see.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

from ._log import logger
from ._seam_context import current_seam
from ._text import describe_exception
from ._usage import LITELLM_CALLS, PENDING, add_call, current_ledger, ledger_lock, track_usage

_installed: Any = None  # our CustomLogger, once installed
_install_lock = threading.Lock()
_complained = False


def track_litellm_usage() -> None:
    """Attribute every litellm call's tokens and cost to the agent that made it.

    Adds one callback to ``litellm.callbacks`` (once: calling again does nothing). A
    step does this by itself when litellm is already imported when the step starts,
    so mesa-llm agents get `AgentOutcome.usage` with no change; call it yourself to
    install the callback earlier, or after something reset ``litellm.callbacks``.

    Cost is litellm's ``response_cost``, from its model cost map: set
    ``LITELLM_LOCAL_MODEL_COST_MAP=True`` before litellm is first imported so that map
    is the local copy (this function sets it, if unset, when it imports litellm
    itself); a model the map does not know reports its tokens and ``cost=None``. Calls
    made outside a trio-mesa step are not counted. If the callback itself fails, the
    agent's call is unaffected; the failure is logged once.

    Raises:
        ImportError: when litellm is not installed.
    """
    global _installed
    if "litellm" not in sys.modules:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm
    from litellm.integrations.custom_logger import CustomLogger

    track_usage()
    with _install_lock:
        if _installed is None:
            _installed = _make_logger(CustomLogger)
        if not any(cb is _installed for cb in litellm.callbacks):
            litellm.callbacks.append(_installed)


def install_if_litellm_imported() -> None:
    """`track_litellm_usage`, unless already installed (called at each step's start)."""
    litellm = sys.modules.get("litellm")
    callbacks = getattr(litellm, "callbacks", None)
    if _installed is not None and isinstance(callbacks, list) and _installed in callbacks:
        return
    try:
        track_litellm_usage()
    except Exception as exc:  # a half-imported or unusual litellm must not fail a step
        _complain(exc)


def _complain(exc: BaseException) -> None:
    global _complained
    if not _complained:
        _complained = True
        logger.error(
            "trio-mesa's litellm usage callback failed (%s); usage may be missing. "
            "Agents are unaffected. Logged once.",
            describe_exception(exc),
            exc_info=exc,
        )


def _call_id(kwargs: Any) -> Any:
    call_id = kwargs.get("litellm_call_id") if isinstance(kwargs, dict) else None
    return call_id if call_id is not None else id(kwargs)


def _tokens(response: Any) -> tuple[int, int]:
    usage = getattr(response, "usage", None)
    if usage is None and isinstance(response, dict):
        usage = response.get("usage")
    if usage is None:
        return 0, 0
    get = usage.get if isinstance(usage, dict) else lambda k: getattr(usage, k, 0)
    return int(get("prompt_tokens") or 0), int(get("completion_tokens") or 0)


def _started(kwargs: Any) -> None:
    ledger = current_ledger.get()
    if ledger is None:
        return
    seam = current_seam.get()
    if seam is not None and seam.litellm:  # the seam takes usage as the response passes
        with ledger_lock:
            ledger[LITELLM_CALLS] += 1
        return
    try:
        with ledger_lock:
            pending = ledger[PENDING]
            if pending is None:
                pending = ledger[PENDING] = set()
            pending.add(_call_id(kwargs))
    except Exception as exc:
        _complain(exc)


def _ended(kwargs: Any, response: Any, ok: bool) -> None:
    ledger = current_ledger.get()
    if ledger is None:
        return
    seam = current_seam.get()
    if seam is not None and seam.litellm:
        return
    try:
        call_id = _call_id(kwargs)
        if ok:
            prompt, completion = _tokens(response)
            cost = kwargs.get("response_cost") if isinstance(kwargs, dict) else None
            add_call(ledger, prompt, completion, None if cost is None else float(cost))
        with ledger_lock:
            pending = ledger[PENDING]
            if pending is not None:
                pending.discard(call_id)
    except Exception as exc:
        _complain(exc)


def _make_logger(base: type) -> Any:
    class TrioMesaUsage(base):  # type: ignore[misc, valid-type]
        """trio-mesa's usage attribution (see `trio_mesa.track_litellm_usage`)."""

        def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
            _started(kwargs)

        def log_success_event(
            self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
        ) -> None:
            _ended(kwargs, response_obj, True)

        async def async_log_success_event(
            self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
        ) -> None:
            _ended(kwargs, response_obj, True)

        def log_failure_event(
            self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
        ) -> None:
            _ended(kwargs, response_obj, False)

        async def async_log_failure_event(
            self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
        ) -> None:
            _ended(kwargs, response_obj, False)

        def __repr__(self) -> str:
            return "<trio_mesa litellm usage callback>"

    return TrioMesaUsage()


__all__ = ["install_if_litellm_imported", "track_litellm_usage"]
