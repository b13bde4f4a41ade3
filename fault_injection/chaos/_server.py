"""`ChaosServer`: the chaos LLM app served by uvicorn on loopback, in a thread or a shell.

`chaos_server` binds and listens on its socket before it returns, so the base URL is
usable at once (connections wait in the backlog until uvicorn accepts them: nothing to
poll), and serves from a daemon thread with its own asyncio loop until the ``with``
block ends. ``python -m fault_injection serve`` runs the same server in the foreground,
prints its base URL as the first line of stdout, and stops cleanly on SIGINT or SIGTERM
(see `fault_injection.chaos._cli`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .._quota import Quota
from .._scenario import Scenario
from ._app import DEFAULT_MAX_BODY, ChaosApp
from ._cassette import Cassette
from ._log import FaultLog, RequestRecord


def _protocol_class(app: ChaosApp) -> type:
    """uvicorn's h11 protocol, registering each connection's transport with ``app``."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class ChaosH11Protocol(H11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if self.client is not None:
                app.transports[tuple(self.client)] = transport

        def connection_lost(self, exc: Exception | None) -> None:
            if self.client is not None:
                app.transports.pop(tuple(self.client), None)
            super().connection_lost(exc)

    return ChaosH11Protocol


def _server_class(app: ChaosApp) -> type:
    """uvicorn's server, closing ``app``'s upstream client on the serving loop at the end."""
    import uvicorn

    class ChaosUvicornServer(uvicorn.Server):
        async def serve(self, sockets: list[socket.socket] | None = None) -> None:
            try:
                await super().serve(sockets)
            finally:
                await app.aclose()

    return ChaosUvicornServer


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``127.0.0.0/8``, ``::1``) or ``localhost``."""
    if not isinstance(host, str):
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ChaosServer:
    """A `ChaosApp` served by uvicorn from a background thread.

    Args:
        scenario: a `Scenario` or the name of one in `SERVER_SCENARIOS`.
        seed: overrides the scenario's seed.
        host: the address to bind (loopback by default).
        port: the port (0: any free one).
        log_path: also write the fault log to this JSON-lines file.
        max_body: the largest request body accepted, in bytes.
        time_scale: real seconds per model second (default: the scenario's).
        quota: a `Quota` (or requests per second) enforced on every chat request
            (default: the named scenario's, see `SERVER_QUOTAS`).
        clock: the quota's clock (``time.monotonic``).
        shutdown_timeout: seconds `stop` lets unanswered requests (a ``hang``) run
            before cancelling them.
        allow_non_loopback: bind a host that is not loopback (``127.0.0.0/8``, ``::1``,
            ``localhost``); refused (`ValueError`) unless this is ``True``.
        upstream, record, replay, replay_mode: proxy to a real endpoint (and record
            its exchanges in a cassette), or answer from a cassette: see `ChaosApp`.
            The cassette being recorded gets its end line when the server stops.

    Attributes:
        app: the `ChaosApp`; log: its `FaultLog`; base_url: ``http://HOST:PORT``
            (set by `start`); api_base: ``base_url + "/v1"``.
    """

    def __init__(
        self,
        scenario: Scenario | str = "clean",
        seed: int | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: str | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        time_scale: float | None = None,
        shutdown_timeout: float = 2.0,
        quota: Quota | float | None = None,
        clock: Callable[[], float] = time.monotonic,
        allow_non_loopback: bool = False,
        upstream: str | None = None,
        record: str | Path | None = None,
        replay: str | Path | Cassette | None = None,
        replay_mode: str | None = None,
    ) -> None:
        if not is_loopback(host) and allow_non_loopback is not True:
            raise ValueError(
                f"the chaos server binds loopback only, not {host!r}: it answers anyone who "
                "can reach it, with no authentication (pass allow_non_loopback=True, or "
                "--allow-non-loopback, to bind another interface on purpose)"
            )
        self.app = ChaosApp(
            scenario,
            seed,
            log_path=log_path,
            max_body=max_body,
            time_scale=time_scale,
            quota=quota,
            clock=clock,
            upstream=upstream,
            record=record,
            replay=replay,
            replay_mode=replay_mode,
        )
        self.log: FaultLog = self.app.log
        self.host = host
        self.port = port
        self.shutdown_timeout = shutdown_timeout
        self.base_url = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def api_base(self) -> str:
        """The URL to give an OpenAI client (litellm's ``api_base``, openai's ``base_url``)."""
        return self.base_url + "/v1"

    @property
    def scenario(self) -> Scenario:
        return self.app.scenario

    @property
    def seed(self) -> int:
        return self.app.seed

    @property
    def quota(self) -> Quota | None:
        """The `Quota` the server enforces, or ``None``."""
        return self.app.quota

    def stats(self, wait_idle: float | None = 10.0) -> dict[str, Any]:
        """What ``GET /_chaos/stats`` reports (`ChaosApp.stats`), once no request is in
        flight (waiting at most ``wait_idle`` seconds)."""
        self.log.wait_idle(wait_idle)
        return self.app.stats()

    def reset(self, wait_idle: float | None = 10.0) -> None:
        """Start a new client run (`ChaosApp.reset`: call numbers from 1, an empty log,
        a full quota, replay from the cassette's start), once no request is in flight
        (waiting at most ``wait_idle`` seconds). Runs on the serving loop, so it never
        lands between a request's numbering and its record.

        Raises:
            RuntimeError: a request is still in flight, or a cassette is being recorded.
        """
        self.log.wait_idle(wait_idle)
        loop = self.app._loop
        if loop is None or self._thread is None or not loop.is_running():
            self.app.reset()
            return
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def reset() -> None:
            try:
                self.app.reset()
            except BaseException as exc:
                done.set_exception(exc)
            else:
                done.set_result(None)

        loop.call_soon_threadsafe(reset)
        done.result(timeout=30)  # the loop answers at once unless it is stopping

    def start(self) -> ChaosServer:
        """Bind, listen, and serve from a daemon thread; returns ``self``."""
        import uvicorn

        if self._thread is not None:
            raise RuntimeError("this ChaosServer has already been started")
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they
        # are TCP, and without it every response waits ~40 ms for a delayed ACK (Nagle).
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        host = f"[{self.host}]" if family == socket.AF_INET6 else self.host
        self.base_url = f"http://{host}:{self.port}"
        config = uvicorn.Config(
            self.app,
            http=_protocol_class(self.app),
            ws="none",
            lifespan="off",
            loop="asyncio",
            log_level="warning",
            access_log=False,
            # uvicorn annotates this int, but only passes it to asyncio.timeout, which
            # takes float seconds: sub-second shutdowns (tests use 0.2 s) work.
            timeout_graceful_shutdown=self.shutdown_timeout,  # type: ignore[arg-type]
        )
        self._server = _server_class(self.app)(config)

        def run() -> None:
            try:
                self._server.run(sockets=[sock])
            except BaseException as exc:  # reported by stop()
                self._error = exc
            finally:
                sock.close()

        self._thread = threading.Thread(target=run, name=f"chaos-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread; closes the log file.

        Raises:
            RuntimeError: if the server thread failed.
        """
        if self._thread is None:
            return
        self._server.should_exit = True
        self.app.drop_hanging()
        self._thread.join()
        self._thread = None
        self.log.close()
        self.app.close()
        if self._error is not None:
            raise RuntimeError(f"chaos server failed: {self._error!r}") from self._error

    def wait_idle(self, timeout: float | None = 10.0) -> bool:
        """Block until no request is in flight (see `FaultLog.wait_idle`)."""
        return self.log.wait_idle(timeout)

    def records(self, wait_idle: float | None = 10.0) -> list[RequestRecord]:
        """Every request so far, once none is in flight (waiting at most ``wait_idle``
        seconds; ``None``: forever).

        A client has its response a moment before the server records how the exchange
        ended: reading `log` right after a response may show it ``in_flight``.
        """
        self.log.wait_idle(wait_idle)
        return self.log.records()

    def __enter__(self) -> ChaosServer:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def chaos_server(
    scenario: Scenario | str = "clean", seed: int | None = None, **options: Any
) -> Iterator[ChaosServer]:
    """Serve a `ChaosServer` for the duration of a ``with`` block::

        with chaos_server("flaky", seed=1) as server:
            agent = MyAgent(model, CoTReasoning, llm_model="openai/chaos",
                            api_base=server.api_base)
            ...
            server.wait_idle()
            print(server.log.faults())

    ``options`` are `ChaosServer`'s keyword arguments.
    """
    server = ChaosServer(scenario, seed, **options)
    with server:
        yield server
