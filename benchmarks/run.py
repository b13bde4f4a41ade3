"""Run trio-mesa's benchmark suite (issue 6) and print every workload against its target.

    python benchmarks/run.py [--quick] [--json] [--repeats N] [--only 1,3]

Each workload runs in a fresh interpreter (trio-asyncio and mesa-llm patch what they
import), alternates its contenders round by round and compares their medians. Exit
status 0 whatever the results (a benchmark reports; it does not gate), 2 on bad
arguments, 1 if a workload crashed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._harness import Config, Row, run_workload_in_child

WORKLOADS = {
    "1": ("w1_trio_noop", "no-op Trio agents: trio-mesa vs bare nursery (and asyncio.gather)"),
    "2": ("w2_compat_asyncio", "compat on asyncio, 10,000 x 50 ms vs asyncio.gather"),
    "3": ("w3_sync_threads", "blocking sync agents: compat vs mesa-llm 0.3.2"),
    "4": ("w4_run_step_asyncio", "1,000 asyncio agents x 100 ms through run_step"),
    "5": ("w5_import_cost", "import cost of trio_mesa.compat on asyncio.gather"),
    "6": ("w6_memory", "peak RSS growth per agent, 100,000-agent step"),
    "7": ("w7_fault_slow_tail", "fault_injection slow-tail 100 x 100, virtual time"),
    "8": ("w8_quota", "200 mesa-llm CoT agents vs a 50 requests/s quota: mesa-llm vs compat"),
    "9": ("w9_seam", "the request seam's cost per request, 100 agents x 10 requests"),
    "10": ("w10_snapshot", "run directory snapshots: 1,000 agents x 100 ms, every=1"),
}


def machine() -> dict[str, object]:
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def fmt_value(row: Row) -> str:
    if math.isnan(row.value):
        return "-"
    if row.unit == "x":
        return f"{row.value:.2f}x"
    if row.unit == "B/agent":
        return f"{row.value:,.0f} B/agent"
    if row.unit == "s":
        return f"{row.value:.2f} s"
    if row.unit == "%":
        return f"{row.value:.1f}%"
    return f"{row.value:g} {row.unit}"


def fmt_target(row: Row) -> str:
    if row.target is None:
        return "context"
    if row.unit == "B/agent":
        return f"{row.op} {row.target / 1024:g} KiB"
    if row.unit == "x":
        return f"{row.op} {row.target:g}x"
    if row.unit == "%":
        return f"{row.op} {row.target:g}%"
    return f"{row.op} {row.target:g} {row.unit}"


def status(row: Row) -> str:
    return {True: "PASS", False: "FAIL", None: ""}[row.passed]


def print_table(rows: list[Row], info: dict[str, object], errors: dict[str, str]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text without rich
        for row in rows:
            print(f"{row.workload:>2} {row.name:<90} {row.detail:>22} {fmt_value(row):>14} "
                  f"{fmt_target(row):>10} {status(row)}")  # fmt: skip
    else:
        table = Table(
            title=f"trio-mesa benchmarks, {info['date']}, Python {info['python']}, "
            f"{info['cpus']} CPUs, load {info['load_average']}",
            caption="medians of alternated rounds; value = ratio of medians unless a unit says",
        )
        for column in ("#", "workload", "medians", "rounds", "value", "target", "status"):
            table.add_column(column, justify="right" if column != "workload" else "left")
        colour = {True: "[green]PASS[/]", False: "[bold red]FAIL[/]", None: ""}
        for row in rows:
            table.add_row(row.workload, row.name, row.detail, str(row.rounds), fmt_value(row),
                          fmt_target(row), colour[row.passed])  # fmt: skip
        Console(width=200).print(table)
    for number, error in errors.items():
        print(f"workload {number} crashed:\n{error}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, few rounds: a smoke run")
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    parser.add_argument("--repeats", type=int, help="rounds per workload (default: its own)")
    parser.add_argument("--only", help="comma-separated workload numbers, e.g. 1,3")
    args = parser.parse_args(argv)
    chosen = args.only.split(",") if args.only else list(WORKLOADS)
    unknown = [w for w in chosen if w not in WORKLOADS]
    if unknown or (args.repeats is not None and args.repeats < 1):
        parser.error(f"unknown workload(s) {unknown}" if unknown else "--repeats must be >= 1")
    config = Config(quick=args.quick, repeats=args.repeats)
    info = machine()
    rows: list[Row] = []
    errors: dict[str, str] = {}
    durations: dict[str, float] = {}
    for number in chosen:
        module, title = WORKLOADS[number]
        if not args.json:
            print(f"workload {number}: {title} ...", file=sys.stderr, flush=True)
        t = time.perf_counter()
        try:
            rows.extend(run_workload_in_child(module, config))
        except Exception as exc:  # one broken workload must not hide the others' results
            errors[number] = str(exc)
        durations[number] = round(time.perf_counter() - t, 1)
    if args.json:
        document = {
            "machine": info,
            "config": {"quick": args.quick, "repeats": args.repeats},
            "results": [row.to_json() for row in rows],
            "errors": errors,
            "durations_s": durations,
        }
        json.dump(document, sys.stdout, indent=1, allow_nan=False, default=str)
        print()
    else:
        print_table(rows, info, errors)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
