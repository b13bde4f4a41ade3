"""`Cassette`: a recorded run's chat exchanges, keyed by (agent ``unique_id``, call number).

A cassette is a JSON-lines file. Line 1 is the header, ``{"cassette": "trio-mesa",
"version": 1}``; then one `Exchange` per line, in the order the responses were sent:
the agent, its call number, the request body, the status, the headers that matter
(``content-type``, ``retry-after``, ``retry-after-ms``) and the response body, plus a
``digest`` of all of those (and ``"abandoned": true`` for a call whose client hung up
before any response reached it); the last line, ``{"end": N}``, is written when the
recording stops cleanly. Request headers are never written: the client's API key stays
out of the file. The recorder writes and flushes each exchange as it is sent, so a
crash loses at most the exchanges in flight (load such a file with ``complete=False``).

Loading checks everything: a missing file, a line that is not JSON, a missing or
mistyped field, a digest that does not match (a hand edit), a duplicate or missing call
number, a missing or wrong end line (a truncated file) each raise `CassetteError`
naming the file, the line and the field.

The same file serves both recorders: trio-mesa's in-process seam (`trio_mesa.use_cassette`,
``simulate(cassette=..., record=...)``), and the chaos server's recording proxy and
``--replay`` (``fault_injection.chaos``), which import it from here. `first_difference`
is the strict divergence check both replays use.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

#: The header's ``cassette`` value and the only ``version`` this code reads and writes.
FORMAT = "trio-mesa"
VERSION = 1

#: Response headers a cassette keeps (lower case); every other header is dropped.
KEPT_HEADERS = ("content-type", "retry-after", "retry-after-ms")

#: The status an abandoned exchange records: nginx's "client closed request", never
#: sent to anyone (the client had hung up).
ABANDONED_STATUS = 499

#: The status an exchange records when the request never got a response because the
#: connection failed (refused, reset, timed out: ``error`` names the exception); never
#: sent to anyone.
ERROR_STATUS = 599

#: The longest kept header value; longer ones are dropped when recording.
MAX_HEADER_VALUE = 200


def header_value_ok(value: object) -> bool:
    """Whether ``value`` can be replayed as a response header: printable ASCII, at most
    `MAX_HEADER_VALUE` characters (no CR or LF that could split the response)."""
    return (
        isinstance(value, str)
        and len(value) <= MAX_HEADER_VALUE
        and value.isascii()
        and value.isprintable()
    )


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers a cassette keeps (lower-case names), values that can be replayed."""
    return {
        k.lower(): v for k, v in headers.items() if k.lower() in KEPT_HEADERS and header_value_ok(v)
    }


_SHOWN = 80  # characters of each value a difference shows


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def first_difference(recorded: Any, received: Any, path: str = "$") -> str | None:
    """Where two JSON values first differ, as ``PATH: recorded X, received Y``, or ``None``.

    Objects compare key by key in sorted order, arrays item by item; each value shown is
    cut to 80 characters. Two strings that share a long opening are shown from a little
    before the first character that differs (``PATH (from character N): ...``).
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
    if isinstance(recorded, str) and isinstance(received, str):
        # Long prompts differ deep inside: show where, not their identical openings.
        at = next(
            (i for i, (a, b) in enumerate(zip(recorded, received, strict=False)) if a != b),
            min(len(recorded), len(received)),
        )
        if at > _SHOWN // 2:
            start = at - _SHOWN // 4
            return (
                f"{path} (from character {at}): recorded {_show('...' + recorded[start:])}, "
                f"received {_show('...' + received[start:])}"
            )
    return f"{path}: recorded {_show(recorded)}, received {_show(received)}"


class CassetteError(ValueError):
    """A cassette file that cannot be replayed: missing, truncated, edited or malformed.

    The message reads ``FILE:LINE: FIELD: what is wrong``.

    Attributes:
        path: the file (a string); line: the 1-based line (0 when the file could not
        be read at all); field: the field at fault (``""`` for the line as a whole).
    """

    def __init__(self, path: str | Path, line: int, field: str, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        self.problem = problem
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {field + ': ' if field else ''}{problem}")


@dataclass(frozen=True)
class Exchange:
    """One recorded chat request and the response the client got.

    Attributes:
        agent: the requesting agent's ``unique_id`` (``None``: the request named no
            agent; the server numbers those in arrival order).
        call: the agent's 1-based call number, as the chaos server counts them.
        request: the request body (a JSON object).
        status: the HTTP status sent to the client.
        headers: the kept response headers (lower-case names, see ``KEPT_HEADERS``).
        body: the response body, byte for byte (`Exchange.content`); stored as text,
            with bytes that are not UTF-8 kept as surrogate escapes.
        abandoned: the client hung up before any response reached it (its own timeout,
            or an agent cancelled mid-call): then ``status`` is `ABANDONED_STATUS`,
            ``body`` is empty, and replay holds the request until the client hangs up
            again, so the timeout happens again. Written to the file only when true.
        error: the connection failed before any response (recorded in-process by
            trio-mesa's seam): ``"ExceptionName: message"``, the httpx exception replay
            raises again; then ``status`` is `ERROR_STATUS` and ``body`` empty. Written
            to the file only when set.
    """

    agent: int | None
    call: int
    request: dict[str, Any]
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    abandoned: bool = False
    error: str = ""

    @property
    def content(self) -> bytes:
        """The response body's exact bytes."""
        return self.body.encode("utf-8", "surrogateescape")

    @classmethod
    def from_response(
        cls,
        agent: int | None,
        call: int,
        request: dict[str, Any],
        status: int,
        headers: Mapping[str, str],
        content: bytes,
    ) -> Exchange:
        """An exchange from a response's status, headers (any case) and raw body."""
        body = content.decode("utf-8", "surrogateescape")
        return cls(agent, call, request, status, kept_headers(headers), body)

    @classmethod
    def hung_up(cls, agent: int | None, call: int, request: dict[str, Any]) -> Exchange:
        """The exchange of a call whose client hung up before any response reached it."""
        return cls(agent, call, request, ABANDONED_STATUS, {}, "", abandoned=True)

    @classmethod
    def failed(
        cls, agent: int | None, call: int, request: dict[str, Any], exc: BaseException
    ) -> Exchange:
        """The exchange of a call whose connection failed with ``exc`` (no response)."""
        error = f"{type(exc).__name__}: {exc}"[:MAX_HEADER_VALUE]
        return cls(agent, call, request, ERROR_STATUS, {}, "", error=error)

    def _fields(self) -> dict[str, Any]:
        fields = {
            "agent": self.agent,
            "call": self.call,
            "request": self.request,
            "status": self.status,
            "headers": self.headers,
            "body": self.body,
        }
        if self.abandoned:  # only then: a cassette without abandoned calls is unchanged
            fields["abandoned"] = True
        if self.error:  # likewise
            fields["error"] = self.error
        return fields

    def to_json(self) -> dict[str, Any]:
        """The exchange as its cassette line's object, ``digest`` included."""
        fields = self._fields()
        return {**fields, "digest": _digest(fields)}


def _digest(fields: dict[str, Any]) -> str:
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _line(obj: dict[str, Any]) -> bytes:
    return (json.dumps(obj, ensure_ascii=True) + "\n").encode()


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "call": (int,),
    "request": (dict,),
    "status": (int,),
    "headers": (dict,),
    "body": (str,),
    "digest": (str,),
}


def _exchange_from(obj: Any, path: Path, n: int) -> Exchange:
    if not isinstance(obj, dict):
        raise CassetteError(path, n, "", "an exchange must be a JSON object")
    extra = set(obj) - set(_FIELD_TYPES) - {"agent", "abandoned", "error"}
    if extra:
        raise CassetteError(path, n, sorted(extra)[0], "not a field of an exchange")
    if "agent" not in obj:
        raise CassetteError(path, n, "agent", "missing")
    agent = obj["agent"]
    if agent is not None and (not isinstance(agent, int) or isinstance(agent, bool)):
        raise CassetteError(path, n, "agent", f"must be an integer or null, not {agent!r:.40}")
    for name, types in _FIELD_TYPES.items():
        if name not in obj:
            raise CassetteError(path, n, name, "missing")
        value = obj[name]
        if not isinstance(value, types) or isinstance(value, bool):
            raise CassetteError(
                path, n, name, f"must be {types[0].__name__}, not {type(value).__name__}"
            )
    if obj["call"] < 1:
        raise CassetteError(path, n, "call", f"must be 1 or more, not {obj['call']}")
    if not 100 <= obj["status"] <= 599:
        raise CassetteError(path, n, "status", f"not an HTTP status: {obj['status']}")
    for key, value in obj["headers"].items():
        if key not in KEPT_HEADERS or not header_value_ok(value):
            raise CassetteError(
                path,
                n,
                f"headers.{key}",
                f"not a kept header with a printable ASCII value of at most "
                f"{MAX_HEADER_VALUE} characters",
            )
    abandoned = obj.get("abandoned", False)
    if abandoned is not True and "abandoned" in obj:
        raise CassetteError(path, n, "abandoned", "written only as true")
    if abandoned and (obj["status"] != ABANDONED_STATUS or obj["body"] or obj["headers"]):
        raise CassetteError(
            path, n, "abandoned", f"an abandoned call has status {ABANDONED_STATUS}, no body"
        )
    error = obj.get("error", "")
    if "error" in obj and (not isinstance(error, str) or not error):
        raise CassetteError(path, n, "error", "written only as a non-empty string")
    if error and (obj["status"] != ERROR_STATUS or obj["body"] or obj["headers"] or abandoned):
        raise CassetteError(
            path, n, "error", f"a failed connection has status {ERROR_STATUS}, no body"
        )
    exchange = Exchange(
        agent,
        obj["call"],
        obj["request"],
        obj["status"],
        obj["headers"],
        obj["body"],
        abandoned=abandoned,
        error=error,
    )
    if _digest(exchange._fields()) != obj["digest"]:
        raise CassetteError(path, n, "digest", "does not match the exchange (edited by hand?)")
    return exchange


class Cassette:
    """A recorded run: every `Exchange`, by agent and call number.

    Build one with `Cassette.load`; iterate it for the exchanges in recorded order;
    ``cassette.get(agent, call)`` is that agent's ``call``-th exchange (or ``None``);
    ``cassette.calls(agent)`` all of the agent's, in call order. Immutable.

    Attributes:
        path: the file it was loaded from; complete: whether it had its end line.
    """

    def __init__(
        self, exchanges: list[Exchange], path: str | Path = "", *, complete: bool = True
    ) -> None:
        self.path = str(path)
        self.complete = complete
        self._exchanges = tuple(exchanges)
        self._by_agent: dict[int | None, list[Exchange]] = {}
        for e in self._exchanges:
            self._by_agent.setdefault(e.agent, []).append(e)
        for calls in self._by_agent.values():
            calls.sort(key=lambda e: e.call)

    @classmethod
    def load(cls, path: str | Path, *, complete: bool = True) -> Cassette:
        """Read and check a cassette file.

        ``complete=False`` accepts a recording that was cut short (no end line, or a
        last line cut off mid-way): the exchanges before the damage load. Every other
        problem still raises.

        Raises:
            CassetteError: naming the file, the line and the field at fault.
        """
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CassetteError(path, 0, "", f"cannot read the cassette: {exc.strerror}") from None
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        if not lines:
            raise CassetteError(path, 1, "cassette", "empty file: no header line")
        objs: list[Any] = []
        for n, raw in enumerate(lines, 1):
            try:
                objs.append(json.loads(raw.decode("utf-8")))
            except (UnicodeDecodeError, ValueError) as exc:
                if not complete and n == len(lines) and n > 1:
                    break  # the exchange in flight when the recording stopped
                raise CassetteError(path, n, "", f"not a JSON line ({exc})") from None
        header = objs[0]
        if not isinstance(header, dict) or header.get("cassette") != FORMAT:
            raise CassetteError(path, 1, "cassette", f"not a {FORMAT} cassette header")
        if header.get("version") != VERSION or set(header) != {"cassette", "version"}:
            raise CassetteError(
                path, 1, "version", f"unsupported: {header.get('version')!r} (this reads {VERSION})"
            )
        end: int | None = None
        body = objs[1:]
        if body and isinstance(body[-1], dict) and "end" in body[-1]:
            footer = body.pop()
            end = len(objs)
            if set(footer) != {"end"} or footer["end"] != len(body):
                raise CassetteError(
                    path,
                    end,
                    "end",
                    f"says {footer.get('end')!r} exchanges, the file has {len(body)}",
                )
        elif complete:
            raise CassetteError(
                path,
                len(lines) + 1,
                "end",
                f"missing: the recording was cut short after {len(body)} exchanges "
                "(Cassette.load(path, complete=False) replays what it has)",
            )
        exchanges: list[Exchange] = []
        seen: dict[tuple[int | None, int], int] = {}
        for n, obj in enumerate(body, 2):
            e = _exchange_from(obj, path, n)
            key = (e.agent, e.call)
            if key in seen:
                raise CassetteError(
                    path, n, "call", f"agent {e.agent} call {e.call} is also on line {seen[key]}"
                )
            seen[key] = n
            exchanges.append(e)
        if complete:
            lines_of: dict[int | None, list[int]] = {}
            for agent, call in seen:
                lines_of.setdefault(agent, []).append(call)
            for agent, calls in lines_of.items():
                calls.sort()
                for i, call in enumerate(calls, 1):
                    if call != i:
                        raise CassetteError(
                            path,
                            seen[(agent, call)],
                            "call",
                            f"agent {agent} has call {call} but no call {i}",
                        )
        return cls(exchanges, path, complete=end is not None)

    def get(self, agent: int | None, call: int) -> Exchange | None:
        """The agent's ``call``-th exchange, or ``None`` beyond the recording."""
        calls = self._by_agent.get(agent, [])
        return calls[call - 1] if 1 <= call <= len(calls) and calls[call - 1].call == call else None

    def calls(self, agent: int | None) -> list[Exchange]:
        """The agent's exchanges in call order."""
        return list(self._by_agent.get(agent, []))

    @property
    def agents(self) -> list[int | None]:
        """The agents the cassette has exchanges of, in order of their first."""
        return list(self._by_agent)

    def __iter__(self) -> Iterator[Exchange]:
        return iter(self._exchanges)

    def __len__(self) -> int:
        return len(self._exchanges)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Cassette):
            return NotImplemented
        return self._exchanges == other._exchanges

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Cassette({self.path!r}, {len(self)} exchanges, {len(self._by_agent)} agents)"


class CassetteWriter:
    """Appends exchanges to a new cassette file, one flushed line each (thread-safe).

    The header is written on creation (the file is truncated), the end line by `close`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._count = 0
        self._file: BinaryIO | None = open(self.path, "wb")  # noqa: SIM115 - closed by close()
        self._write(_line({"cassette": FORMAT, "version": VERSION}))

    def _write(self, line: bytes) -> None:
        assert self._file is not None
        self._file.write(line)
        self._file.flush()

    def write(self, exchange: Exchange) -> None:
        """Append ``exchange`` and flush it to the file."""
        with self._lock:
            if self._file is None:
                raise ValueError(f"cassette {self.path} is closed")
            self._write(_line(exchange.to_json()))
            self._count += 1

    def __len__(self) -> int:
        with self._lock:
            return self._count

    def sync(self) -> None:
        """Flush and fsync what was written so far."""
        with self._lock:
            if self._file is not None:
                self._file.flush()
                os.fsync(self._file.fileno())

    def close(self) -> None:
        """Write the end line and close the file (idempotent)."""
        with self._lock:
            if self._file is not None:
                self._write(_line({"end": self._count}))
                self._file.close()
                self._file = None
