"""`ChaosApp`: an OpenAI-compatible ASGI app (starlette) that fails on a seeded plan.

``POST /v1/chat/completions`` (and ``/chat/completions``) answers like a real provider
(see `fault_injection.chaos._replies`), except where the `FaultPlan` of its scenario
and seed says otherwise: the n-th request of agent ``unique_id`` gets exactly the fate
``plan.call(unique_id, n)``, so a seed reproduces every agent's faults whatever order
the requests arrive in. Requests that name no agent are keyed as agent 0, numbered in
arrival order. Faults as a client sees them: ``rate_limit`` (429 with ``Retry-After``
and ``retry-after-ms``), ``service_unavailable`` (503, same headers), ``server_error``
(500), ``timeout`` (408), ``content_filter`` (400, code ``content_filter``),
``malformed_json`` (200 with a body that is not JSON: ``garbage`` or ``cut`` short),
``bad_tool_call`` (a ``tool_calls`` reply whose ``arguments`` are not JSON),
``connection_error`` (the connection is ``reset`` before any byte, or ``truncated``
mid-body), ``hang`` (no answer until the client disconnects), and the plan's latency
before any of them. Every request is recorded in a `FaultLog` (``GET /_chaos/log``,
``GET /_chaos/faults``; ``GET /_chaos/health`` counts them; ``?wait_idle=SECONDS`` on
any of the three answers once no chat request is in flight; ``GET /_chaos/stats``
counts requests by status and fault, and reports the quota's bucket).

Call numbers, the log and the replay position last as long as the server: a second client
run against it continues each agent's count (its faults are the plan's later ones, and
replay runs out of recording). ``POST /_chaos/reset`` (`ChaosApp.reset`) starts a new
run as if the server had just started; it is explicit because no server can tell where
one client run ends (clients reconnect, and a resumed run must keep its numbers).

With a `Quota` (``quota=``, or the ``quota`` scenario), the app is a provider with a
real request quota: a token bucket on ``time.monotonic`` (see `TokenBucket`) is checked
before anything else, and a request that finds it empty is answered at once with 429,
an OpenAI-shaped ``rate_limit_exceeded`` error, and the exact wait until the next token
in ``retry-after-ms`` (milliseconds, rounded up) and ``Retry-After`` (whole seconds,
rounded up: litellm reads only integers there). It uses up no plan call: admitted
requests then meet the scenario's plan as usual. The quota runs in real seconds;
``time_scale`` does not stretch it. A quota with ``tokens`` also needs room for the
request's prompt tokens (refused: 429 ``tokens`` with the wait until there is room) and
takes each answered request's completion tokens from that bucket as it answers.

With ``upstream=URL`` the app is a proxy: every call the plan lets succeed is forwarded
to that real endpoint and answered with its reply (and, with ``record=FILE``, recorded
in a `Cassette`); with ``replay=FILE`` it is answered from a cassette instead, strictly
or with the plan's faults overlaid (see `fault_injection.chaos._proxy`).

Malformed requests get OpenAI-shaped 4xx JSON errors (400 for bad JSON, a missing or
wrongly typed field, or a schema beyond the bounds of `validate_chat_request`; 404, 405,
413 over ``max_body`` bytes), an unexpected error in the server an OpenAI-shaped 500,
and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._plan import CallRandom, FaultPlan
from .._quota import Quota, TokenBucket, quota_from_value
from .._scenario import FaultKind, Scenario
from ._cassette import Cassette
from ._log import (
    CLIENT_DISCONNECTED,
    DROPPED,
    QUOTA_EXCEEDED,
    SENT,
    FaultLog,
    RequestRecord,
)
from ._proxy import (
    Hold,
    Refusal,
    ReplaySource,
    Served,
    Source,
    UpstreamSource,
    make_source,
    spoil_tool_calls,
)
from ._replies import (
    chat_reply,
    count_prompt_tokens,
    error_body,
    find_agent,
    validate_chat_request,
    wants_tool_call,
)
from ._scenarios import SERVER_QUOTAS, resolve_server_scenario

logger = logging.getLogger("fault_injection.server")

K = FaultKind

#: The largest request body accepted by default (413 above it).
DEFAULT_MAX_BODY = 1 << 20

_ERRORS: dict[FaultKind, tuple[int, str, str, str]] = {
    K.RATE_LIMIT: (429, "requests", "rate_limit_exceeded", "Rate limit reached for {model}."),
    K.SERVICE_UNAVAILABLE: (
        503,
        "service_unavailable",
        "service_unavailable",
        "The server is overloaded or not ready yet.",
    ),
    K.SERVER_ERROR: (500, "server_error", "internal_error", "The server had an error."),
    K.TIMEOUT: (408, "timeout", "request_timeout", "Request timed out."),
    K.CONTENT_FILTER: (
        400,
        "invalid_request_error",
        "content_filter",
        "The response was filtered due to the prompt triggering content management policy.",
    ),
}


def retry_after_headers(seconds: float) -> dict[str, str]:
    """``retry-after`` (whole seconds) and ``retry-after-ms`` for a wait of ``seconds``.

    Both round up (at least 1), so a client that honours either waits long enough.
    Whole seconds in ``retry-after`` because litellm parses it with ``int()`` (a float
    there is ignored, and it falls back to its own backoff); the openai SDK prefers
    ``retry-after-ms``, which keeps the wait precise.
    """
    return {
        "retry-after": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(max(1, math.ceil(seconds * 1000))),
    }


class _Endpoint:
    """Marks a coroutine as a raw ASGI endpoint for starlette's router."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.handler(scope, receive, send)


async def _wait_disconnect(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _sleep_unless_disconnected(receive: Any, seconds: float) -> bool:
    """Sleep ``seconds``; ``True`` (early) if the client disconnected meanwhile."""
    if seconds <= 0:
        return False
    with anyio.move_on_after(seconds):
        await _wait_disconnect(receive)
        return True
    return False


async def _unless_hung_up[T](receive: Any, work: Awaitable[T]) -> T | None:
    """``work``'s result, or ``None`` (``work`` cancelled) if the client hangs up first."""
    result: list[T] = []
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            result.append(await work)
            tg.cancel_scope.cancel()

        async def client() -> None:
            await _wait_disconnect(receive)
            tg.cancel_scope.cancel()

        tg.start_soon(run)
        tg.start_soon(client)
    return result[0] if result else None


class _BadRequest(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def _error_response(status: int, message: str, code: str | None = None, **headers: str) -> Any:
    type_ = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(error_body(message, type_, code), status_code=status, headers=headers)


class ChaosApp:
    """The chaos LLM server's ASGI application.

    Args:
        scenario: a `Scenario` or the name of one in `SERVER_SCENARIOS`.
        seed: overrides the scenario's seed.
        log: the `FaultLog` to record requests in (a new one by default).
        log_path: with no ``log``, mirror the new log to this JSON-lines file.
        max_body: the largest request body accepted, in bytes.
        time_scale: real seconds per model second of planned latency and
            ``retry_after`` (default: the scenario's ``real_time_scale``).
        quota: a `Quota` (or requests per second) every chat request must fit in;
            default: the named scenario's (``"quota"``: 50 requests/s), else none.
        clock: the quota's clock, in seconds (``time.monotonic``; tests pass their own).
        upstream: a real endpoint's ``api_base``: every call the plan lets succeed is
            forwarded there (the client's ``Authorization`` passed through) and
            answered with its reply, status and headers; 502 if it cannot be reached.
        record: with ``upstream``, write every exchange to this cassette file (JSON
            lines, flushed as each is sent; the request headers are never written).
            Only with a scenario that injects no faults.
        replay: a cassette file (or a loaded `Cassette`) to answer from instead: each
            agent's n-th call gets its n-th recorded reply, byte for byte. With a
            scenario that injects faults, the plan decides each call's fate and a
            successful call gets the agent's next recorded reply (the fault overlay).
        replay_mode: ``"strict"`` (default): a request that differs from its recording
            gets a 400 ``replay_diverged`` naming the agent, the call and the first
            difference, logged as that fault; ``"lenient"``: served anyway.

    Raises:
        ValueError: for option combinations that make no sense (``record`` without
            ``upstream``, ``replay`` with it, ``replay_mode`` without ``replay``,
            ``record`` with faults); `CassetteError` for a cassette that cannot load.

    Attributes:
        scenario, seed, plan (`FaultPlan`), log (`FaultLog`), quota (`Quota` or
        ``None``), bucket (its `TokenBucket`, or ``None``), source (where successful
        replies come from when proxying or replaying, else ``None``).
    """

    def __init__(
        self,
        scenario: Scenario | str = "clean",
        seed: int | None = None,
        *,
        log: FaultLog | None = None,
        log_path: str | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        time_scale: float | None = None,
        quota: Quota | float | None = None,
        clock: Callable[[], float] = time.monotonic,
        upstream: str | None = None,
        record: str | Path | None = None,
        replay: str | Path | Cassette | None = None,
        replay_mode: str | None = None,
    ) -> None:
        self.quota = quota_from_value(quota)
        if self.quota is None and isinstance(scenario, str):
            self.quota = SERVER_QUOTAS.get(scenario)
        self._clock = clock
        self.bucket = None if self.quota is None else TokenBucket(self.quota, clock)
        self.scenario = resolve_server_scenario(scenario)
        self.plan = FaultPlan(self.scenario, seed)
        self.source: Source | None = make_source(
            self.scenario, upstream, record, replay, replay_mode
        )
        self.seed = self.plan.seed
        self.log = log if log is not None else FaultLog(log_path)
        self.max_body = max_body
        self.time_scale = self.scenario.real_time_scale if time_scale is None else time_scale
        # Filled by the uvicorn protocol of `_server` so that a fault can drop the
        # connection outright (ASGI itself has no way to): client address -> transport.
        self.transports: dict[Any, asyncio.Transport] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: asyncio.Event | None = None
        self._app = Starlette(
            routes=[
                Route("/v1/chat/completions", _Endpoint(self._chat), methods=["POST"]),
                Route("/chat/completions", _Endpoint(self._chat), methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/models", self._models, methods=["GET"]),
                Route("/_chaos/log", self._log, methods=["GET"]),
                Route("/_chaos/faults", self._faults, methods=["GET"]),
                Route("/_chaos/health", self._health, methods=["GET"]),
                Route("/_chaos/stats", self._stats, methods=["GET"]),
                Route("/_chaos/reset", self._reset, methods=["POST"]),
            ],
            exception_handlers={HTTPException: self._http_error, Exception: self._server_error},
        )

    def reset(self) -> None:
        """Start a new client run, as if the server had just started: every agent's next
        call is its call 1 again (so it meets the plan's first fates, and replay serves
        the cassette from its start), the log is emptied (its file truncated), the
        quota's bucket is full. Call it on the serving loop (``POST /_chaos/reset``, or
        `ChaosServer.reset`), or before the first request.

        Raises:
            RuntimeError: a request is in flight, or a cassette is being recorded (its
                agents' call numbers would repeat in it: record a new cassette instead).
        """
        if isinstance(self.source, UpstreamSource) and self.source.writer is not None:
            raise RuntimeError(
                "cannot reset while recording a cassette: each agent's call numbers would "
                "start again in the same file; stop the server and record a new one"
            )
        self.log.reset()
        if self.quota is not None:
            self.bucket = TokenBucket(self.quota, self._clock)
        if isinstance(self.source, ReplaySource):
            self.source.replay.reset()

    async def aclose(self) -> None:
        """Release what the reply source holds on the serving loop (the upstream's HTTP
        client); call it on that loop before it closes."""
        if self.source is not None:
            await self.source.aclose()

    def close(self) -> None:
        """Finish the cassette being recorded (its end line) and close it; idempotent."""
        if self.source is not None:
            self.source.close()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self._closing is None:
            self._loop = asyncio.get_running_loop()
            self._closing = asyncio.Event()
        await self._app(scope, receive, send)

    def drop_hanging(self) -> None:
        """Drop the connections of requests that hang (thread-safe): a server that stops
        must not wait for clients that may never give up."""
        if self._loop is not None and self._closing is not None:
            self._loop.call_soon_threadsafe(self._closing.set)

    async def _hang(self, receive: Any) -> bool:
        """Wait until the client disconnects (``True``) or `drop_hanging` (``False``)."""
        assert self._closing is not None
        closing = self._closing
        disconnected = False
        async with anyio.create_task_group() as tg:

            async def client() -> None:
                nonlocal disconnected
                await _wait_disconnect(receive)
                disconnected = True
                tg.cancel_scope.cancel()

            async def server() -> None:
                await closing.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(client)
            tg.start_soon(server)
        return disconnected

    # -- plain endpoints --------------------------------------------------------------

    async def _http_error(self, request: Request, exc: Exception) -> Any:
        assert isinstance(exc, HTTPException)
        return _error_response(exc.status_code, str(exc.detail), **(exc.headers or {}))

    async def _server_error(self, request: Request, exc: Exception) -> Any:
        # Anything the handlers did not expect: an OpenAI-shaped 500 the client can read
        # (starlette re-raises after sending it, and uvicorn logs the traceback once);
        # the server keeps serving.
        message = f"The chaos server had an unexpected error ({type(exc).__name__})."
        return _error_response(500, message, "internal_error")

    async def _models(self, request: Request) -> Any:
        upstream = getattr(self.source, "upstream", None)
        if upstream is not None:
            status, headers, content = await upstream.get("/models", request.headers)
            kind = headers.get("content-type", "application/json")
            return Response(content, status_code=status, media_type=kind)
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": "chaos", "object": "model", "created": 0, "owned_by": "fault_injection"}
                ],
            }
        )

    async def _describe(self, request: Request) -> dict[str, Any]:
        # ?wait_idle=SECONDS: answer once no chat request is in flight (or after SECONDS),
        # so that a client reads a settled log without sleeping.
        wait = request.query_params.get("wait_idle")
        idle = True
        if wait is not None:
            try:
                seconds = min(float(wait), 60.0)
            except ValueError:
                seconds = math.nan
            if not seconds >= 0:  # NaN too
                raise HTTPException(400, "wait_idle must be a non-negative number of seconds")
            idle = await anyio.to_thread.run_sync(self.log.wait_idle, seconds)
        return {
            "scenario": self.scenario.name,
            "seed": self.seed,
            "requests": len(self.log),
            "in_flight": self.log.in_flight,
            "idle": idle,
        }

    async def _log(self, request: Request) -> Any:
        head = await self._describe(request)
        records = [r.to_json() for r in self.log.records()]
        return JSONResponse({**head, "requests": records})

    async def _faults(self, request: Request) -> Any:
        head = await self._describe(request)
        records = [r.to_json() for r in self.log.faults()]
        return JSONResponse({**head, "faults": records})

    async def _health(self, request: Request) -> Any:
        return JSONResponse({"status": "ok", **(await self._describe(request))})

    def stats(self) -> dict[str, Any]:
        """`FaultLog.stats` plus ``quota``: the bucket's `TokenBucket.stats` (or ``None``)."""
        return {**self.log.stats(), "quota": None if self.bucket is None else self.bucket.stats()}

    async def _stats(self, request: Request) -> Any:
        head = await self._describe(request)
        return JSONResponse({**head, **self.stats()})

    async def _reset(self, request: Request) -> Any:
        # ?wait_idle=SECONDS: wait for requests in flight to end first (as on the GETs).
        await self._describe(request)
        try:
            self.reset()
        except RuntimeError as exc:
            return _error_response(409, f"Not reset: {exc}.", "conflict")
        return JSONResponse({"status": "reset", **(await self._describe(request))})

    # -- chat completions -------------------------------------------------------------

    async def _read_json(self, request: Request) -> dict[str, Any]:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            raise _BadRequest(413, f"Request body exceeds {self.max_body} bytes.", "too_large")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise _BadRequest(413, f"Request body exceeds {self.max_body} bytes.", "too_large")
            chunks.append(chunk)
        raw = b"".join(chunks)
        request.state.raw_body = raw  # what a proxy forwards, byte for byte
        try:
            body = json.loads(raw)
        except RecursionError:  # json's decoder recurses into nested arrays and objects
            raise _BadRequest(
                400, "The request body is nested too deeply.", "invalid_json"
            ) from None
        except (ValueError, UnicodeDecodeError) as exc:
            message = f"The request body is not valid JSON: {exc}"
            raise _BadRequest(400, message, "invalid_json") from None
        problem = validate_chat_request(body)
        if problem is not None:
            raise _BadRequest(400, problem, "invalid_request")
        return body

    async def _chat(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        try:
            body = await self._read_json(request)
        except ClientDisconnect:
            return
        except _BadRequest as exc:
            logger.warning("chaos server: rejected a request (%d): %s", exc.status, exc.message)
            await _error_response(exc.status, exc.message, exc.code)(scope, receive, send)
            return
        agent = find_agent(body, request.headers.get("x-agent-id"))
        key = 0 if agent is None else agent
        prompt = count_prompt_tokens(body)
        wait = 0.0 if self.bucket is None else self.bucket.take(prompt)
        if wait > 0:
            await self._refuse(agent, wait, body["model"], scope, receive, send, prompt)
            return
        # No await between numbering the call and recording it: requests are numbered
        # in the order they reach this point, one agent's calls in its own order.
        planned = self.plan.call(key, self.log.next_call(agent))
        kind = planned.kind
        if kind is K.INTERRUPT or (kind is K.BAD_TOOL_CALL and not wants_tool_call(body)):
            kind = K.OK  # the fault does not apply to this request
        record = self.log.start(agent, planned.kind.value, kind.value, body["model"])
        rng = CallRandom(self.seed, key, record.call, 1)  # the reply's own stream
        try:
            await self._answer(record, planned, kind, body, rng, scope, receive, send)
        except BaseException:
            if self.log.records()[record.request - 1].outcome == "in_flight":
                self.log.finish(record, outcome=CLIENT_DISCONNECTED)
            raise

    async def _refuse(
        self,
        agent: int | None,
        wait: float,
        model: str,
        scope: Any,
        receive: Any,
        send: Any,
        prompt: int = 0,
    ) -> None:
        """Answer 429: the quota is empty for ``wait`` more seconds."""
        assert self.quota is not None
        record = self.log.start(agent, QUOTA_EXCEEDED, QUOTA_EXCEEDED, model, numbered=False)
        headers = retry_after_headers(wait)
        # The wording of OpenAI's own 429s for its per-minute limits, per second here.
        if self.bucket is not None and self.bucket.tokens >= 1.0 - 1e-9:  # tokens ran out
            message = (
                f"Rate limit reached for {model} on tokens per second (TPS): "
                f"Limit {self.quota.tokens:g}, burst {self.quota.token_capacity}, "
                f"Requested {prompt}. Please try again in {headers['retry-after-ms']}ms."
            )
        else:
            message = (
                f"Rate limit reached for {model} on requests per second (RPS): "
                f"Limit {self.quota.rate:g}, burst {self.quota.capacity}, Requested 1. "
                f"Please try again in {headers['retry-after-ms']}ms."
            )
        if agent is not None:
            message += f" (chaos: agent {agent})"
        payload = error_body(message, "requests", "rate_limit_exceeded")
        try:
            await JSONResponse(payload, status_code=429, headers=headers)(scope, receive, send)
        finally:
            self.log.finish(record, status=429, latency=0.0, retry_after=wait, outcome=SENT)

    async def _answer(
        self,
        record: RequestRecord,
        planned: Any,
        kind: FaultKind,
        body: dict[str, Any],
        rng: CallRandom,
        scope: Any,
        receive: Any,
        send: Any,
    ) -> None:
        log = self.log
        if kind is K.HANG:
            if await self._hang(receive):
                log.finish(record, latency=None, outcome=CLIENT_DISCONNECTED)
                return
            transport = self.transports.get(scope.get("client") and tuple(scope["client"]))
            if transport is not None:
                transport.abort()
                await _wait_disconnect(receive)
            log.finish(record, latency=None, outcome=DROPPED)
            return
        latency = planned.latency * self.time_scale if math.isfinite(planned.latency) else 0.0
        if await _sleep_unless_disconnected(receive, latency):
            log.finish(record, latency=latency, outcome=CLIENT_DISCONNECTED)
            return
        if kind in _ERRORS:
            status, type_, code, message = _ERRORS[kind]
            headers: dict[str, str] = {}
            retry_after = None
            if kind in (K.RATE_LIMIT, K.SERVICE_UNAVAILABLE):
                retry_after = (planned.retry_after or 1.0) * self.time_scale
                headers = retry_after_headers(retry_after)
            where = f" (chaos: agent {record.agent}, call {record.call})"
            payload = error_body(message.format(model=body["model"]) + where, type_, code)
            await JSONResponse(payload, status_code=status, headers=headers)(scope, receive, send)
            log.finish(
                record, status=status, latency=latency, retry_after=retry_after, outcome=SENT
            )
            return
        drop = None
        if kind is K.CONNECTION_ERROR and self.source is not None:
            # Proxying or replaying: a reset needs no reply, so none is asked for (a live
            # upstream would bill a call its client never sees). Only here is the reset
            # drawn before the reply: the server's own replies draw from ``rng`` too, and
            # their seeded draws stay as they were.
            drop = rng.choice(("reset", "truncated"))
            transport = self.transports.get(scope.get("client") and tuple(scope["client"]))
            if drop == "reset" and transport is not None:
                transport.abort()
                await _wait_disconnect(receive)
                log.finish(record, status=None, latency=latency, detail=drop, outcome=DROPPED)
                return
        served = await self._success_reply(record, body, rng, kind, scope, receive)
        if isinstance(served, Refusal):
            await self._send_refusal(record, served, latency, scope, receive, send)
            return
        if isinstance(served, Hold):
            gone = not served.waiting or await self._hang(receive)
            outcome = CLIENT_DISCONNECTED if gone else DROPPED
            log.finish(record, latency=latency, detail=served.detail, outcome=outcome)
            return
        status, data, tool = served.status, served.content, served.tool
        detail = served.detail
        if kind is K.MALFORMED_JSON:
            detail = rng.choice(("garbage", "cut"))
            cut = data[: len(data) // 2]
            data = b"{'id': 'not JSON', 'choices': []" if detail == "garbage" else cut
        if kind is K.CONNECTION_ERROR:
            detail = drop or rng.choice(("reset", "truncated"))
            transport = self.transports.get(scope.get("client") and tuple(scope["client"]))
            if detail == "reset" and transport is not None:
                transport.abort()
            else:
                await send(_start(status, len(data), served.headers))
                half = data[: len(data) // 2]
                await send({"type": "http.response.body", "body": half, "more_body": True})
                if transport is None:
                    log.finish(
                        record, status=status, latency=latency, detail=detail, outcome=DROPPED
                    )
                    # Not served by our uvicorn protocol: raising makes the server close.
                    raise ConnectionAbortedError("chaos: connection dropped mid-body")
                transport.close()
            await _wait_disconnect(receive)
            log.finish(
                record,
                status=None if detail == "reset" else status,
                latency=latency,
                detail=detail,
                tool=tool,
                outcome=DROPPED,
            )
            return
        await send(_start(status, len(data), served.headers))
        await send({"type": "http.response.body", "body": data})
        billed = {} if kind is K.MALFORMED_JSON else served.usage
        if self.bucket is not None:
            self.bucket.charge(billed.get("completion_tokens", 0))
        log.finish(
            record,
            status=status,
            latency=latency,
            detail=detail,
            tool=tool,
            outcome=SENT,
            prompt_tokens=billed.get("prompt_tokens", 0),
            completion_tokens=billed.get("completion_tokens", 0),
        )

    # -- where a successful call's reply comes from ----------------------------------

    async def _success_reply(
        self,
        record: RequestRecord,
        body: dict[str, Any],
        rng: CallRandom,
        kind: FaultKind,
        scope: Any,
        receive: Any,
    ) -> Served | Refusal | Hold:
        """The reply to a call the plan lets through (or spoils: ``bad_tool_call``,
        ``malformed_json`` and a truncated ``connection_error`` spoil this reply): the
        server's own, the upstream's, or the cassette's."""
        if self.source is None:
            reply, tool = chat_reply(
                body, record.agent, rng, record.request, bad_args=kind is K.BAD_TOOL_CALL
            )
            return Served(200, {}, json.dumps(reply).encode(), tool, reply["usage"])
        request = Request(scope)
        raw = getattr(request.state, "raw_body", None)
        if raw is None:
            raw = json.dumps(body).encode()
        # A malformed or cut-off reply never reaches the client intact: it will ask again.
        intact = kind not in (K.MALFORMED_JSON, K.CONNECTION_ERROR)
        source = self.source
        if isinstance(source, UpstreamSource):
            got = await _unless_hung_up(
                receive, source.reply(record, body, raw, request.headers, intact)
            )
            served = source.abandon(record, body) if got is None else got
        else:
            served = await source.reply(record, body, raw, request.headers, intact)
        if kind is K.BAD_TOOL_CALL and isinstance(served, Served):
            served = served._replace(content=spoil_tool_calls(served.content))
        return served

    async def _send_refusal(
        self,
        record: RequestRecord,
        refusal: Refusal,
        latency: float,
        scope: Any,
        receive: Any,
        send: Any,
    ) -> None:
        """Answer a call replay cannot: an OpenAI-shaped 400, logged as a fault."""
        logger.warning("chaos server: %s", refusal.message)
        response = _error_response(refusal.status, refusal.message, refusal.code)
        try:
            await response(scope, receive, send)
        finally:
            self.log.finish(
                record,
                fault=refusal.code,
                detail=refusal.detail,
                status=refusal.status,
                latency=latency,
                outcome=SENT,
            )


def _start(status: int, length: int, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A response start: ``content-type`` (JSON unless ``headers`` say otherwise), the
    length, and any other kept headers (``retry-after``: a recorded 429's)."""
    extra = dict(headers or {})
    kind = extra.pop("content-type", "application/json")
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", kind.encode("latin-1")),
            (b"content-length", str(length).encode()),
            *((k.encode("latin-1"), v.encode("latin-1")) for k, v in extra.items()),
        ],
    }
