"""``python -m fault_injection serve``: the chaos LLM server in the foreground.

Prints the base URL (``http://127.0.0.1:PORT``) as the first line of stdout, flushed,
then a line about the scenario on stderr, and serves until SIGINT or SIGTERM, after
which it stops cleanly (exit status 0). starlette and uvicorn (the ``server`` extra) are
imported only when the command runs, so ``list`` and ``run`` work without them.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

from ._server_scenarios import SERVER_SCENARIOS


def add_serve_parser(sub: Any) -> None:
    """Add the ``serve`` subcommand to the CLI's subparsers."""
    serve = sub.add_parser(
        "serve",
        help="run the chaos LLM server (OpenAI-compatible) until interrupted",
        description="Serve an OpenAI-compatible chat endpoint that fails on a seeded plan. "
        "Prints its base URL on the first line of stdout.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="port (default: 0, any free port)")
    serve.add_argument(
        "--scenario",
        default="clean",
        choices=list(SERVER_SCENARIOS),
        help="the fault scenario (default: clean)",
    )
    serve.add_argument("--seed", type=int, default=None, help="the seed (default: the scenario's)")
    serve.add_argument("--log", metavar="FILE", help="write the fault log to FILE as JSON lines")


def run_serve(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; 0 on a clean stop."""
    from ._server import ChaosServer

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server = ChaosServer(
            args.scenario, args.seed, host=args.host, port=args.port, log_path=args.log
        )
        try:
            server.start()
        except OSError as exc:
            sys.stderr.write(f"error: cannot listen on {args.host}:{args.port}: {exc}\n")
            return 2
        sys.stdout.write(f"{server.base_url}\n")
        sys.stdout.flush()
        sys.stderr.write(
            f"chaos server: scenario {server.scenario.name!r}, seed {server.seed}; "
            f"OpenAI api_base {server.api_base}; fault log at {server.base_url}/_chaos/log\n"
        )
        sys.stderr.flush()
        while not stop.wait(0.5):
            if server._thread is None or not server._thread.is_alive():
                break
        server.stop()
        faults = len(server.log.faults())
        sys.stderr.write(
            f"chaos server: stopped after {len(server.log)} requests, {faults} faults\n"
        )
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
