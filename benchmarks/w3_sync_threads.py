"""Workload 3: sync agents that block (``time.sleep``), compat vs mesa-llm 0.3.2.

- 100 agents x 200 ms through ``step_agents_multithreaded``: mesa-llm submits them to a
  default ``ThreadPoolExecutor`` (cores + 4 threads); compat runs each in a worker thread
  (up to ``max_threads``, 128).
- 20 agents x 200 ms through ``step_agents_parallel``: mesa-llm calls each ``step()``
  inline, one after another. compat does the same by default (``sync_mode="inline"``,
  Mesa's deterministic order), and overlaps them under
  ``trio_mesa.compat.policy(sync_mode="thread")``: both are measured.

mesa-llm runs in a separate process (`benchmarks._mesa_llm_anchor`) that stays up, so
the two contenders still alternate round by round. The value is how many times faster
compat is (mesa-llm's median / compat's median).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import mesa

from benchmarks._harness import ROOT, Config, Row, alternate, ratio_row


class BlockingAgent(mesa.Agent):
    latency = 0.2

    def step(self) -> None:
        time.sleep(self.latency)


class Anchor:
    """The mesa-llm process: send a command, read the seconds it measured."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks._mesa_llm_anchor"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self.proc.stdout.readline().strip() != "ready":  # type: ignore[union-attr]
            raise RuntimeError("the mesa-llm anchor did not start")

    def time(self, kind: str, n: int, latency: float) -> float:
        self.proc.stdin.write(f"{kind} {n} {latency}\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return float(self.proc.stdout.readline())  # type: ignore[union-attr]

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        self.proc.wait(timeout=30)


def measure(
    rounds: int, *, threaded: int = 100, serial: int = 20, latency: float = 0.2
) -> list[Row]:
    from trio_mesa import compat

    BlockingAgent.latency = latency
    model = mesa.Model(rng=1)
    many = [BlockingAgent(model) for _ in range(threaded)]
    few = [BlockingAgent(model) for _ in range(serial)]

    def compat_parallel() -> float:
        t = time.perf_counter()
        report = asyncio.run(compat.step_agents_parallel(few))
        elapsed = time.perf_counter() - t
        assert len(report.ok) == serial, report
        return elapsed

    def compat_parallel_threads() -> float:
        with compat.policy(sync_mode="thread"):
            return compat_parallel()

    def compat_multithreaded() -> float:
        t = time.perf_counter()
        report = compat.step_agents_multithreaded(many)
        elapsed = time.perf_counter() - t
        assert len(report.ok) == threaded, report
        return elapsed

    # Warm up compat (imports, the first event loop, the thread cache) without sleeping.
    BlockingAgent.latency = 0.0
    compat_multithreaded()
    compat_parallel()
    BlockingAgent.latency = latency
    anchor = Anchor()
    try:
        samples = alternate(
            {
                "mesa-llm multithreaded": lambda: anchor.time("multithreaded", threaded, latency),
                "compat multithreaded": compat_multithreaded,
                "mesa-llm parallel": lambda: anchor.time("parallel", serial, latency),
                "compat parallel": compat_parallel,
                "compat parallel, sync_mode=thread": compat_parallel_threads,
            },
            rounds,
            warmup=0,
        )
    finally:
        anchor.close()
    ms = f"{latency * 1000:.0f} ms"
    return [
        ratio_row("3", f"{threaded} sync x {ms}: step_agents_multithreaded, times faster "
                  "than mesa-llm", samples, "compat multithreaded", "mesa-llm multithreaded",
                  op=">=", target=12, faster=True),
        ratio_row("3", f"{serial} sync x {ms}: step_agents_parallel (default, inline), "
                  "times faster than mesa-llm", samples, "compat parallel",
                  "mesa-llm parallel", op=">=", target=15, faster=True),
        ratio_row("3", f"{serial} sync x {ms}: step_agents_parallel under "
                  "policy(sync_mode='thread'), times faster than mesa-llm", samples,
                  "compat parallel, sync_mode=thread", "mesa-llm parallel",
                  op=">=", target=15, faster=True),
    ]  # fmt: skip


def run(config: Config) -> list[Row]:
    return measure(config.rounds(3, quick=1))
