"""The request seam: what one step does to every LLM request its agents make.

Every agent runs in its own task with its own usage ledger (`trio_mesa._usage`), which
names the agent; a step sets `current_seam` (the step's `Seam`: its cassette, its
request retry, its count of unattributed requests) in its own context, which every
agent task and worker thread copies. The httpx transports of `trio_mesa._transport`
read both for each request, so they know which agent sends it, that agent's call
number, and what to do with it: name the agent in an ``X-Agent-Id`` header, answer
from or write to the cassette, pass a request-mode `RateLimit` (`trio_mesa._gate`),
retry a transient failure, take the usage from the response.

`step_seam` is the step's side of it: it installs the transports on litellm
(``litellm.aclient_session`` / ``litellm.client_session``, which litellm's
OpenAI-compatible handlers use when set) for the step's duration and restores the
previous values after; while a ``request_retry`` is set it bounds mesa-llm's own
retry to one try; at the end it warns, loudly, when litellm calls of the step did not
pass through the seam (a provider whose handler does not use those sessions), since
those were neither recorded, replayed, retried nor counted. httpx is imported only
when litellm is, or by `trio_mesa.async_http_client`.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._log import logger
from ._recording import current_recording
from ._seam_context import Seam, current_seam
from ._usage import AGENT, LITELLM_CALLS, REQUESTS, track_usage


def _request_limit(policy: Any) -> Any:
    limit = policy.rate_limit
    return limit if limit is not None and limit.per_request else None


def prepare_step(policy: Any) -> None:
    """Before a step's recorder is made: turn usage ledgers on when the seam will need
    the agents' names (a cassette, a request retry or a request rate limit in force)."""
    if (
        policy.request_retry is not None
        or _request_limit(policy) is not None
        or current_recording.get() is not None
    ):
        track_usage()


@contextmanager
def step_seam(policy: Any, recorder: Any, seed: str = "") -> Iterator[Seam]:
    """The seam for one step, installed for its duration (see the module docstring)."""
    seam = Seam(current_recording.get(), policy.request_retry, seed, _request_limit(policy))
    token = current_seam.set(seam)
    recorder.seam = seam
    installed = bounded = False
    try:
        if "litellm" in sys.modules:
            install_on_litellm()
            installed = seam.litellm = True
        if seam.retry is not None:
            bounded = _bound_mesa_llm()
        yield seam
    finally:
        current_seam.reset(token)
        if installed:
            uninstall_from_litellm()
        if bounded:
            _unbound_mesa_llm()
        if installed and recorder.ledgers is not None:
            warn_bypass(recorder.ledgers)


# -- the openai SDK ------------------------------------------------------------------------


def async_http_client(**kwargs: Any) -> Any:
    """An ``httpx.AsyncClient`` whose requests pass through trio-mesa's request seam.

    For the openai SDK: ``openai.AsyncOpenAI(http_client=trio_mesa.async_http_client())``.
    Inside a trio-mesa step, each agent's request then carries an ``X-Agent-Id``
    header, is recorded or replayed by the cassette in use (`use_cassette`), retried by
    the step's ``request_retry``, and its usage counted in the agent's outcome; outside
    any agent it passes through untouched. litellm needs none of this: a step installs
    the seam on litellm by itself. ``kwargs`` go to ``httpx.AsyncClient`` (timeouts,
    limits, headers; not ``transport``). One client serves any number of event loops
    (a real transport is made per loop). Needs httpx (which the openai SDK depends on).
    """
    from ._transport import async_http_client as make

    track_usage()  # the seam learns the agent from its usage ledger
    return make(**kwargs)


def http_client(**kwargs: Any) -> Any:
    """The sync twin of `async_http_client`, an ``httpx.Client``:
    ``openai.OpenAI(http_client=trio_mesa.http_client())`` for sync agents (inline or
    in worker threads). In a worker thread (``sync_mode="thread"``) a request retry's
    wait and a rate limit's wait happen on the Trio thread, in the agent's task, so the
    agent's timeout and the step deadline cut them (the agent ends ``TIMED_OUT``); an
    inline agent's waits block the Trio thread, as its call does."""
    from ._transport import http_client as make

    track_usage()
    return make(**kwargs)


# -- litellm -------------------------------------------------------------------------------

_lock = threading.Lock()
_depth = 0
_saved: tuple[Any, Any] = (None, None)


def install_on_litellm() -> None:
    """Make litellm's OpenAI-compatible handlers send through the seam (nested calls and
    concurrent steps count: the first installs, the last one out restores).

    When ``litellm.aclient_session``/``client_session`` is unset, trio-mesa's own
    clients (`trio_mesa._transport`) are put there; when the user set one, its
    transport is wrapped in place, once, so its own settings stay. Cached OpenAI SDK
    clients that litellm built around another http client are evicted from litellm's
    client cache (it keys them by api_base and key, not by http client, so one built
    before the step would bypass the seam); litellm rebuilds them on their next call.
    """
    global _depth, _saved
    from ._transport import seamed_async_client, seamed_client

    litellm: Any = sys.modules["litellm"]
    with _lock:
        _depth += 1
        if _depth > 1:
            return
        _saved = (litellm.aclient_session, litellm.client_session)
        litellm.aclient_session = seamed_async_client(litellm.aclient_session)
        litellm.client_session = seamed_client(litellm.client_session)
        _evict_other_clients(litellm)


def uninstall_from_litellm() -> None:
    """Undo one `install_on_litellm`; the last one puts back the saved sessions."""
    global _depth
    litellm: Any = sys.modules.get("litellm")
    with _lock:
        _depth -= 1
        if _depth or litellm is None:
            return
        # SDK clients litellm cached around our clients stay cached: outside a step our
        # transport passes every request through untouched, and the next step needs no
        # eviction.
        litellm.aclient_session, litellm.client_session = _saved


def _evict_other_clients(litellm: Any) -> None:
    cache: Any = getattr(litellm, "in_memory_llm_clients_cache", None)
    entries = getattr(cache, "cache_dict", None)
    if not isinstance(entries, dict):
        return
    ours = (litellm.aclient_session, litellm.client_session)
    for key, value in list(entries.items()):
        http = getattr(value, "_client", None)  # an openai SDK client's http client
        if http is not None and hasattr(http, "send") and not any(http is o for o in ours):
            try:
                cache.delete_cache(key)
            except Exception:  # a cache of another shape: leave it, the warning will tell
                entries.pop(key, None)


# -- mesa-llm ------------------------------------------------------------------------------

_bounds = 0


def _bound_mesa_llm() -> bool:
    global _bounds
    if "mesa_llm.module_llm" not in sys.modules:
        return False
    from .compat._mesa_llm_retries import bound_mesa_llm_retries, mesa_llm_retry_bound

    with _lock:
        if _bounds == 0 and mesa_llm_retry_bound() is not None:
            return False  # the user's own bound: leave it
        _bounds += 1
        if _bounds == 1:
            bound_mesa_llm_retries(1, sdk_retries=0)
    return True


def _unbound_mesa_llm() -> None:
    global _bounds
    from .compat._mesa_llm_retries import restore_mesa_llm_retries

    with _lock:
        _bounds -= 1
        if _bounds == 0:
            restore_mesa_llm_retries()


def warn_bypass(ledgers: list[Any]) -> None:
    """Warn when agents' litellm calls did not reach the seam (made fewer requests than
    litellm started calls): those calls were not recorded, replayed, retried or
    counted in the report's usage."""
    missed = [
        (ledger[AGENT], ledger[LITELLM_CALLS] - ledger[REQUESTS])
        for ledger in ledgers
        if ledger is not None and ledger[LITELLM_CALLS] > ledger[REQUESTS]
    ]
    if missed:
        shown = ", ".join(f"agent {a} ({n})" for a, n in missed[:10])
        more = f" and {len(missed) - 10} more agents" if len(missed) > 10 else ""
        logger.warning(
            "%d litellm call(s) of this step did not pass through trio-mesa's request seam "
            "(%s%s): their provider's handler does not use litellm.aclient_session / "
            "client_session (the seam reaches litellm's OpenAI-compatible providers, and "
            "openai SDK clients made with http_client=trio_mesa.async_http_client()). "
            "Those calls were not recorded or replayed, not retried by request_retry, "
            "and their usage is missing from the report.",
            sum(n for _, n in missed),
            shown,
            more,
        )


__all__ = [
    "Seam",
    "async_http_client",
    "current_seam",
    "http_client",
    "prepare_step",
    "step_seam",
]
