"""`FaultLog`: the chaos server's record of every chat request and the fault it got.

One `RequestRecord` per chat-completion request, in arrival order, naming the agent the
request came from (when the server could tell), that agent's call number, the planned
and the applied fault, and how the exchange ended (``sent``, ``dropped``, or
``client_disconnected`` when the client gave up first). Requests a server `Quota`
refused are logged too, as fault ``quota_exceeded``, without using up a plan call. A
run's log can be compared with
its `trio_mesa.StepReport` agent by agent. The log is shared between the server's event
loop thread and the caller's thread: every access takes one lock, and `wait_idle` blocks
until no request is in flight, so a test reads a settled log without sleeping.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

#: How an exchange ended.
SENT = "sent"
DROPPED = "dropped"
CLIENT_DISCONNECTED = "client_disconnected"
IN_FLIGHT = "in_flight"

#: The ``planned`` and ``fault`` of a request the server's quota refused (HTTP 429).
QUOTA_EXCEEDED = "quota_exceeded"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One chat-completion request and what the server did with it.

    Attributes:
        request: the server-wide 1-based request number (arrival order).
        agent: the requesting agent's ``unique_id``, or ``None`` if the request did
            not say (then ``call`` counts the server's unattributed requests).
        call: the agent's 1-based request number: the key of its `FaultPlan` entry. A
            request the quota refused uses no number: its ``call`` is the one the
            agent's next admitted request will get.
        planned: the `FaultKind` value the plan drew for this call (``quota_exceeded``
            when the quota refused the request before the plan was consulted).
        fault: the fault actually applied (``"ok"`` for none); differs from ``planned``
            only where a fault does not apply (``bad_tool_call`` on a request
            without tools is answered normally).
        detail: how the fault was carried out (``"reset"`` or ``"truncated"`` for a
            dropped connection, ``"garbage"`` or ``"cut"`` for a malformed body).
        status: the HTTP status sent, or ``None`` if no status line was sent.
        latency: seconds the server waited before answering (``None`` for a hang).
        retry_after: seconds a 429 or 503 asked the client to wait.
        model: the ``model`` the request named.
        tool: the tool called in a ``tool_calls`` reply, if any.
        outcome: ``"sent"``, ``"dropped"``, ``"client_disconnected"`` or ``"in_flight"``.
        prompt_tokens, completion_tokens: the ``usage`` billed in a completion the
            client could read (0 for errors, dropped and malformed bodies).
    """

    request: int
    agent: int | None
    call: int
    planned: str
    fault: str
    detail: str = ""
    status: int | None = None
    latency: float | None = 0.0
    retry_after: float | None = None
    model: str = ""
    tool: str | None = None
    outcome: str = IN_FLIGHT
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class FaultLog:
    """A thread-safe, append-only list of `RequestRecord`, optionally mirrored to a file.

    Args:
        path: if given, every finished request is appended to it as one JSON line
            (the file is truncated when the log is created).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self._records: list[RequestRecord] = []
        self._calls: dict[int | None, int] = {}
        self._in_flight = 0
        self._cond = threading.Condition()
        self._path = path
        self._file: TextIO | None = None
        if path is not None:
            self._file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def reset(self) -> None:
        """Start afresh, as a new log: no records, every agent's next call numbered 1,
        the log file (if any) truncated.

        Raises:
            RuntimeError: a request is in flight (its record would be lost, and its
                agent's next call misnumbered).
        """
        with self._cond:
            if self._in_flight:
                raise RuntimeError(
                    f"{self._in_flight} request(s) in flight: reset once the client is done"
                )
            self._records.clear()
            self._calls.clear()
            if self._file is not None:
                self._file.seek(0)
                self._file.truncate()

    def start(
        self,
        agent: int | None,
        planned: str,
        fault: str,
        model: str,
        *,
        numbered: bool = True,
        call: int | None = None,
    ) -> RequestRecord:
        """Number a new request (and, if ``numbered``, the agent's call) and mark it in
        flight. ``numbered=False`` (a quota refusal) leaves the agent's call count as it
        is, so the plan entry stays with the agent's next admitted request. ``call``:
        the client's own number for the call (``X-Agent-Call``), kept as it is."""
        with self._cond:
            if call is None:
                call = self._calls.get(agent, 0) + 1
            if numbered:
                self._calls[agent] = max(call, self._calls.get(agent, 0))
            record = RequestRecord(
                request=len(self._records) + 1,
                agent=agent,
                call=call,
                planned=planned,
                fault=fault,
                model=model,
            )
            self._records.append(record)
            self._in_flight += 1
            return record

    def next_call(self, agent: int | None) -> int:
        """The call number the agent's next request will get."""
        with self._cond:
            return self._calls.get(agent, 0) + 1

    def finish(self, record: RequestRecord, **changes: Any) -> RequestRecord:
        """Record how the request ended; wakes `wait_idle` when nothing is in flight."""
        with self._cond:
            done = dataclasses.replace(record, **changes)
            self._records[record.request - 1] = done
            self._in_flight -= 1
            if self._file is not None:
                self._file.write(json.dumps(done.to_json()) + "\n")
                self._file.flush()
            if self._in_flight == 0:
                self._cond.notify_all()
            return done

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until no request is in flight; ``False`` if ``timeout`` passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._in_flight == 0, timeout)

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    def records(self) -> list[RequestRecord]:
        """A snapshot of every record so far, in arrival order."""
        with self._cond:
            return list(self._records)

    def faults(self) -> list[RequestRecord]:
        """The records whose applied fault is not ``"ok"``."""
        return [r for r in self.records() if r.fault != "ok"]

    def stats(self) -> dict[str, Any]:
        """Counts over the log: ``requests``, ``in_flight``, ``status`` (HTTP status
        sent, as a string, to count; ``"none"`` for no status line), ``faults`` (applied
        fault to count, ``ok`` included), ``rate_limited`` (429s sent, for any reason)
        and ``quota_exceeded`` (429s sent because the quota was empty)."""
        records = self.records()
        status: dict[str, int] = {}
        faults: dict[str, int] = {}
        for r in records:
            key = "none" if r.status is None else str(r.status)
            status[key] = status.get(key, 0) + 1
            faults[r.fault] = faults.get(r.fault, 0) + 1
        return {
            "requests": len(records),
            "in_flight": sum(r.outcome == IN_FLIGHT for r in records),
            "status": dict(sorted(status.items())),
            "faults": dict(sorted(faults.items())),
            "rate_limited": status.get("429", 0),
            "quota_exceeded": faults.get(QUOTA_EXCEEDED, 0),
        }

    def by_agent(self) -> dict[int | None, list[RequestRecord]]:
        """Each agent's records in call order."""
        out: dict[int | None, list[RequestRecord]] = {}
        for r in self.records():
            out.setdefault(r.agent, []).append(r)
        return out

    def __iter__(self) -> Iterator[RequestRecord]:
        return iter(self.records())

    def __len__(self) -> int:
        with self._cond:
            return len(self._records)

    def close(self) -> None:
        with self._cond:
            if self._file is not None:
                self._file.close()
                self._file = None
