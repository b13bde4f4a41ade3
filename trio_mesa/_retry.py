"""`Retry`: how often, after which failures, and how long to wait before trying a failed
agent again; with `is_transient` and `retry_after_of`, which read an exception the way
litellm and openai shape them. A `Retry` is a frozen value: it never sleeps and never
reads a clock, so the engine can use it from an asyncio task or a Trio task alike and
sleep with its own loop, in virtual time under ``trio.testing.MockClock``.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

import tenacity

from ._breaker import CircuitOpen
from ._checks import check_bool, check_count, check_seconds
from ._errors import AgentCancelled, AgentTimeout

__all__ = [
    "Retry",
    "RetryOn",
    "is_outage",
    "is_outage_status",
    "is_transient",
    "is_transient_status",
    "retry_after_from_headers",
    "retry_after_of",
]

type RetryOn = (
    type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
)

# HTTP statuses a provider answers when trying again later may work: request timeout,
# conflict (OpenAI's "concurrent request" answer), rate limit, and every server error.
_TRANSIENT_STATUS = frozenset({408, 409, 429})

# Class names, anywhere in the MRO, of the errors litellm and openai raise for failures
# that may pass on a later attempt. Names, not classes: trio_mesa does not import
# either library, and an agent may use any SDK that follows their naming. httpx's
# transport errors are here for agents that call an endpoint with httpx themselves.
_TRANSIENT_NAMES = frozenset(
    {
        "RateLimitError",
        "Timeout",  # litellm.Timeout (status_code 408, no response)
        "APITimeoutError",
        "APIConnectionError",  # litellm's has status_code 500, openai's none
        "InternalServerError",
        "ServiceUnavailableError",
        "TimeoutException",  # httpx
        "NetworkError",  # httpx: ConnectError, ReadError, WriteError, CloseError
        "RemoteProtocolError",  # httpx: the server dropped the connection mid-answer
    }
)

# Never transient, whatever the status code says: trying again sends the same request
# and gets the same answer. litellm's ContentPolicyViolationError and
# ContextWindowExceededError subclass BadRequestError (status 400); JSONDecodeError is
# a ValueError. These win over `_TRANSIENT_NAMES` and status codes.
_NEVER_NAMES = frozenset(
    {
        "ContentPolicyViolationError",
        "JSONDecodeError",
        "BadRequestError",
        "AuthenticationError",
        "PermissionDeniedError",
        "NotFoundError",
        "UnprocessableEntityError",
    }
)


# trio_mesa's own: a time limit, fail_fast, or an open circuit ended the attempt, not
# the provider. And ValueError, JSONDecodeError's base: the same input fails again.
_OWN_OR_VALUE = (AgentTimeout, AgentCancelled, CircuitOpen, ValueError)


def _status_code(exc: BaseException) -> int | None:
    code = _attr(exc, "status_code")
    if code is None:
        code = _attr(_attr(exc, "response"), "status_code")
    if isinstance(code, bool) or not isinstance(code, int):
        return None
    return code


def _attr(obj: object, name: str) -> object:
    # SDK exceptions compute some attributes lazily (litellm.Timeout.response raises);
    # reading one must never turn a classification into a new failure.
    if obj is None:
        return None
    try:
        return getattr(obj, name, None)
    except Exception:
        return None


def is_transient_status(status: int) -> bool:
    """Whether an HTTP response with this status may succeed when sent again: 408, 409,
    429 and every 5xx (the statuses `is_transient` reads off an exception)."""
    return status in _TRANSIENT_STATUS or 500 <= status <= 599


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure that a later attempt of the same call may not repeat.

    Duck-typed, the way litellm and openai shape their exceptions (neither is imported):

    * Never transient, checked first so they win over everything below: anything that
      is not an `Exception` (``KeyboardInterrupt``, ``SystemExit``, cancellation);
      trio_mesa's own `AgentTimeout` (the per-agent timeout or the step deadline ran
      out: the time limit, not the provider, ended it), `AgentCancelled` and
      `CircuitOpen`; any ``ValueError`` (this includes ``json.JSONDecodeError``: a
      malformed answer, a bug, or a validation error is not cured by asking again);
      and any class in the MRO named ``ContentPolicyViolationError``,
      ``JSONDecodeError``, ``BadRequestError``, ``AuthenticationError``,
      ``PermissionDeniedError``, ``NotFoundError`` or ``UnprocessableEntityError``.
    * Transient: a ``status_code`` (on the exception, else on ``exc.response``) of 408,
      409, 429 or 500-599; a class in the MRO named ``RateLimitError``, ``Timeout``,
      ``APITimeoutError``, ``APIConnectionError``, ``InternalServerError`` or
      ``ServiceUnavailableError`` (or httpx's ``TimeoutException``, ``NetworkError``,
      ``RemoteProtocolError``); the builtin ``ConnectionError`` family (reset, refused,
      broken pipe) and ``TimeoutError`` (which includes ``asyncio.TimeoutError`` and
      ``socket.timeout``): a network that failed once may work the next time.
    * An exception group (an agent's own nursery wraps what its tasks raised) is
      transient when it has leaves and every one of them is.
    * Anything else is not transient.
    """
    if not isinstance(exc, Exception):
        return False
    if isinstance(exc, BaseExceptionGroup):
        leaves = _leaves(exc)
        return bool(leaves) and all(is_transient(leaf) for leaf in leaves)
    if isinstance(exc, _OWN_OR_VALUE) or _named(exc, _NEVER_NAMES):
        return False
    code = _status_code(exc)
    if code is not None and is_transient_status(code):
        return True
    if _named(exc, _TRANSIENT_NAMES):
        return True
    return isinstance(exc, (ConnectionError, TimeoutError))


# The transient failures that say the provider (or the way to it) is down or failing,
# rather than "slow down": a 429 is the rate limit's business (a provider that answers
# 429 is up, and counting its 429s is how a breaker loses the agents retries save).
_OUTAGE_NAMES = _TRANSIENT_NAMES - {"RateLimitError"}


def is_outage_status(status: int) -> bool:
    """Whether an HTTP status says the provider is down or failing: 408 (request
    timeout) or any 5xx. Not 429 (a rate limit: the provider is up, just busy), nor
    409 or another 4xx (the request, not the provider).

    The status-code half of `is_outage`, for a caller that sees a response, not an
    exception.
    """
    return status == 408 or 500 <= status <= 599


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the provider is down: what a `CircuitBreaker` counts.

    The one place the breaker's question is answered. Duck-typed like `is_transient`,
    and a subset of it:

    * Never, checked first: what `is_transient` never retries (anything that is not an
      `Exception`, trio_mesa's own `AgentTimeout`, `AgentCancelled`, `CircuitOpen`, a
      ``ValueError``, a ``BadRequestError`` and its kind).
    * A ``status_code`` (on the exception, else on ``exc.response``) decides when
      there is one: `is_outage_status` (408 or 5xx; a 429 is not an outage).
    * Otherwise: a class in the MRO named ``Timeout``, ``APITimeoutError``,
      ``APIConnectionError``, ``InternalServerError``, ``ServiceUnavailableError`` (or
      httpx's ``TimeoutException``, ``NetworkError``, ``RemoteProtocolError``); the
      builtin ``ConnectionError`` family and ``TimeoutError``. A ``RateLimitError``
      without a status code is not an outage.
    * An exception group is an outage when it has leaves and every one of them is.

    trio_mesa's own time limit is not a verdict on the provider: an attempt it cuts
    short is never counted (a slow agent is not a down provider); a client's request
    timeout (litellm's ``Timeout``, openai's ``APITimeoutError``) is.
    """
    if not isinstance(exc, Exception):
        return False
    if isinstance(exc, BaseExceptionGroup):
        leaves = _leaves(exc)
        return bool(leaves) and all(is_outage(leaf) for leaf in leaves)
    if isinstance(exc, _OWN_OR_VALUE) or _named(exc, _NEVER_NAMES):
        return False
    code = _status_code(exc)
    if code is not None:
        return is_outage_status(code)
    if _named(exc, _OUTAGE_NAMES):
        return True
    return isinstance(exc, (ConnectionError, TimeoutError))


def _named(exc: BaseException, names: frozenset[str]) -> bool:
    return any(cls.__name__ in names for cls in type(exc).__mro__)


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in group.exceptions:
        if isinstance(e, BaseExceptionGroup):
            out.extend(_leaves(e))
        else:
            out.append(e)
    return out


def retry_after_of(exc: BaseException) -> float | None:
    """The seconds ``exc`` says to wait before trying again, or ``None`` if it says nothing.

    Looked up in this order, the first one present wins:

    1. a ``retry_after`` attribute on the exception: a number of seconds;
    2. on the headers of ``exc.response`` (then, as litellm's ``Timeout`` carries them,
       on ``exc.headers``): ``retry-after-ms`` (milliseconds; OpenAI sends it and the
       openai SDK prefers it), then ``Retry-After``, either seconds (``"2"``,
       ``"1.5"``) or an HTTP-date, turned into seconds from now against ``time.time()``.

    Header names are matched case-insensitively. A value in the past or negative gives
    ``0.0``; a value that is not a number or a date (or is NaN or infinite) is ignored.
    For an exception group, the longest wait any leaf asks for.
    """
    if isinstance(exc, BaseExceptionGroup):
        waits = [w for w in map(retry_after_of, _leaves(exc)) if w is not None]
        return max(waits) if waits else None
    value = _seconds(_attr(exc, "retry_after"))
    if value is not None:
        return value
    for headers in (_attr(_attr(exc, "response"), "headers"), _attr(exc, "headers")):
        value = retry_after_from_headers(headers)
        if value is not None:
            return value
    return None


def retry_after_from_headers(headers: object) -> float | None:
    """The seconds a response's headers ask to wait, or ``None``: ``retry-after-ms``
    (milliseconds) first, then ``Retry-After`` (seconds or an HTTP-date, against
    ``time.time()``); names matched case-insensitively, past or negative waits give
    ``0.0``, anything unreadable (or ``headers`` that are not a mapping) ``None``.
    The one place trio-mesa parses these headers (`retry_after_of` reads them here)."""
    if not isinstance(headers, Mapping):  # httpx.Headers is a Mapping
        return None
    ms = _seconds(_header(headers, "retry-after-ms"))
    if ms is not None:
        return ms / 1000.0
    raw = _header(headers, "retry-after")
    value = _seconds(raw)
    if value is None and isinstance(raw, str):
        value = _http_date_seconds(raw)
    return value


def _header(headers: Mapping[object, object], name: str) -> object:
    try:
        value = headers.get(name)  # case-insensitive on httpx.Headers
    except Exception:
        value = None
    if value is None:
        for key, v in headers.items():
            if isinstance(key, str) and key.lower() == name:
                return v
    return value


def _seconds(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return max(0.0, float(value))


def _http_date_seconds(raw: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _AttemptState:
    __slots__ = ("attempt_number",)

    def __init__(self, attempt_number: int) -> None:
        self.attempt_number = attempt_number


@dataclass(frozen=True, slots=True)
class Retry:
    """How to retry an agent's failed call: a frozen value, validated on construction.

    A retry is another attempt of the same agent's call, in its own task, after a
    failure that `should_retry` accepts; an agent that succeeded is never called again.
    `Retry` only answers questions (whether to retry, how long to wait); the engine
    sleeps, so the wait is cancellable and runs on the engine's clock.

    Attributes:
        attempts: total tries, the first included (``1`` = never retry).
        on: which failures are worth another attempt. ``None`` (default) uses
            `is_transient`; an `Exception` subclass or a tuple of them retries
            instances of those; a callable ``(exc) -> bool`` decides itself (an
            exception it raises propagates from `should_retry`). Whatever ``on`` says,
            an exception that is not an `Exception` (``KeyboardInterrupt``,
            cancellation) is never retried.
        initial: the backoff before the second attempt, in seconds; it doubles for each
            attempt after that.
        max_delay: the backoff never exceeds this many seconds.
        jitter: full jitter: wait a uniformly random time between 0 and the backoff,
            so agents that failed together do not come back together.
        honor_retry_after: a wait the failure asks for (`retry_after_of`: a
            ``retry_after`` attribute, a ``Retry-After`` or ``retry-after-ms`` header)
            replaces the backoff, even when shorter, and is not jittered.
        max_retry_after: the longest such wait to honour, or ``None`` (default) for no
            bound of its own: the per-agent timeout and the step deadline already bound
            every wait. A failure asking for longer is not retried at all (`should_retry`
            is false): trying again sooner than the provider said spends an attempt and
            quota on an answer known in advance, which is what the openai SDK and
            litellm do when they fall back to their backoff.

    Raises:
        TypeError: a field has the wrong type (the message names the field and value).
        ValueError: a field is out of range: ``attempts < 1``; a delay negative, NaN or
            infinite; ``initial > max_delay``; an empty tuple for ``on``.
    """

    attempts: int = 3
    on: RetryOn | None = None
    initial: float = 1.0
    max_delay: float = 60.0
    jitter: bool = True
    honor_retry_after: bool = True
    max_retry_after: float | None = None

    def __post_init__(self) -> None:
        check_count("attempts", self.attempts)
        _check_on(self.on)
        initial = check_seconds("initial", self.initial)
        max_delay = check_seconds("max_delay", self.max_delay)
        if initial > max_delay:
            raise ValueError(
                f"initial must not exceed max_delay, not initial={self.initial!r} "
                f"with max_delay={self.max_delay!r}"
            )
        for name in ("jitter", "honor_retry_after"):
            check_bool(name, getattr(self, name))
        if self.max_retry_after is not None:
            check_seconds("max_retry_after", self.max_retry_after)

    def should_retry(self, exc: BaseException) -> bool:
        """Whether the failure ``exc`` is worth another attempt, by ``on``.

        It does not count attempts: the engine retries when this is true and the
        attempt that failed was not the last (``attempt < attempts``). False for any
        `BaseException` that is not an `Exception`, and, with ``honor_retry_after``
        and a ``max_retry_after``, for a failure that asks to wait longer than that.
        """
        if not isinstance(exc, Exception):
            return False
        if self.on is None:
            wanted = is_transient(exc)
        elif isinstance(self.on, (type, tuple)):
            wanted = isinstance(exc, self.on)
        else:
            wanted = bool(self.on(exc))
        if wanted and self.honor_retry_after and self.max_retry_after is not None:
            asked = retry_after_of(exc)
            wanted = asked is None or asked <= self.max_retry_after
        return wanted

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the failure of attempt number ``attempt`` (1-based),
        ignoring any wait the failure asks for: ``initial * 2**(attempt - 1)``, at most
        ``max_delay``, and with ``jitter`` a uniform draw from ``[0, that]``.

        The arithmetic is tenacity's ``wait_exponential`` and, for the jitter,
        ``wait_random_exponential`` (AWS's "full jitter"). stamina, the other candidate,
        adds its jitter on top of the backoff (``+ uniform(0, wait_jitter)``) instead:
        that keeps agents that failed together close together.

        ``rng``: draw the jitter from it (a seeded ``random.Random`` makes a run
        reproducible); by default tenacity draws from the ``random`` module.

        Raises:
            TypeError, ValueError: ``attempt`` is not an int ``>= 1``.
        """
        check_count("attempt", attempt)
        # tenacity's strategies read only `attempt_number` from their RetryCallState.
        state = cast(tenacity.RetryCallState, _AttemptState(attempt))
        if self.jitter and rng is None:
            wait = tenacity.wait_random_exponential(multiplier=self.initial, max=self.max_delay)
            return float(wait(state))
        cap = float(tenacity.wait_exponential(multiplier=self.initial, max=self.max_delay)(state))
        # With an rng, the one draw wait_random_exponential makes, taken from rng instead.
        return rng.uniform(0.0, cap) if self.jitter and rng is not None else cap

    def delay(self, attempt: int, exc: BaseException, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt number ``attempt + 1``, given that attempt
        number ``attempt`` (1-based) failed with ``exc``.

        With ``honor_retry_after`` and a wait in ``exc`` (`retry_after_of`), that wait,
        as is; otherwise `backoff` ``(attempt, rng)``. Never negative. It does not ask
        whether to retry (`should_retry`) nor whether attempts remain.

        Raises:
            TypeError, ValueError: ``attempt`` is not an int ``>= 1``.
        """
        check_count("attempt", attempt)
        if self.honor_retry_after:
            asked = retry_after_of(exc)
            if asked is not None:
                return asked
        return self.backoff(attempt, rng)


def _check_on(on: object) -> None:
    if on is None:
        return
    if isinstance(on, tuple):
        if not on:
            raise ValueError("on must name at least one exception class, not ()")
        for cls in on:
            _check_exception_class(cls, on)
        return
    if isinstance(on, type):
        _check_exception_class(on, on)
        return
    if not callable(on):
        raise TypeError(
            "on must be an Exception subclass, a tuple of them, a predicate "
            f"(exc) -> bool or None, not {on!r}"
        )


def _check_exception_class(cls: object, on: object) -> None:
    if not isinstance(cls, type) or not issubclass(cls, BaseException):
        raise TypeError(f"on must hold exception classes, not {cls!r} (on={on!r})")
    if not issubclass(cls, Exception):
        # KeyboardInterrupt, SystemExit, trio.Cancelled: retrying them would swallow
        # an interrupt or a cancellation.
        raise ValueError(
            f"on must hold Exception subclasses, not {cls!r} (a BaseException that is "
            f"not an Exception is never retried; on={on!r})"
        )
