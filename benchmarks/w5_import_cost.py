"""Workload 5: what importing ``trio_mesa.compat`` costs unrelated asyncio code.

A 10,000-task ``asyncio.gather`` of ``asyncio.sleep(0)`` coroutines, timed in a fresh
process that imported mesa and trio_mesa.compat, vs one that imported only mesa (mesa
alone already slows it, through the garbage collector: that is the baseline, not ours).
The two kinds of process alternate; each times the gather ``GATHERS`` times and reports
its median; the value is the ratio of the medians of those medians.
"""

from __future__ import annotations

from benchmarks._harness import Config, Row, alternate, python_child, ratio_row

GATHERS = 10

PROBE = """
import asyncio, statistics, sys, time
import mesa
if sys.argv[1] == "compat":
    import trio_mesa.compat
async def noop():
    await asyncio.sleep(0)
async def main(n):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        await asyncio.gather(*(noop() for _ in range(10_000)))
        times.append(time.perf_counter() - t)
    return statistics.median(times)
print(asyncio.run(main(int(sys.argv[2]))))
"""


def probe(kind: str) -> float:
    return float(python_child(["-c", PROBE, kind, str(GATHERS)]).stdout)


def measure(rounds: int) -> list[Row]:
    samples = alternate(
        {"mesa only": lambda: probe("mesa"), "mesa + trio_mesa.compat": lambda: probe("compat")},
        rounds,
        warmup=0,
    )
    return [
        ratio_row(
            "5",
            "10,000-task asyncio.gather after import: mesa + trio_mesa.compat / mesa only",
            samples,
            "mesa + trio_mesa.compat",
            "mesa only",
            op="<=",
            target=1.05,
        )
    ]


def run(config: Config) -> list[Row]:
    return measure(config.rounds(5, quick=2))
