"""Where a chaos server's replies come from when it records or replays a real model's run.

`Upstream` forwards a request to a real OpenAI-compatible endpoint with httpx (the
client's ``Authorization`` and a few other provider headers passed through, nothing
stored) and hands back its status, headers and exact bytes; an unreachable upstream is
an OpenAI-shaped 502 naming it. `Replay` answers from a `Cassette`: plainly (each
agent's n-th call gets its n-th recorded response, after `first_difference` found the
request unchanged), or under a fault overlay (`Replay.next_reply`: the agent's next
recorded 200 reply, preferring one whose request matches exactly, else the next one of
the same kind). `make_source` checks the options and builds the `UpstreamSource` or
`ReplaySource` the app asks for each successful call's reply (`Served`, or a `Refusal`
the app sends as an OpenAI-shaped 400). `fault_injection.chaos._app` decides when
each is used: the plan still fixes every call's fate.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from trio_mesa._cassette import first_difference

from .._scenario import FaultKind, Scenario
from ._cassette import Cassette, CassetteWriter, Exchange, kept_headers
from ._log import RequestRecord
from ._replies import error_body, wants_tool_call

#: Request headers passed to the upstream (lower case); nothing else is forwarded.
FORWARDED_HEADERS = (
    "authorization",
    "api-key",
    "openai-organization",
    "openai-project",
    "x-agent-id",
    "user-agent",
)

REPLAY_MODES = ("strict", "lenient")


class Upstream:
    """A real endpoint the chaos server forwards chat requests to.

    Args:
        base: the upstream's ``api_base`` (``https://api.openai.com/v1``, or another
            chaos server's ``.../v1``); ``/chat/completions`` is appended.
        timeout: seconds to wait for the upstream's answer (connecting: 10 s at most).
    """

    def __init__(self, base: str, timeout: float = 600.0) -> None:
        if not isinstance(base, str) or not base.startswith(("http://", "https://")):
            raise ValueError(f"upstream must be an http:// or https:// URL, not {base!r:.200}")
        try:
            host = urllib.parse.urlsplit(base).hostname
        except ValueError:  # an unbalanced [ in the host, say
            host = None
        if not host:
            raise ValueError(f"upstream must name a host: {base!r:.200}")
        self.base = base.rstrip("/")
        self.timeout = timeout
        self._client: Any = None

    def _http(self) -> Any:
        import httpx

        if self._client is None:  # made on the server's loop, on first use
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout))
            )
        return self._client

    async def forward(
        self, path: str, content: bytes, headers: Mapping[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """POST ``content`` to the upstream's ``path``; its status, headers and body.

        A connection that fails (refused, reset, timed out) is answered with a 502 whose
        OpenAI-shaped error names the upstream and what went wrong.
        """
        import httpx

        sent = {k: v for k, v in headers.items() if k.lower() in FORWARDED_HEADERS}
        sent["content-type"] = "application/json"
        url = self.base + path
        try:
            response = await self._http().post(url, content=content, headers=sent)
        except httpx.HTTPError as exc:
            return self._unreachable(exc)
        return response.status_code, dict(response.headers), response.content

    async def get(self, path: str, headers: Mapping[str, str]) -> tuple[int, dict[str, str], bytes]:
        """GET the upstream's ``path`` (``/models``); a 502 if it cannot be reached."""
        import httpx

        sent = {k: v for k, v in headers.items() if k.lower() in FORWARDED_HEADERS}
        try:
            response = await self._http().get(self.base + path, headers=sent)
        except httpx.HTTPError as exc:
            return self._unreachable(exc)
        return response.status_code, dict(response.headers), response.content

    def _unreachable(self, exc: Exception) -> tuple[int, dict[str, str], bytes]:
        message = f"The upstream {self.base} could not be reached: {type(exc).__name__}: {exc}"
        body = json.dumps(error_body(message, "server_error", "upstream_unreachable"))
        return 502, {"content-type": "application/json"}, body.encode()

    async def aclose(self) -> None:
        """Close the HTTP client (on the loop that used it)."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _kind(request: dict[str, Any]) -> tuple[bool, Any]:
    fmt = request.get("response_format")
    return wants_tool_call(request), fmt.get("type") if isinstance(fmt, dict) else None


def _describe_kind(request: dict[str, Any]) -> str:
    tool, fmt = _kind(request)
    return "a tool call" if tool else f"{fmt} content" if fmt else "text"


class Replay:
    """A `Cassette` being replayed: which recorded exchange answers which request.

    Args:
        cassette: the recording; mode: ``"strict"`` (a request that differs from its
            recording is refused) or ``"lenient"`` (served anyway).
    """

    def __init__(self, cassette: Cassette, mode: str = "strict") -> None:
        if mode not in REPLAY_MODES:
            raise ValueError(f"replay_mode must be 'strict' or 'lenient', not {mode!r}")
        self.cassette = cassette
        self.mode = mode
        self._lock = threading.Lock()
        self._used: dict[int | None, set[int]] = {}
        self._last: dict[int | None, int] = {}  # the latest call served, per agent

    def reset(self) -> None:
        """Forget which replies were served: the next run replays from the start."""
        with self._lock:
            self._used.clear()
            self._last.clear()

    def lookup(
        self, agent: int | None, call: int, body: dict[str, Any]
    ) -> tuple[Exchange | None, str | None]:
        """The agent's ``call``-th exchange (``None`` beyond the recording) and how the
        request differs from the recorded one (``None``: identical)."""
        exchange = self.cassette.get(agent, call)
        if exchange is None:
            return None, None
        return exchange, first_difference(exchange.request, body)

    def next_reply(
        self, agent: int | None, body: dict[str, Any], *, take: bool = True
    ) -> tuple[Exchange | None, str | None]:
        """Under a fault overlay: the recorded 200 reply for the agent's next successful
        call, and how the request differs from that reply's (``None``: identical).

        A fault changes what a model sends next (an agent that failed stays put, its
        neighbours see it there), so the reply is the agent's first unused one whose
        request matches exactly; else the first unused one of the same kind (tool call,
        JSON format, or text) recorded after the last one served, so the agent's
        replies keep their recorded order and a step's replies are not taken by an
        earlier step; else the first unused one of that kind at all. ``None`` when the
        agent has no such reply left: a text request never gets a tool call.

        ``take`` marks the reply used in the same step (two concurrent requests of one
        agent never get the same one); ``take=False`` (a reply a fault then spoils, so
        the client will ask again) leaves it for the next call.
        """
        with self._lock:
            used = self._used.setdefault(agent, set())
            free = [e for e in self.cassette.calls(agent) if e.status == 200 and e.call not in used]
            chosen = next((e for e in free if e.request == body), None)
            if chosen is None:
                kind = _kind(body)
                same = [e for e in free if _kind(e.request) == kind]
                last = self._last.get(agent, 0)
                chosen = next((e for e in same if e.call > last), same[0] if same else None)
            if chosen is None:
                return None, None
            if take:
                used.add(chosen.call)
                self._last[agent] = max(self._last.get(agent, 0), chosen.call)
        return chosen, first_difference(chosen.request, body)


#: Why a second client run against one server runs out of recording: said in the error.
SECOND_RUN_HINT = (
    " Calls are numbered from the server's start or its last reset, so a second client "
    "run against the same server continues the count: POST /_chaos/reset (or "
    "ChaosServer.reset()) between runs, or restart the server."
)

#: The ``fault`` a `FaultLog` records for a request replay refused.
REPLAY_DIVERGED = "replay_diverged"
REPLAY_EXHAUSTED = "replay_exhausted"


class Served(NamedTuple):
    """A successful call's reply, as the client is to get it (before any fault spoils
    it): status, the headers that matter, the exact body, the tool it calls, the usage
    it bills and a note for the log's ``detail``."""

    status: int
    headers: dict[str, str]
    content: bytes
    tool: str | None
    usage: dict[str, int]
    detail: str = ""


class Hold(NamedTuple):
    """A call whose client hung up before any response reached it, when it was recorded
    (an abandoned `Exchange`): replay sends nothing and waits for the client to hang up
    again. When recording, the client has hung up already (``waiting=False``)."""

    detail: str
    waiting: bool = True


class Refusal(NamedTuple):
    """A call replay cannot answer: sent as an OpenAI-shaped 400 (``invalid_request_error``
    with ``code``), logged as fault ``code`` with ``detail``."""

    message: str
    code: str
    detail: str = ""
    status: int = 400


def reply_facts(content: bytes) -> tuple[str | None, dict[str, int]]:
    """The tool a completion body calls (``None``: none, or not a completion) and its
    ``usage`` (``{}`` unless it bills integer token counts)."""
    try:
        reply = json.loads(content)
        message = reply["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None, {}
    tool = None
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    if isinstance(calls, list) and calls and isinstance(calls[0], dict):
        fn = calls[0].get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        tool = name if isinstance(name, str) else None
    usage = reply.get("usage") if isinstance(reply, dict) else None
    billed = {}
    if isinstance(usage, dict):
        for key in ("prompt_tokens", "completion_tokens"):
            value = usage.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                billed[key] = value
    return tool, billed


def spoil_tool_calls(content: bytes) -> bytes:
    """``content`` with every tool call's ``arguments`` cut in half (not JSON any more):
    the ``bad_tool_call`` fault on a real reply. A body with no tool call is unchanged."""
    try:
        reply = json.loads(content)
        calls = reply["choices"][0]["message"]["tool_calls"]
    except (ValueError, KeyError, IndexError, TypeError):
        return content
    if not isinstance(calls, list) or not calls:
        return content
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
            args = fn["arguments"]
            fn["arguments"] = args[: max(1, len(args) // 2)]
    return json.dumps(reply).encode()


class UpstreamSource:
    """Every successful call's reply comes from the upstream; with a ``writer``, each
    exchange is recorded before the client gets it.

    Attributes:
        upstream (`Upstream`), writer (`CassetteWriter` or ``None``).
    """

    def __init__(self, upstream: Upstream, writer: CassetteWriter | None) -> None:
        self.upstream = upstream
        self.writer = writer

    def describe(self) -> str:
        where = f"; recording to {self.writer.path}" if self.writer is not None else ""
        return f"forwarding to {self.upstream.base}{where}"

    async def reply(
        self,
        record: RequestRecord,
        body: dict[str, Any],
        raw: bytes,
        headers: Mapping[str, str],
        intact: bool = True,
    ) -> Served | Refusal:
        """Forward the call and record what came back (``intact`` does not matter here:
        the upstream answered once, and that is what happened)."""
        status, got, content = await self.upstream.forward("/chat/completions", raw, headers)
        if self.writer is not None:
            # What the client gets is recorded, the upstream's own errors and a 502 for
            # an unreachable upstream too: the client's next call is the next number.
            self.writer.write(
                Exchange.from_response(record.agent, record.call, body, status, got, content)
            )
        tool, usage = reply_facts(content) if status == 200 else (None, {})
        return Served(status, kept_headers(got), content, tool, usage)

    def abandon(self, record: RequestRecord, body: dict[str, Any]) -> Hold:
        """The client hung up before the upstream answered (its own timeout, an agent
        cancelled): recorded as an abandoned exchange, so replay makes it hang up again."""
        if self.writer is not None:
            self.writer.write(Exchange.hung_up(record.agent, record.call, body))
        return Hold("the client hung up before the upstream answered", waiting=False)

    async def aclose(self) -> None:
        await self.upstream.aclose()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class ReplaySource:
    """Every successful call's reply comes from a `Cassette`.

    Plain replay (``overlay=False``): the agent's n-th call gets the n-th recorded
    response byte for byte, status and headers included; a call beyond the recording
    is refused (``replay_exhausted``), and so is one whose request differs from the
    recorded one (``replay_diverged``) in ``strict`` mode (``lenient``: served anyway,
    the difference in the log's ``detail``). Under a fault overlay the plan's faults
    shift the agent's calls, so a successful call gets `Replay.next_reply`.

    Attributes:
        replay (`Replay`), overlay (bool).
    """

    def __init__(self, replay: Replay, overlay: bool) -> None:
        self.replay = replay
        self.overlay = overlay

    def describe(self) -> str:
        c = self.replay.cassette
        how = "under the scenario's faults" if self.overlay else f"{self.replay.mode} mode"
        return f"replaying {c.path} ({len(c)} exchanges, {len(c.agents)} agents), {how}"

    async def reply(
        self,
        record: RequestRecord,
        body: dict[str, Any],
        raw: bytes,
        headers: Mapping[str, str],
        intact: bool = True,
    ) -> Served | Refusal | Hold:
        """The recorded reply to this call, or why there is none. ``intact=False``: a
        fault will spoil the reply before the client reads it, so under an overlay it
        stays available for the client's next attempt."""
        agent, call, path = record.agent, record.call, self.replay.cassette.path
        who = "unattributed requests" if agent is None else f"agent {agent}"
        if self.overlay:
            exchange, diff = self.replay.next_reply(agent, body, take=intact)
            if exchange is None:
                message = (
                    f"Replay: {who}, call {call}: the cassette {path} has no successful "
                    f"reply of this kind ({_describe_kind(body)}) of {who} left to serve."
                    f"{SECOND_RUN_HINT}"
                )
                return Refusal(message, REPLAY_EXHAUSTED)
            detail = f"recorded call {exchange.call}" + (f"; differs at {diff}" if diff else "")
        else:
            exchange, diff = self.replay.lookup(agent, call, body)
            if exchange is None:
                recorded = len(self.replay.cassette.calls(agent))
                message = (
                    f"Replay: {who}, call {call} is beyond the recording: the cassette {path} "
                    f"has {recorded} call(s) of {who}.{SECOND_RUN_HINT}"
                )
                return Refusal(message, REPLAY_EXHAUSTED)
            detail = ""
            if diff is not None:
                if self.replay.mode == "strict":
                    message = (
                        f"Replay: {who}, call {call} differs from the recording in {path}: "
                        f"{diff} (the model's behaviour diverged; replay_mode 'lenient' "
                        "serves the recorded reply anyway)."
                    )
                    return Refusal(message, REPLAY_DIVERGED, diff)
                detail = f"diverged: {diff}"
        if exchange.abandoned:  # the client hung up here when recorded: it will again
            return Hold(
                "recorded: the client hung up before any response"
                + (f"; {detail}" if detail else "")
            )
        content = exchange.content
        tool, usage = reply_facts(content) if exchange.status == 200 else (None, {})
        return Served(exchange.status, dict(exchange.headers), content, tool, usage, detail)

    async def aclose(self) -> None:
        pass

    def close(self) -> None:
        pass


Source = UpstreamSource | ReplaySource


def has_faults(scenario: Scenario) -> bool:
    """Whether any call of ``scenario`` can fail (a background fault or a rule's)."""
    return any(rate > 0 for rate in scenario.faults.values()) or any(
        r.rate > 0 and r.kind is not FaultKind.OK for r in scenario.rules
    )


def make_source(
    scenario: Scenario,
    upstream: str | None = None,
    record: str | Path | None = None,
    replay: str | Path | Cassette | None = None,
    replay_mode: str | None = None,
) -> Source | None:
    """The reply source the options ask for (``None``: the chaos server's own replies).

    Raises:
        ValueError: an option combination that makes no sense, naming the options;
            `CassetteError` (a ValueError) for a cassette that cannot be replayed.
        TypeError: an option of the wrong type.
    """
    if upstream is not None and not isinstance(upstream, str):
        raise TypeError(f"upstream must be a URL string, not {upstream!r}")
    if record is not None and not isinstance(record, (str, Path)):
        raise TypeError(f"record must be a file path, not {record!r}")
    if replay is not None and not isinstance(replay, (str, Path, Cassette)):
        raise TypeError(f"replay must be a file path or a Cassette, not {replay!r}")
    if replay_mode is not None and replay_mode not in REPLAY_MODES:
        raise ValueError(f"replay_mode must be 'strict' or 'lenient', not {replay_mode!r}")
    if replay is not None and upstream is not None:
        raise ValueError(
            "replay answers from the cassette and upstream forwards to a live endpoint: "
            "pass one of them, not both"
        )
    if replay is not None and record is not None:
        raise ValueError("record and replay exclude each other (record needs upstream)")
    if record is not None and upstream is None:
        raise ValueError(f"record={str(record)!r} needs upstream=URL: the endpoint to record")
    if replay_mode is not None and replay is None:
        raise ValueError(f"replay_mode={replay_mode!r} needs replay=CASSETTE")
    if record is not None and has_faults(scenario):
        raise ValueError(
            f"record a clean run: scenario {scenario.name!r} injects faults, which a "
            "recording cannot replay; overlay them at replay time (replay=..., scenario=...)"
        )
    if upstream is not None:
        proxy = Upstream(upstream)
        writer = CassetteWriter(record) if record is not None else None
        return UpstreamSource(proxy, writer)
    if replay is not None:
        cassette = replay if isinstance(replay, Cassette) else Cassette.load(replay)
        return ReplaySource(Replay(cassette, replay_mode or "strict"), has_faults(scenario))
    return None
