"""``python -m fault_injection serve``: the chaos LLM server in the foreground.

Prints the base URL (``http://127.0.0.1:PORT``) as the first line of stdout, flushed,
then a line about the scenario on stderr, and serves until SIGINT or SIGTERM, after
which it stops cleanly (exit status 0). ``--quota RPS`` (and ``--quota-burst N``) makes
it a provider with a request quota, on top of any scenario (``--scenario quota`` has
50 requests/s by default). ``--upstream URL --record FILE`` makes it a recording proxy
to a real endpoint; ``--replay FILE`` answers from that cassette (``--replay-mode``,
and ``--scenario`` to overlay faults). starlette and uvicorn (the ``server`` extra) are
imported only when the command runs, so ``list`` and ``run`` work without them.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from ._scenarios import SERVER_SCENARIOS


def add_serve_parser(sub: Any) -> None:
    """Add the ``serve`` subcommand to the CLI's subparsers."""
    serve = sub.add_parser(
        "serve",
        help="run the chaos LLM server (OpenAI-compatible) until interrupted",
        description="Serve an OpenAI-compatible chat endpoint that fails on a seeded plan. "
        "Prints its base URL on the first line of stdout.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument(
        "--allow-non-loopback",
        action="store_true",
        help="allow a --host that is not loopback (the server has no authentication: "
        "anyone who can reach it may use it)",
    )
    serve.add_argument("--port", type=int, default=0, help="port (default: 0, any free port)")
    serve.add_argument(
        "--scenario",
        default="clean",
        choices=list(SERVER_SCENARIOS),
        help="the fault scenario (default: clean)",
    )
    serve.add_argument("--seed", type=int, default=None, help="the seed (default: the scenario's)")
    serve.add_argument("--log", metavar="FILE", help="write the fault log to FILE as JSON lines")
    serve.add_argument(
        "--quota",
        type=float,
        metavar="RPS",
        help="enforce a quota of RPS requests per second (token bucket; 429 with "
        "Retry-After beyond it; default: the scenario's, 50 for 'quota', else none)",
    )
    serve.add_argument(
        "--quota-burst",
        type=int,
        metavar="N",
        help="the quota's burst: requests an idle client may send at once (default: RPS)",
    )
    serve.add_argument(
        "--quota-tpm",
        type=float,
        metavar="TPM",
        help="also limit LLM tokens (prompt + completion, as the replies' usage counts "
        "them) to TPM per minute, enforced per second (TPM/60 a second, burst one "
        "second's worth); needs a request quota (--quota, or the 'quota' scenario)",
    )
    serve.add_argument(
        "--upstream",
        metavar="URL",
        help="forward every call the scenario lets succeed to this OpenAI-compatible "
        "api_base (the client's Authorization header passed through)",
    )
    serve.add_argument(
        "--record",
        metavar="FILE",
        help="with --upstream: record every exchange in the cassette FILE (JSON lines; "
        "no request headers, so no API key)",
    )
    serve.add_argument(
        "--replay",
        metavar="FILE",
        help="answer each agent's n-th call with the n-th reply recorded in the cassette "
        "FILE; with a --scenario that has faults, overlay them on the recorded replies",
    )
    serve.add_argument(
        "--replay-mode",
        choices=["strict", "lenient"],
        default=None,
        help="strict (default): a request that differs from its recording gets a 400 "
        "naming the first difference; lenient: served anyway",
    )


def _quota(args: argparse.Namespace) -> Any:
    """The `Quota` the flags ask for, ``None`` for the scenario's default; ValueError."""
    from .._quota import Quota
    from ._scenarios import SERVER_QUOTAS

    tpm = getattr(args, "quota_tpm", None)
    if args.quota is None and args.quota_burst is None and tpm is None:
        return None
    rate = args.quota
    if rate is None:
        named = SERVER_QUOTAS.get(args.scenario)
        if named is None:
            flag = "--quota-burst" if args.quota_burst is not None else "--quota-tpm"
            raise ValueError(f"{flag} needs --quota (scenario {args.scenario!r} has none)")
        rate = named.rate
    if tpm is not None and not (isinstance(tpm, float) and tpm > 0 and tpm < float("inf")):
        raise ValueError(f"--quota-tpm must be a positive number of tokens, not {tpm!r}")
    return Quota(rate, args.quota_burst, tokens=None if tpm is None else tpm / 60.0)


def _source_problem(args: argparse.Namespace) -> str | None:
    """Why the record/replay flags do not go together, or ``None``."""
    if args.replay is not None and args.record is not None:
        return "--record and --replay exclude each other"
    if args.record is not None and args.upstream is None:
        return "--record FILE needs --upstream URL: the endpoint whose replies to record"
    if args.replay is not None and args.upstream is not None:
        return (
            "--replay answers from the cassette and --upstream forwards to a live endpoint: "
            "give one of them"
        )
    if args.replay_mode is not None and args.replay is None:
        return "--replay-mode needs --replay FILE"
    from ._proxy import has_faults

    if args.record is not None and has_faults(SERVER_SCENARIOS[args.scenario]):
        return (
            f"--record needs a scenario without faults, not {args.scenario!r}: a recording "
            "holds the real model's replies; overlay faults at replay time "
            f"(--replay FILE --scenario {args.scenario})"
        )
    return None


def run_serve(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; 0 on a clean stop."""
    from ._server import ChaosServer

    try:
        quota = _quota(args)
    except ValueError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    problem = _source_problem(args)
    if problem is not None:
        sys.stderr.write(f"error: {problem}\n")
        return 2
    from ._server import is_loopback

    if not is_loopback(args.host):
        if not args.allow_non_loopback:
            sys.stderr.write(
                f"error: --host {args.host} is not a loopback address; the chaos server has "
                "no authentication, so it binds loopback only unless --allow-non-loopback "
                "is given\n"
            )
            return 2
        sys.stderr.write(
            f"WARNING: the chaos server is binding {args.host}, not loopback: anyone who "
            "can reach this machine can use it and read its fault log\n"
        )
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server = ChaosServer(
                args.scenario,
                args.seed,
                host=args.host,
                port=args.port,
                log_path=args.log,
                quota=quota,
                allow_non_loopback=args.allow_non_loopback,
                upstream=args.upstream,
                record=args.record,
                replay=args.replay,
                replay_mode=args.replay_mode,
            )
        except OSError as exc:  # the cassette to record cannot be created
            sys.stderr.write(f"error: cannot write {exc.filename}: {exc.strerror}\n")
            return 2
        except ValueError as exc:  # CassetteError too: file, line and field
            sys.stderr.write(f"error: {exc}\n")
            return 2
        try:
            server.start()
        except OSError as exc:
            sys.stderr.write(f"error: cannot listen on {args.host}:{args.port}: {exc}\n")
            return 2
        sys.stdout.write(f"{server.base_url}\n")
        sys.stdout.flush()
        limit = "" if server.quota is None else f"quota {server.quota.describe()}; "
        if server.app.source is not None:
            limit += f"{server.app.source.describe()}; "
        sys.stderr.write(
            f"chaos server: scenario {server.scenario.name!r}, seed {server.seed}; {limit}"
            f"OpenAI api_base {server.api_base}; fault log at {server.base_url}/_chaos/log; "
            f"each agent's calls are counted from the start: POST {server.base_url}"
            "/_chaos/reset before another client run\n"
        )
        sys.stderr.flush()
        while not stop.wait(0.5):
            if server._thread is None or not server._thread.is_alive():
                break
        server.stop()
        stats = server.app.stats()
        faults = stats["requests"] - stats["faults"].get("ok", 0)
        refused = "" if server.quota is None else f", {stats['quota_exceeded']} over the quota"
        sys.stderr.write(
            f"chaos server: stopped after {stats['requests']} requests, {faults} faults{refused}\n"
        )
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
