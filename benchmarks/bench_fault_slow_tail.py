"""Benchmark: ``run slow-tail --agents 100 --steps 100`` in virtual time (target: < 5 s).

Prints the import time, the oracle's time, the run's wall time (stepping plus checking
every step) and, for comparison, the same run with all-asyncio and all-Trio agents:
asyncio-flavored agents on a Trio host go through trio-asyncio, which costs most.
"""

from __future__ import annotations

import logging
import time

t0 = time.perf_counter()
import fault_injection as fi  # noqa: E402

imported = time.perf_counter() - t0
logging.getLogger("trio_mesa").disabled = True  # as the CLI does: failures are in the report


def bench(label: str, scenario: fi.Scenario) -> None:
    t = time.perf_counter()
    fi.expected_run(scenario, agents=100, steps=100)
    oracle = time.perf_counter() - t
    result = fi.run_scenario(scenario, agents=100, steps=100)
    assert result.matched, result.mismatches[:5]
    print(f"{label:<32} oracle {oracle:5.2f} s   run+check {result.wall_time:5.2f} s")


if __name__ == "__main__":
    print(f"import fault_injection (mesa, trio) {imported:5.2f} s")
    slow_tail = fi.SCENARIOS["slow-tail"]
    bench("slow-tail (as named)", slow_tail)
    bench("slow-tail, all trio agents", slow_tail.replace(flavors={"trio": 1}))
    bench("slow-tail, all asyncio agents", slow_tail.replace(flavors={"asyncio": 1}))
