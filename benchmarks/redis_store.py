"""The Redis state store's costs, measured against a real ``redis-server`` on loopback:
one script's latency per call (a single reservation, a batch of 50, a breaker claim, a
budget reservation, beside a bare PING), and one quota key's ceiling: reservations per
second from 4 processes hammering the same limiter. CONTRIBUTING's "Past one machine"
quotes its output.

    python benchmarks/redis_store.py [--seconds 3] [--processes 4] [--tasks 8]
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio

from trio_mesa._stores import BreakerRule, BudgetLimits, Quota, RedisStore, Spend

# A quota no test can reach: the ceiling measured is the server's, not the quota's.
QUOTA = Quota(10**6, burst=10**6)


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server not found: `apt-get install -y redis-server` (make test does)")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as c:
                c.sendall(b"PING\r\n")
                if c.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.01)
    proc.kill()
    sys.exit("redis-server did not start")


async def latencies(url: str, n: int) -> dict[str, tuple[list[float], float | None]]:
    """Per kind of call: the client's round-trip times, and the server's own time per
    script (INFO commandstats' usec_per_call for EVALSHA)."""
    out: dict[str, tuple[list[float], float | None]] = {}
    async with RedisStore(url, workers=1) as store:
        client = store._connected()
        calls = {
            "PING (no script)": lambda: client.ping(),
            "rate_reserve, 1 weight": lambda: store.rate_reserve("lat", QUOTA, [1]),
            "rate_reserve, 50 weights": lambda: store.rate_reserve("lat", QUOTA, [1] * 50),
            "rate_reserve, 50 x (request, tokens)": lambda: store.rate_reserve(
                "lat2", [QUOTA, QUOTA], [(1, 500)] * 50
            ),
            "breaker_claim": lambda: store.breaker_claim("lat", BreakerRule()),
            "budget_reserve": lambda: store.budget_reserve(
                "lat", BudgetLimits(max_micro_usd=10**15), [Spend(1, 1)]
            ),
        }
        for name, call in calls.items():
            for _ in range(50):  # warm up
                await call()
            await client.config_resetstat()
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                await call()
                times.append(time.perf_counter() - t0)
            stats = await client.info("commandstats")
            evalsha = stats.get("cmdstat_evalsha")
            server = float(evalsha["usec_per_call"]) if isinstance(evalsha, dict) else None
            out[name] = (times, server)
    return out


def hammer(url: str, name: str, seconds: float, tasks: int, batch: int) -> int:
    """In a spawned process: ``tasks`` Trio tasks reserving from one key for ``seconds``."""

    async def main() -> int:
        done = 0
        async with RedisStore(url, workers=4) as store:
            await store.rate_reserve(name, QUOTA, [1])
            deadline = trio.current_time() + seconds

            async def worker() -> None:
                nonlocal done
                while trio.current_time() < deadline:
                    await store.rate_reserve(name, QUOTA, [1] * batch)
                    done += batch

            async with trio.open_nursery() as nursery:
                for _ in range(tasks):
                    nursery.start_soon(worker)
        return done

    return trio.run(main)


def ceiling(url: str, processes: int, tasks: int, batch: int, seconds: float) -> float:
    context = multiprocessing.get_context("spawn")
    name = f"ceiling-{tasks}-{batch}"
    with context.Pool(processes) as pool:
        counts = pool.starmap(hammer, [(url, name, seconds, tasks, batch)] * processes)
    return sum(counts) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    proc, url = start_server()
    try:
        version = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True
        ).stdout.split()[2]
        print(f"redis-server {version.removeprefix('v=')} on loopback; client coredis on Trio")
        print(f"\nLatency per call, one process, one call in flight ({args.calls} calls):")
        print(f"  {'':38} {'round trip (client)':>28}  {'script (server)':>15}")
        for name, (times, server) in trio.run(latencies, url, args.calls).items():
            times.sort()
            p50, p99 = times[len(times) // 2], times[int(len(times) * 0.99)]
            mean = statistics.fmean(times)
            inside = f"{server:6.1f} us" if server is not None else "-"
            print(
                f"  {name:38} mean {mean * 1e6:4.0f} p50 {p50 * 1e6:4.0f} p99 {p99 * 1e6:5.0f} us"
                f"  {inside:>15}"
            )
        print(f"\nOne quota key, {args.processes} processes, {args.seconds:g} s each:")
        for tasks, batch in ((1, 1), (args.tasks, 1), (args.tasks, 10)):
            rate = ceiling(url, args.processes, tasks, batch, args.seconds)
            print(
                f"  {tasks} task(s) per process, {batch:2} reservation(s) per call: "
                f"{rate:9,.0f} reservations/s"
            )
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
