"""Workload 7: ``python -m fault_injection run slow-tail --agents 100 --steps 100``, virtual time.

The wall time of the whole command as a user types it (interpreter start, imports, 100
steps of 100 agents, checking every outcome against the oracle, printing the JSON
document, interpreter exit), alternated with a process that only imports what the
command imports, to show how much of it is import. The run must also match its oracle
(exit status 0).

The import process ends as the command does: with the import-time heap frozen
(``gc.freeze()``, see ``fault_injection/__main__.py``). Without that, its interpreter
exit alone spends 0.2 s collecting Mesa's objects, which the command no longer pays.
"""

from __future__ import annotations

import statistics
import time

from benchmarks._harness import Config, Row, alternate, fmt_s, python_child

COMMAND = ["-m", "fault_injection", "run", "slow-tail", "--agents", "100", "--steps", "100"]
IMPORT = "import gc, fault_injection._cli; gc.freeze()"  # what python -m fault_injection does


def wall(args: list[str]) -> float:
    t = time.perf_counter()
    python_child(args)  # raises on a non-zero exit: a mismatch with the oracle
    return time.perf_counter() - t


def measure(rounds: int) -> list[Row]:
    samples = alternate(
        {
            "cli": lambda: wall([*COMMAND, "--json"]),
            "import": lambda: wall(["-c", IMPORT]),
        },
        rounds,
        warmup=0,
    )
    cli, imp = (statistics.median(samples[k]) for k in ("cli", "import"))
    return [
        Row(
            workload="7",
            name="fault_injection run slow-tail --agents 100 --steps 100 (whole command)",
            value=cli,
            unit="s",
            detail=f"{fmt_s(cli)} wall",
            op="<=",
            target=5.0,
            rounds=rounds,
            medians={"cli": cli},
            samples={"cli": samples["cli"]},
        ),
        Row(
            workload="7",
            name="  of which: importing fault_injection (and its CLI)",
            value=imp,
            unit="s",
            detail=f"{fmt_s(imp)} wall; the rest {fmt_s(cli - imp)}",
            rounds=rounds,
            medians={"import": imp},
            samples={"import": samples["import"]},
        ),
    ]


def run(config: Config) -> list[Row]:
    return measure(config.rounds(5, quick=1))
