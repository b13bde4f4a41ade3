"""Asyncio-host cost: trio_mesa.compat.step_agents_parallel vs a bare asyncio.gather.

    .venv/bin/python benchmarks/bench_compat_asyncio.py [--agents 10000] [--latency 0.05]

1. Step: N agents whose ``astep`` is ``await asyncio.sleep(latency)``, stepped by
   ``asyncio.gather(..., return_exceptions=True)`` and by ``step_agents_parallel`` (Trio
   guest mode on the same loop), alternately; prints the best of ``--rounds`` each and
   the ratio (target, issue 6: <= 1.5).
2. Import cost: a 10,000-task ``asyncio.gather`` in a fresh process that imported mesa
   and trio_mesa.compat, vs. one that imported only mesa (target, issue 3: within 5%).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

GATHER_PROBE = """
import asyncio, gc, sys, time
import mesa
if sys.argv[1] == "compat":
    import trio_mesa.compat
async def noop():
    await asyncio.sleep(0)
async def main():
    best = float("inf")
    for _ in range(15):
        t = time.perf_counter()
        await asyncio.gather(*(noop() for _ in range(10_000)))
        best = min(best, time.perf_counter() - t)
    return best
print(asyncio.run(main()))
"""


def bench_step(n: int, latency: float, rounds: int) -> tuple[float, float]:
    import mesa

    from trio_mesa.compat import step_agents_parallel

    class Agent(mesa.Agent):
        async def astep(self) -> None:
            await asyncio.sleep(latency)

    model = mesa.Model(rng=1)
    agents = [Agent(model) for _ in range(n)]

    async def main() -> tuple[float, float]:
        gather = ours = float("inf")
        for _ in range(rounds):
            t = time.perf_counter()
            await asyncio.gather(*(a.astep() for a in agents), return_exceptions=True)
            gather = min(gather, time.perf_counter() - t)
            t = time.perf_counter()
            report = await step_agents_parallel(agents)
            ours = min(ours, time.perf_counter() - t)
            assert len(report.ok) == n, report
        return gather, ours

    return asyncio.run(main())


def bench_import(rounds: int) -> tuple[float, float]:
    def probe(kind: str) -> float:
        out = subprocess.run(
            [sys.executable, "-c", GATHER_PROBE, kind], capture_output=True, text=True, check=True
        )
        return float(out.stdout)

    mesa_only = min(probe("mesa") for _ in range(rounds))
    with_compat = min(probe("compat") for _ in range(rounds))
    return mesa_only, with_compat


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    gather, ours = bench_step(args.agents, args.latency, args.rounds)
    print(
        f"step {args.agents} agents x {args.latency * 1000:.0f} ms: gather {gather:.3f} s, "
        f"step_agents_parallel {ours:.3f} s, ratio {ours / gather:.2f} (target <= 1.5); "
        f"{(ours - gather) / args.agents * 1e6:.1f} us/agent over gather"
    )
    mesa_only, with_compat = bench_import(3)
    print(
        f"10,000-task gather after import: mesa only {mesa_only * 1000:.1f} ms, mesa + "
        f"trio_mesa.compat {with_compat * 1000:.1f} ms, ratio {with_compat / mesa_only:.3f} "
        "(target <= 1.05)"
    )


if __name__ == "__main__":
    main()
