"""The seam's httpx transports: every LLM request of an agent passes through here.

`SeamAsyncTransport` and `SeamTransport` wrap a real httpx transport. For a request made
inside an agent's call (its usage ledger is in the context: `trio_mesa._usage`) they:

1. name the agent in an ``X-Agent-Id`` header (unless the request has one);
2. number the call (the agent's n-th request of the `Recording`) and, with a cassette,
   answer from it (a request that differs from its recording, or a call beyond it, is
   answered with an OpenAI-shaped 400 saying so) or send it and write the exchange,
   flushed, before the client sees the response;
3. with a request-mode ``rate_limit``, pass its gate just before the request is sent
   (each retry too), and settle its tokens from the response (`trio_mesa._gate`);
4. with the step's ``request_retry``, send a request that failed transiently again
   (a 408, 409, 429 or 5xx response, or a connection error or timeout) after the wait
   `Retry.delay` gives (``Retry-After`` honoured), before the client sees the failure;
5. add the response's ``usage`` (and its cost from litellm's cost map, when litellm is
   imported) to the agent's ledger.

A request made outside any agent passes through untouched (counted in the step's
report as unattributed when a step is running). The async transport keeps one real
transport per event loop (httpx connection pools are bound to the loop that made
them: a trio-asyncio loop per step, the user's asyncio loop, or Trio itself).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from ._cassette import Exchange, first_difference
from ._gate import (
    estimate_tokens,
    hold,
    loop_sleep,
    pass_gate_async,
    pass_gate_sync,
    settle_response,
    sleep_sync,
)
from ._recording import Recording
from ._retry import Retry, is_transient_status
from ._seam_context import Seam, current_seam
from ._usage import (
    AGENT,
    DEADLINE,
    REQUEST_RETRIES,
    REQUESTS,
    add_call,
    current_ledger,
    ledger_lock,
)

_HEADER = "x-agent-id"
#: The agent's call number in the recording, sent with a call the cassette did not
#: answer: a deterministic test provider (the chaos server) answers a call asked again
#: after a resume as it answered it the first time.
_CALL_HEADER = "x-agent-call"


class SeamHTTPError(Exception):
    """A transient HTTP answer the seam is deciding whether to retry (never raised to
    agent code: the response itself reaches the client when no retry is left).

    Attributes: status_code; response (the `httpx.Response`, for ``Retry-After``)."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.status_code = response.status_code
        self.response = response


class _Call:
    """One agent request's attribution: its ledger, seam and body."""

    __slots__ = ("agent", "body", "ledger", "seam")

    def __init__(self, ledger: list[Any], seam: Seam | None, request: httpx.Request) -> None:
        self.ledger = ledger
        self.agent = ledger[AGENT]
        self.seam = seam
        self.body: Any = None
        if _HEADER not in request.headers:
            request.headers[_HEADER] = str(self.agent)

    def request_body(self, request: httpx.Request) -> Any:
        if self.body is None:
            try:
                self.body = json.loads(request.content or b"null")
            except ValueError:
                self.body = {"raw": request.content.decode("utf-8", "replace")}
            if not isinstance(self.body, dict):
                self.body = {"raw": self.body}
        return self.body


def _attribute(request: httpx.Request) -> _Call | None:
    ledger = current_ledger.get()
    seam = current_seam.get()
    if ledger is None or ledger[AGENT] is None:
        if seam is not None:
            seam.count_unattributed()
        return None
    return _Call(ledger, seam, request)


# -- replay ----------------------------------------------------------------------------------


class _Replayed:
    """What the cassette says about one call: a response, a refusal, a failure or a hold."""

    __slots__ = ("exchange", "response")

    def __init__(self, response: httpx.Response | None, exchange: Exchange | None) -> None:
        self.response = response
        self.exchange = exchange


def _refusal(request: httpx.Request, message: str, code: str) -> httpx.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    return httpx.Response(400, json=body, request=request)


def _from_cassette(
    recording: Recording, call: _Call, number: int, request: httpx.Request
) -> _Replayed | None:
    """The replayed answer to this call, or ``None`` when it is to be sent (and recorded)."""
    exchange = recording.lookup(call.agent, number)
    path = recording.path
    who = f"agent {call.agent}"
    if exchange is None:
        if recording.records:
            return None
        have = len(recording.cassette.calls(call.agent)) if recording.cassette else 0
        message = (
            f"Replay: {who}, call {number} is beyond the recording: the cassette {path} "
            f"has {have} call(s) of {who} (record='{recording.record}')."
        )
        return _Replayed(_refusal(request, message, "replay_exhausted"), None)
    diff = first_difference(exchange.request, call.request_body(request))
    if diff is not None:
        message = (
            f"Replay: {who}, call {number} differs from the recording in {path}: {diff} "
            "(the model's behaviour diverged)."
        )
        return _Replayed(_refusal(request, message, "replay_diverged"), None)
    recording.count_replayed()
    if exchange.abandoned or exchange.error:
        return _Replayed(None, exchange)
    response = httpx.Response(
        exchange.status, headers=exchange.headers, content=exchange.content, request=request
    )
    return _Replayed(response, exchange)


def _replayed_error(exchange: Exchange, request: httpx.Request) -> Exception:
    name, _, message = exchange.error.partition(": ")
    cls = getattr(httpx, name, None)
    if not (isinstance(cls, type) and issubclass(cls, httpx.TransportError)):
        cls = httpx.TransportError
    return cls(f"replayed from the cassette: {message}", request=request)


# -- usage -----------------------------------------------------------------------------------


def _cost(model: Any, prompt: int, completion: int) -> float | None:
    """The call's cost from litellm's cost map (``None``: unknown model, or no litellm)."""
    import sys

    litellm = sys.modules.get("litellm")
    if litellm is None or not isinstance(model, str):
        return None
    # litellm 1.x prints "Provider List: ..." to stdout before raising for a model its
    # map does not know (get_llm_provider): an agent's stdout is the user's, so ask the
    # map itself first and call litellm only for a model it prices.
    prices = getattr(litellm, "model_cost", None)
    if not isinstance(prices, dict) or model not in prices:
        return None
    try:
        p, c = litellm.cost_per_token(
            model=model, prompt_tokens=prompt, completion_tokens=completion
        )
    except Exception:  # litellm raises for a model its map does not know
        return None
    return float(p) + float(c)


def _take_usage(call: _Call, response: httpx.Response) -> None:
    """Add a successful response's tokens (and cost) to the agent's ledger."""
    if response.status_code != 200:
        return
    try:
        reply = json.loads(response.content)
    except ValueError:
        reply = _last_sse_usage(response.content)
    usage = reply.get("usage") if isinstance(reply, dict) else None
    prompt = completion = 0
    if isinstance(usage, dict):
        prompt = usage.get("prompt_tokens") or 0
        completion = usage.get("completion_tokens") or 0
        if not (isinstance(prompt, int) and isinstance(completion, int)):
            prompt = completion = 0
    body = call.body if isinstance(call.body, dict) else {}
    model = body.get("model") or (reply.get("model") if isinstance(reply, dict) else None)
    add_call(call.ledger, prompt, completion, _cost(model, prompt, completion))


def _last_sse_usage(content: bytes) -> Any:
    # A streamed reply (text/event-stream): the last chunk that carries usage.
    found: Any = None
    for line in content.splitlines():
        if line.startswith(b"data:"):
            try:
                chunk = json.loads(line[5:])
            except ValueError:
                continue
            if isinstance(chunk, dict) and chunk.get("usage"):
                found = chunk
    return found


# -- the retry decision ----------------------------------------------------------------------


def _should_retry(retry: Retry | None, attempt: int, failure: BaseException) -> bool:
    return retry is not None and attempt < retry.attempts and retry.should_retry(failure)


def _count_request(call: _Call, retried: bool) -> None:
    with ledger_lock:
        call.ledger[REQUESTS] += 1
        if retried:
            call.ledger[REQUEST_RETRIES] += 1


def _retried_response(
    retry: Retry | None, attempt: int, response: httpx.Response
) -> BaseException | None:
    """The failure a response is retried for (a transient status the retry allows
    another attempt for), or ``None``: the response goes to the caller."""
    if is_transient_status(response.status_code):
        failure = SeamHTTPError(response)
        if _should_retry(retry, attempt, failure):
            return failure
    return None


def _record_unanswered(
    recording: Recording | None, call: _Call, number: int, exc: BaseException
) -> None:
    """A sent request got no response: a transport error, or the client hung up."""
    if recording is None:
        return
    if isinstance(exc, httpx.TransportError):
        recording.write(Exchange.failed(call.agent, number, call.body, exc))
    else:
        recording.write(Exchange.hung_up(call.agent, number, call.body))


def _answered(
    call: _Call,
    number: int,
    recording: Recording | None,
    limit: Any,
    reserved: int,
    tokens: int,
    response: httpx.Response,
) -> None:
    """A sent request's response was read: settle its tokens, record the exchange."""
    if limit is not None:
        settle_response(limit, reserved, tokens, response, call.agent)
    if recording is not None:
        recording.write(
            Exchange.from_response(
                call.agent,
                number,
                call.body,
                response.status_code,
                response.headers,
                response.content,
            )
        )


# -- the transports --------------------------------------------------------------------------


class SeamAsyncTransport(httpx.AsyncBaseTransport):
    """An async httpx transport that sends every agent request through the seam.

    Args:
        inner: the real transport to wrap; ``None`` (default) makes an
            ``httpx.AsyncHTTPTransport()`` per event loop, on first use there.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self._inner = inner
        self._per_loop: dict[Any, httpx.AsyncBaseTransport] = {}

    def _transport(self) -> httpx.AsyncBaseTransport:
        if self._inner is not None:
            return self._inner
        try:
            key: Any = asyncio.get_running_loop()
        except RuntimeError:  # Trio (anyio), no asyncio loop: one per Trio run
            import trio

            key = trio.lowlevel.current_trio_token()
        transport = self._per_loop.get(key)
        if transport is None:
            for old in [k for k in self._per_loop if getattr(k, "is_closed", _no)()]:
                del self._per_loop[old]  # its loop is gone, and its connections with it
            transport = self._per_loop[key] = httpx.AsyncHTTPTransport()
        return transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        call = _attribute(request)
        if call is None:
            return await self._transport().handle_async_request(request)
        seam = call.seam
        retry = seam.retry if seam is not None else None
        attempt = 1
        while True:
            _count_request(call, attempt > 1)
            failure: BaseException | None
            try:
                response = await self._exchange(call, request)
            except httpx.TransportError as exc:
                if not _should_retry(retry, attempt, exc):
                    raise
                failure = exc
            else:
                failure = _retried_response(retry, attempt, response)
                if failure is None:
                    _take_usage(call, response)
                    return response
            await loop_sleep(retry.delay(attempt, failure, seam.rng))  # type: ignore[union-attr]
            attempt += 1

    async def _exchange(self, call: _Call, request: httpx.Request) -> httpx.Response:
        """One request: answered from the cassette, or sent (and recorded); the
        response's body is read."""
        recording = call.seam.recording if call.seam is not None else None
        number = 0
        if recording is not None:
            number = recording.next_call(call.agent)
            replayed = _from_cassette(recording, call, number, request)
            if replayed is not None:
                if replayed.response is not None:
                    return replayed.response
                exchange = replayed.exchange
                assert exchange is not None
                if exchange.error:
                    raise _replayed_error(exchange, request)
                await hold()  # abandoned when recorded: the client gives up again
                raise AssertionError("unreachable: hold() only ends by cancellation")
            call.request_body(request)
            request.headers[_CALL_HEADER] = str(number)
        limit = call.seam.rate_limit if call.seam is not None else None
        tokens = reserved = 0
        if limit is not None:
            tokens = estimate_tokens(call.request_body(request)) if limit.tokens else 0
            reserved = await pass_gate_async(limit, tokens, call.ledger[DEADLINE])
        try:
            response = await self._transport().handle_async_request(request)
            await response.aread()
        except BaseException as exc:  # cancelled mid-request: the client hung up
            _record_unanswered(recording, call, number, exc)
            raise
        _answered(call, number, recording, limit, reserved, tokens, response)
        return response

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()
        try:
            loop: Any = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        transport = self._per_loop.pop(loop, None)
        if transport is not None:
            await transport.aclose()


def _no() -> bool:
    return False


class SeamTransport(httpx.BaseTransport):
    """The sync twin of `SeamAsyncTransport` (litellm's ``completion``, ``openai.OpenAI``).

    In a Trio worker thread, retry and rate-limit waits happen on the Trio thread, in
    the agent's task (`trio_mesa._gate`), so the agent's time limit cuts them; elsewhere
    they sleep the calling thread. A call recorded as abandoned replays as an
    ``httpx.ReadTimeout``.
    """

    def __init__(self, inner: httpx.BaseTransport | None = None) -> None:
        self._inner = inner if inner is not None else httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        call = _attribute(request)
        if call is None:
            return self._inner.handle_request(request)
        seam = call.seam
        retry = seam.retry if seam is not None else None
        attempt = 1
        while True:
            _count_request(call, attempt > 1)
            failure: BaseException | None
            try:
                response = self._exchange(call, request)
            except httpx.TransportError as exc:
                if not _should_retry(retry, attempt, exc):
                    raise
                failure = exc
            else:
                failure = _retried_response(retry, attempt, response)
                if failure is None:
                    _take_usage(call, response)
                    return response
            sleep_sync(retry.delay(attempt, failure, seam.rng))  # type: ignore[union-attr]
            attempt += 1

    def _exchange(self, call: _Call, request: httpx.Request) -> httpx.Response:
        recording = call.seam.recording if call.seam is not None else None
        number = 0
        if recording is not None:
            number = recording.next_call(call.agent)
            replayed = _from_cassette(recording, call, number, request)
            if replayed is not None:
                if replayed.response is not None:
                    return replayed.response
                exchange = replayed.exchange
                assert exchange is not None
                if exchange.error:
                    raise _replayed_error(exchange, request)
                raise httpx.ReadTimeout(
                    "replayed from the cassette: the client gave up on this call", request=request
                )
            call.request_body(request)
            request.headers[_CALL_HEADER] = str(number)
        limit = call.seam.rate_limit if call.seam is not None else None
        tokens = reserved = 0
        if limit is not None:
            tokens = estimate_tokens(call.request_body(request)) if limit.tokens else 0
            reserved = pass_gate_sync(limit, tokens, call.ledger[DEADLINE])
        try:
            response = self._inner.handle_request(request)
            response.read()
        except BaseException as exc:
            _record_unanswered(recording, call, number, exc)
            raise
        _answered(call, number, recording, limit, reserved, tokens, response)
        return response

    def close(self) -> None:
        self._inner.close()


# -- clients -------------------------------------------------------------------------------

_async_client: httpx.AsyncClient | None = None
_sync_client: httpx.Client | None = None


def seamed_async_client(current: Any) -> Any:
    """The client litellm is to use: ``current`` (the user's), its transport wrapped in
    place once, or trio-mesa's own (made once per process)."""
    global _async_client
    if current is not None:
        if isinstance(current, httpx.AsyncClient) and not isinstance(
            current._transport, SeamAsyncTransport
        ):
            current._transport = SeamAsyncTransport(current._transport)
        return current
    if _async_client is None:
        _async_client = async_http_client()
    return _async_client


def seamed_client(current: Any) -> Any:
    """`seamed_async_client`'s sync twin, for ``litellm.client_session``."""
    global _sync_client
    if current is not None:
        if isinstance(current, httpx.Client) and not isinstance(current._transport, SeamTransport):
            current._transport = SeamTransport(current._transport)
        return current
    if _sync_client is None:
        _sync_client = http_client()
    return _sync_client


def async_http_client(**kwargs: Any) -> httpx.AsyncClient:
    """See `trio_mesa.async_http_client`."""
    kwargs.setdefault("follow_redirects", True)
    return httpx.AsyncClient(transport=SeamAsyncTransport(), **kwargs)


def http_client(**kwargs: Any) -> httpx.Client:
    """See `trio_mesa.http_client`."""
    kwargs.setdefault("follow_redirects", True)
    return httpx.Client(transport=SeamTransport(), **kwargs)


__all__ = [
    "SeamAsyncTransport",
    "SeamTransport",
    "async_http_client",
    "http_client",
    "seamed_async_client",
    "seamed_client",
]
