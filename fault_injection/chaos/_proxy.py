"""Where a chaos server's replies come from when it records or replays a real model's run.

`Upstream` forwards a request to a real OpenAI-compatible endpoint with httpx (the
client's ``Authorization`` and a few other provider headers passed through, nothing
stored) and hands back its status, headers and exact bytes; an unreachable upstream is
an OpenAI-shaped 502 naming it. `Replay` answers from a `Cassette`: plainly (each
agent's n-th call gets its n-th recorded response, after `first_difference` found the
request unchanged), or under a fault overlay (`Replay.next_reply`: the agent's next
recorded 200 reply, preferring one whose request matches exactly, else one of the same
kind). Pure bookkeeping; `fault_injection.chaos._app` decides when each is used.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from ._cassette import Cassette, Exchange
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
_SHOWN = 80  # characters of each value a difference shows


class Upstream:
    """A real endpoint the chaos server forwards chat requests to.

    Args:
        base: the upstream's ``api_base`` (``https://api.openai.com/v1``, or another
            chaos server's ``.../v1``); ``/chat/completions`` is appended.
        timeout: seconds to wait for the upstream's answer (connecting: 10 s at most).
    """

    def __init__(self, base: str, timeout: float = 600.0) -> None:
        if not isinstance(base, str) or not base.startswith(("http://", "https://")):
            raise ValueError(f"upstream must be an http:// or https:// URL, not {base!r}")
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
        self, path: str, content: bytes, headers: dict[str, str]
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
            message = f"The upstream {self.base} could not be reached: {type(exc).__name__}: {exc}"
            body = json.dumps(error_body(message, "server_error", "upstream_unreachable"))
            return 502, {"content-type": "application/json"}, body.encode()
        return response.status_code, dict(response.headers), response.content

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def first_difference(recorded: Any, received: Any, path: str = "$") -> str | None:
    """Where two JSON values first differ, as ``PATH: recorded X, received Y``, or ``None``.

    Objects compare key by key in sorted order, arrays item by item; each value shown is
    cut to 80 characters.
    """
    if isinstance(recorded, dict) and isinstance(received, dict):
        for key in sorted(set(recorded) | set(received)):
            where = f"{path}.{key}"
            if key not in received:
                return f"{where}: recorded {_show(recorded[key])}, received nothing"
            if key not in recorded:
                return f"{where}: recorded nothing, received {_show(received[key])}"
            found = first_difference(recorded[key], received[key], where)
            if found:
                return found
        return None
    if isinstance(recorded, list) and isinstance(received, list):
        for i, (a, b) in enumerate(zip(recorded, received, strict=False)):
            found = first_difference(a, b, f"{path}[{i}]")
            if found:
                return found
        if len(recorded) != len(received):
            return f"{path}: recorded {len(recorded)} items, received {len(received)}"
        return None
    if recorded == received and type(recorded) is type(received):
        return None
    return f"{path}: recorded {_show(recorded)}, received {_show(received)}"


def _kind(request: dict[str, Any]) -> tuple[bool, Any]:
    fmt = request.get("response_format")
    return wants_tool_call(request), fmt.get("type") if isinstance(fmt, dict) else None


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
        self, agent: int | None, body: dict[str, Any]
    ) -> tuple[Exchange | None, str | None]:
        """Under a fault overlay: the recorded 200 reply for the agent's next successful
        call, and how the request differs from that reply's (``None``: identical).

        A fault changes what a model sends next (the agent that failed stays put, its
        neighbours see it there), so the reply is the agent's first unused one whose
        request matches exactly, else its first unused one of the same kind (tool call,
        JSON format, or text), else its first unused one. Call `use` once it is sent.
        """
        with self._lock:
            used = self._used.get(agent, set())
            free = [e for e in self.cassette.calls(agent) if e.status == 200 and e.call not in used]
        if not free:
            return None, None
        for e in free:
            if e.request == body:
                return e, None
        kind = _kind(body)
        chosen = next((e for e in free if _kind(e.request) == kind), free[0])
        return chosen, first_difference(chosen.request, body)

    def use(self, exchange: Exchange) -> None:
        """Mark ``exchange`` as served (`next_reply` will not offer it again)."""
        with self._lock:
            self._used.setdefault(exchange.agent, set()).add(exchange.call)
