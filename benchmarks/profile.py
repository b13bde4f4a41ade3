"""Profile trio-mesa's per-agent path with pyinstrument: where a step's time goes.

    python benchmarks/profile.py [--agents N] [--steps 5] [--top 20] [--tree] [--only w1-mc,w2]

Each case runs in a fresh interpreter (``--case NAME`` is the child's entry) and prints
the functions with the most *self* time, summed over the whole call tree, as a share of
the profiled time; ``--tree`` adds pyinstrument's call tree. Cases:

- ``w1-bare``: the bare nursery of workload 1 (what the floor itself costs).
- ``w1-mc``: ``step_agents(timeout=60, max_concurrency=N)`` on no-op Trio agents.
- ``w1-limiter``: the same with a shared ``trio.CapacityLimiter(N)``.
- ``w2``: compat ``step_agents_parallel`` on an asyncio host, agents ``asyncio.sleep(0)``.
- ``w4``: ``run_step`` of asyncio agents (``asyncio.sleep(0)``) through trio-asyncio.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):
    sys.path.insert(0, str(ROOT))

CASES = ("w1-bare", "w1-mc", "w1-limiter", "w2", "w4")


def make_case(name: str, n: int):  # -> a zero-argument function running one step
    import mesa
    import trio

    import trio_mesa

    model = mesa.Model(rng=1)
    if name.startswith("w1"):
        from benchmarks.w1_trio_noop import NoopTrioAgent

        agents = [NoopTrioAgent(model) for _ in range(n)]
        if name == "w1-bare":

            async def bare() -> None:
                async with trio.open_nursery() as nursery:
                    for agent in agents:
                        nursery.start_soon(agent.astep)

            return lambda: trio.run(bare)
        limiter = trio.CapacityLimiter(n)
        options = {"max_concurrency": n} if name == "w1-mc" else {"limiter": limiter}
        return lambda: trio.run(lambda: trio_mesa.step_agents(agents, timeout=60, **options))

    class YieldingAgent(mesa.Agent):
        async def astep(self) -> None:
            await asyncio.sleep(0)

    agents = [YieldingAgent(model) for _ in range(n)]
    if name == "w2":
        from trio_mesa.compat import step_agents_parallel

        return lambda: asyncio.run(step_agents_parallel(agents))
    return lambda: trio_mesa.run_step(agents)


def self_times(root) -> dict[tuple[str, str], float]:
    """Self time per function (name, file:line), summed over every place it appears."""
    totals: dict[tuple[str, str], float] = defaultdict(float)
    stack = [root]
    while stack:
        frame = stack.pop()
        if frame.identifier not in ("[self]",):
            where = f"{frame.file_path_short}:{frame.line_no}" if frame.file_path_short else ""
            totals[(frame.function, where)] += frame.total_self_time
        stack.extend(frame.children)
    return totals


def profile_case(name: str, n: int, steps: int, top: int, tree: bool) -> None:
    import logging

    from pyinstrument import Profiler

    logging.getLogger("trio_mesa").disabled = True
    step = make_case(name, n)
    step()  # warm-up: imports, caches
    profiler = Profiler(interval=0.0002)
    profiler.start()
    for _ in range(steps):
        step()
    profiler.stop()
    session = profiler.last_session
    root = session.root_frame()
    total = root.time
    print(f"== {name}: {steps} steps x {n:,} agents, {total:.2f} s profiled "
          f"({total / steps / n * 1e6:.1f} us/agent incl. profiler overhead)")  # fmt: skip
    ranked = sorted(self_times(root).items(), key=lambda kv: -kv[1])[:top]
    for (function, where), seconds in ranked:
        print(f"  {seconds / total:6.1%}  {function:<40} {where}")
    if tree:
        print(profiler.output_text(unicode=True, color=False, show_all=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, help="default 10,000 (w4: 1,000)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--tree", action="store_true", help="also print the call tree")
    parser.add_argument("--only", help=f"comma-separated cases of {', '.join(CASES)}")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # the child's entry
    args = parser.parse_args()
    if args.case:
        n = args.agents or (1_000 if args.case == "w4" else 10_000)
        profile_case(args.case, n, args.steps, args.top, args.tree)
        return
    for case in args.only.split(",") if args.only else CASES:
        if case not in CASES:
            parser.error(f"unknown case {case!r}")
        extra = ["--tree"] if args.tree else []
        subprocess.run(
            [sys.executable, __file__, "--case", case, "--agents", str(args.agents or 0),
             "--steps", str(args.steps), "--top", str(args.top), *extra],
            check=True,
        )  # fmt: skip


if __name__ == "__main__":
    main()
