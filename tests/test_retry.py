"""`Retry`, `is_transient` and `retry_after_of`: validation, the backoff (tenacity's, checked
against the formula), and the classification of litellm's and openai's real exceptions."""

from __future__ import annotations

import email.utils
import json
import math
import random
import time

import httpx
import litellm
import openai
import pytest
import tenacity
import trio
from hypothesis import given
from hypothesis import strategies as st

from trio_mesa._breaker import CircuitOpen
from trio_mesa._errors import AgentCancelled, AgentTimeout
from trio_mesa._retry import Retry, is_outage, is_outage_status, is_transient, retry_after_of

try:  # openai's own exceptions carry an httpx2 response in this environment
    import httpx2 as openai_httpx
except ImportError:  # pragma: no cover - openai releases built on plain httpx
    openai_httpx = httpx  # type: ignore[no-redef]

_REQ = httpx.Request("POST", "http://x")
_KW = {"message": "m", "llm_provider": "openai", "model": "gpt-x"}


def _resp(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers, request=_REQ)


def _openai_resp(status: int, **headers: str) -> object:
    req = openai_httpx.Request("POST", "http://x")
    return openai_httpx.Response(status, headers=headers, request=req)


class Shaped(Exception):
    """An SDK-agnostic exception with the attributes litellm/openai put on theirs."""

    def __init__(self, status_code: object = None, response: object = None) -> None:
        super().__init__("shaped")
        if status_code is not None:
            self.status_code = status_code
        if response is not None:
            self.response = response


# -- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"attempts": 0}, ValueError, ["attempts", "0"]),
        ({"attempts": -3}, ValueError, ["attempts", "-3"]),
        ({"attempts": 2.0}, TypeError, ["attempts", "2.0"]),
        ({"attempts": True}, TypeError, ["attempts", "True"]),
        ({"initial": -1.0}, ValueError, ["initial", "-1.0"]),
        ({"initial": math.nan}, ValueError, ["initial", "nan"]),
        ({"max_delay": math.inf}, ValueError, ["max_delay", "inf"]),
        ({"max_delay": -0.5, "initial": 0}, ValueError, ["max_delay", "-0.5"]),
        ({"initial": "1"}, TypeError, ["initial", "'1'"]),
        ({"initial": True}, TypeError, ["initial", "True"]),
        ({"initial": 5, "max_delay": 2}, ValueError, ["initial=5", "max_delay=2"]),
        ({"max_retry_after": -1}, ValueError, ["max_retry_after", "-1"]),
        ({"jitter": 1}, TypeError, ["jitter", "1"]),
        ({"honor_retry_after": None}, TypeError, ["honor_retry_after", "None"]),
        ({"on": int}, TypeError, ["on", "int"]),
        ({"on": (ValueError, "x")}, TypeError, ["on", "'x'"]),
        ({"on": KeyboardInterrupt}, ValueError, ["on", "KeyboardInterrupt"]),
        ({"on": (OSError, SystemExit)}, ValueError, ["on", "SystemExit"]),
        ({"on": BaseException}, ValueError, ["on", "BaseException"]),
        ({"on": trio.Cancelled}, ValueError, ["on", "Cancelled"]),
        ({"on": ()}, ValueError, ["on", "()"]),
        ({"on": [OSError]}, TypeError, ["on", "[<class 'OSError'>]"]),
        ({"on": 3}, TypeError, ["on", "3"]),
    ],
)
def test_bad_input_names_field_and_value(
    kwargs: dict[str, object], error: type[Exception], words: list[str]
) -> None:
    with pytest.raises(error) as info:
        Retry(**kwargs)  # type: ignore[arg-type]
    for word in words:
        assert word in str(info.value)


def test_valid_values_accepted_and_frozen() -> None:
    r = Retry(attempts=1, on=(OSError, RuntimeError), initial=0, max_delay=0, max_retry_after=0)
    assert r.attempts == 1
    assert Retry(on=lambda e: True).attempts == 3
    with pytest.raises(AttributeError):
        r.attempts = 5  # type: ignore[misc]
    assert Retry() == Retry()
    assert hash(Retry(on=OSError)) == hash(Retry(on=OSError))


@given(st.one_of(st.floats(allow_nan=True), st.integers(), st.booleans()))
def test_initial_accepts_exactly_finite_non_negative_numbers(value: object) -> None:
    ok = (
        not isinstance(value, bool)
        and math.isfinite(value)  # type: ignore[arg-type]
        and 0 <= value <= 60.0  # type: ignore[operator]
    )
    if ok:
        assert Retry(initial=value).initial == value  # type: ignore[arg-type]
    else:
        with pytest.raises((TypeError, ValueError), match="initial"):
            Retry(initial=value)  # type: ignore[arg-type]


# -- backoff ---------------------------------------------------------------------------


def test_backoff_without_jitter_doubles_up_to_max_delay() -> None:
    r = Retry(initial=0.5, max_delay=5, jitter=False)
    assert [r.backoff(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert r.delay(3, RuntimeError("x")) == 2.0
    assert r.backoff(10_000) == 5.0  # no overflow far out


def test_backoff_is_tenacitys_arithmetic() -> None:
    # The same numbers tenacity's own Retrying would wait, given a real RetryCallState.
    rs = tenacity.RetryCallState(tenacity.Retrying(), fn=None, args=(), kwargs={})
    r = Retry(initial=0.25, max_delay=7, jitter=False)
    for n in range(1, 12):
        rs.attempt_number = n
        assert r.backoff(n) == tenacity.wait_exponential(multiplier=0.25, max=7)(rs)


def test_full_jitter_draws_what_tenacity_draws() -> None:
    # Without an rng, tenacity's wait_random_exponential draws from the random module;
    # with one, the same single uniform draw comes from it: the same numbers per seed.
    r = Retry(initial=1, max_delay=60)
    random.seed(1234)
    from_tenacity = [r.backoff(n) for n in range(1, 10)]
    reference = random.Random(1234)
    assert from_tenacity == [reference.uniform(0, min(60, 2 ** (n - 1))) for n in range(1, 10)]
    rng = random.Random(1234)
    assert [r.backoff(n, rng) for n in range(1, 10)] == from_tenacity
    rng1, rng2 = random.Random(7), random.Random(7)
    assert [r.delay(2, OSError(), rng1) for _ in range(5)] == [
        rng2.uniform(0, 2.0) for _ in range(5)
    ]


@given(
    attempt=st.integers(1, 200),
    initial=st.floats(0, 100),
    extra=st.floats(0, 1000),
    seed=st.integers(0, 2**32),
)
def test_delays_never_negative_and_jitter_within_cap(
    attempt: int, initial: float, extra: float, seed: int
) -> None:
    max_delay = initial + extra
    cap = Retry(initial=initial, max_delay=max_delay, jitter=False).backoff(attempt)
    assert math.isclose(cap, min(max_delay, initial * 2.0 ** (attempt - 1)), rel_tol=1e-12)
    assert 0 <= cap <= max_delay
    jittered = Retry(initial=initial, max_delay=max_delay)
    assert 0 <= jittered.backoff(attempt, random.Random(seed)) <= cap
    assert 0 <= jittered.delay(attempt, RuntimeError()) <= cap


@pytest.mark.parametrize("attempt", [0, -1, 1.5, True, None])
def test_attempt_number_validated(attempt: object) -> None:
    with pytest.raises((TypeError, ValueError), match="attempt"):
        Retry().delay(attempt, RuntimeError())  # type: ignore[arg-type]


# -- Retry-After -----------------------------------------------------------------------


def test_retry_after_wins_over_backoff_and_is_not_jittered() -> None:
    r = Retry(initial=10, max_delay=10)
    exc = Shaped(429, _resp(429, **{"retry-after": "0.5"}))
    assert r.delay(1, exc) == 0.5  # shorter than the backoff, still wins
    exc.retry_after = 42  # type: ignore[attr-defined]
    assert r.delay(5, exc) == 42  # the attribute before the header; above max_delay
    assert Retry(honor_retry_after=False, jitter=False, initial=3, max_delay=3).delay(1, exc) == 3


def test_max_retry_after_refuses_longer_waits() -> None:
    r = Retry(max_retry_after=30)
    short, long = Shaped(429), Shaped(429)
    short.retry_after, long.retry_after = 30, 31  # type: ignore[attr-defined]
    assert r.should_retry(short)
    assert not r.should_retry(long)
    assert Retry().should_retry(long)
    assert Retry(max_retry_after=30, honor_retry_after=False).should_retry(long)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "2"}, 2.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"RETRY-AFTER": " 7 "}, 7.0),
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({"x-other": "1"}, None),
        ({}, None),
    ],
)
def test_retry_after_header(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_of(Shaped(response=_resp(429, **headers))) == expected
    # A plain dict (not case-insensitive like httpx.Headers) on exc.response.headers.
    plain = Shaped(response=type("R", (), {"headers": dict(headers)})())
    assert retry_after_of(plain) == expected


def test_retry_after_http_date() -> None:
    future = email.utils.formatdate(time.time() + 3600, usegmt=True)
    got = retry_after_of(Shaped(response=_resp(429, **{"retry-after": future})))
    assert got is not None and 3500 < got <= 3600
    past = email.utils.formatdate(time.time() - 3600, usegmt=True)
    assert retry_after_of(Shaped(response=_resp(429, **{"retry-after": past}))) == 0.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [(2, 2.0), (0.25, 0.25), (-1, 0.0), ("3", 3.0), (True, None), (math.nan, None), ("x", None)],
)
def test_retry_after_attribute(value: object, expected: float | None) -> None:
    exc = Shaped()
    exc.retry_after = value  # type: ignore[attr-defined]
    assert retry_after_of(exc) == expected


def test_retry_after_of_group_is_the_longest_wait() -> None:
    a, b = Shaped(429), Shaped(429)
    a.retry_after, b.retry_after = 1, 4  # type: ignore[attr-defined]
    assert retry_after_of(ExceptionGroup("g", [a, ExceptionGroup("h", [b, OSError()])])) == 4
    assert retry_after_of(ExceptionGroup("g", [OSError()])) is None


def test_retry_after_survives_hostile_attributes() -> None:
    class Hostile(Exception):
        @property
        def response(self) -> object:
            raise RuntimeError("lazy attribute blew up")

    assert retry_after_of(Hostile()) is None
    assert not is_transient(Hostile())


# -- is_transient: duck typing ------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 599])
def test_transient_statuses(status: int) -> None:
    assert is_transient(Shaped(status_code=status))
    assert is_transient(Shaped(response=_resp(status)))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 499, 600, "429", True])
def test_other_statuses_not_transient(status: object) -> None:
    assert not is_transient(Shaped(status_code=status))


@pytest.mark.parametrize(
    "name",
    [
        "RateLimitError",
        "Timeout",
        "APITimeoutError",
        "APIConnectionError",
        "InternalServerError",
        "ServiceUnavailableError",
    ],
)
def test_transient_names_anywhere_in_mro(name: str) -> None:
    base = type(name, (Exception,), {})
    sub = type("Wrapped", (base,), {})
    assert is_transient(base("x"))
    assert is_transient(sub("x"))


@pytest.mark.parametrize(
    "name",
    ["ContentPolicyViolationError", "JSONDecodeError", "BadRequestError", "AuthenticationError"],
)
def test_exclusions_win_over_status_and_transient_names(name: str) -> None:
    excluded = type(name, (Exception,), {})
    # Even with a transient status and a transient name further up the MRO.
    both = type("Odd", (excluded, type("RateLimitError", (Exception,), {})), {})
    exc = both("x")
    exc.status_code = 429  # type: ignore[attr-defined]
    assert not is_transient(exc)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectionResetError(), True),
        (ConnectionRefusedError(), True),
        (BrokenPipeError(), True),
        (TimeoutError(), True),
        (OSError("disk"), False),
        (ValueError("bad"), False),
        (json.JSONDecodeError("bad", "doc", 0), False),
        (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "x"), False),
        (RuntimeError("bug"), False),
        (KeyError("k"), False),
        (AgentTimeout("t", reason="timeout", limit=1.0), False),
        (AgentCancelled("c"), False),
        (CircuitOpen(1.0, 31.0, "5 transient failures"), False),
        (KeyboardInterrupt(), False),
        (SystemExit(1), False),
        (httpx.ConnectTimeout("x"), True),
        (httpx.ReadError("x"), True),
        (httpx.RemoteProtocolError("x"), True),
        (httpx.UnsupportedProtocol("x"), False),
        (ExceptionGroup("g", [TimeoutError(), ExceptionGroup("h", [Shaped(503)])]), True),
        (ExceptionGroup("g", [TimeoutError(), ValueError()]), False),
    ],
)
def test_builtin_and_own_exceptions(exc: BaseException, expected: bool) -> None:
    assert is_transient(exc) is expected


def test_cancellation_never_retried() -> None:
    # trio.Cancelled cannot be made by hand; any BaseException-only class stands for it.
    class FakeCancelled(BaseException):
        status_code = 503

    assert not is_transient(FakeCancelled())
    assert not Retry(on=lambda e: True).should_retry(FakeCancelled())
    assert not Retry(on=lambda e: True).should_retry(KeyboardInterrupt())


def test_on_classes_and_predicate() -> None:
    r = Retry(on=(KeyError, OSError))
    assert r.should_retry(KeyError("k"))
    assert r.should_retry(FileNotFoundError())
    assert not r.should_retry(Shaped(503))
    assert Retry(on=ValueError).should_retry(json.JSONDecodeError("x", "d", 0))
    seen: list[BaseException] = []
    pred = Retry(on=lambda e: seen.append(e) or isinstance(e, KeyError))
    assert pred.should_retry(KeyError())
    assert not pred.should_retry(RuntimeError())
    assert len(seen) == 2

    def broken(exc: BaseException) -> bool:
        raise LookupError("predicate bug")

    with pytest.raises(LookupError, match="predicate bug"):
        Retry(on=broken).should_retry(RuntimeError())


# -- the real litellm and openai exceptions ---------------------------------------------------


def test_litellm_rate_limit_error_real_shape() -> None:
    exc = litellm.RateLimitError(response=_resp(429, **{"retry-after": "2"}), **_KW)
    assert exc.status_code == 429
    assert is_transient(exc)
    assert retry_after_of(exc) == 2.0
    assert Retry().delay(1, exc) == 2.0
    # litellm makes up a response when given none: a 429 with no Retry-After.
    bare = litellm.RateLimitError(**_KW)
    assert is_transient(bare)
    assert retry_after_of(bare) is None


@pytest.mark.parametrize(
    ("make", "transient"),
    [
        (lambda: litellm.Timeout(**_KW), True),
        (lambda: litellm.APIConnectionError(**_KW), True),
        (lambda: litellm.InternalServerError(**_KW), True),
        (lambda: litellm.ServiceUnavailableError(**_KW), True),
        (lambda: litellm.ContentPolicyViolationError(**_KW), False),
        (lambda: litellm.ContextWindowExceededError(**_KW), False),
        (lambda: litellm.BadRequestError(**_KW), False),
        (lambda: litellm.AuthenticationError(**_KW), False),
        (lambda: litellm.NotFoundError(**_KW), False),
    ],
)
def test_litellm_exceptions(make: object, transient: bool) -> None:
    exc = make()  # type: ignore[operator]
    assert is_transient(exc) is transient
    assert Retry().should_retry(exc) is transient
    assert retry_after_of(exc) is None


def test_litellm_shapes_that_surprise() -> None:
    # litellm.Timeout is an openai APITimeoutError (so an APIConnectionError), has
    # status_code 408, and reading .response raises instead of returning None.
    t = litellm.Timeout(**_KW)
    assert t.status_code == 408
    assert isinstance(t, openai.APITimeoutError)
    assert not hasattr(t, "response")
    # litellm.APIConnectionError claims status 500.
    assert litellm.APIConnectionError(**_KW).status_code == 500
    # ContentPolicyViolationError is a BadRequestError (400): excluded by name first.
    cpv = litellm.ContentPolicyViolationError(**_KW)
    assert isinstance(cpv, litellm.BadRequestError)
    assert cpv.status_code == 400


def test_litellm_timeout_headers_are_read() -> None:
    t = litellm.Timeout(**_KW, headers={"retry-after": "3"})
    assert retry_after_of(t) == 3.0


def test_openai_exceptions() -> None:
    rl = openai.RateLimitError(
        "slow down", response=_openai_resp(429, **{"retry-after-ms": "250"}), body=None
    )
    assert is_transient(rl)
    assert retry_after_of(rl) == 0.25
    req = openai_httpx.Request("POST", "http://x")
    assert is_transient(openai.APITimeoutError(request=req))
    assert is_transient(openai.APIConnectionError(request=req))
    ise = openai.InternalServerError("boom", response=_openai_resp(500), body=None)
    assert is_transient(ise)
    conflict = openai.ConflictError("busy", response=_openai_resp(409), body=None)
    assert is_transient(conflict)
    for cls, status in [
        (openai.BadRequestError, 400),
        (openai.AuthenticationError, 401),
        (openai.PermissionDeniedError, 403),
        (openai.NotFoundError, 404),
        (openai.UnprocessableEntityError, 422),
    ]:
        assert not is_transient(cls("no", response=_openai_resp(status), body=None))


# -- is_outage: what a CircuitBreaker counts -------------------------------------------------


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504, 529, 599])
def test_outage_statuses(status: int) -> None:
    assert is_outage_status(status)
    assert is_outage(Shaped(status_code=status))
    assert is_outage(Shaped(response=_resp(status)))


@pytest.mark.parametrize("status", [429, 409, 400, 401, 404, 499, 600])
def test_a_429_and_other_4xx_are_not_outages(status: int) -> None:
    # A 429 is the rate limit's business: the provider answered, it is up.
    assert not is_outage_status(status)
    assert not is_outage(Shaped(status_code=status))
    # The status code decides over the class name when there is one.
    named = type("ServiceUnavailableError", (Exception,), {})("x")
    named.status_code = status  # type: ignore[attr-defined]
    assert not is_outage(named)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (type("RateLimitError", (Exception,), {})("no status"), False),
        (type("InternalServerError", (Exception,), {})("no status"), True),
        (type("APIConnectionError", (Exception,), {})("no status"), True),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
        (httpx.ConnectTimeout("x"), True),
        (httpx.ReadError("x"), True),
        (httpx.RemoteProtocolError("x"), True),
        (ValueError("bad"), False),
        (RuntimeError("bug"), False),
        (AgentTimeout("t", reason="timeout", limit=1.0), False),
        (AgentCancelled("c"), False),
        (CircuitOpen(1.0, 31.0, "5 of 5 calls failed"), False),
        (KeyboardInterrupt(), False),
        (ExceptionGroup("g", [TimeoutError(), ExceptionGroup("h", [Shaped(503)])]), True),
        (ExceptionGroup("g", [TimeoutError(), Shaped(429)]), False),
    ],
)
def test_outage_shapes(exc: BaseException, expected: bool) -> None:
    assert is_outage(exc) is expected
    if expected:
        assert is_transient(exc)  # an outage is always worth another attempt


def test_real_sdk_exceptions_as_outages() -> None:
    assert not is_outage(litellm.RateLimitError(**_KW))
    assert is_outage(litellm.Timeout(**_KW))
    assert is_outage(litellm.APIConnectionError(**_KW))
    assert is_outage(litellm.InternalServerError(**_KW))
    assert is_outage(litellm.ServiceUnavailableError(**_KW))
    assert not is_outage(litellm.ContentPolicyViolationError(**_KW))
    assert not is_outage(litellm.BadRequestError(**_KW))
    req = openai_httpx.Request("POST", "http://x")
    assert is_outage(openai.APITimeoutError(request=req))
    assert is_outage(openai.APIConnectionError(request=req))
    assert is_outage(openai.InternalServerError("boom", response=_openai_resp(500), body=None))
    assert not is_outage(openai.RateLimitError("slow", response=_openai_resp(429), body=None))
    assert not is_outage(openai.ConflictError("busy", response=_openai_resp(409), body=None))
