"""What every workload shares: alternated timing, medians, result rows, child processes.

A workload module defines ``run(config) -> list[Row]`` and runs in a fresh child process
(``python -m benchmarks._child NAME CONFIG_JSON``), so that what one workload imports
(trio-asyncio patches asyncio; mesa-llm patches Mesa) never skews another. Contenders
are measured alternately within one process, round after round, and compared by the
ratio of their medians: on a shared 2-core machine absolute times are noise, side-by-side
ratios much less so.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

# litellm (imported by mesa-llm) fetches a model cost map from the internet at import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@dataclass(frozen=True)
class Config:
    """Sizes and repeats for one run; ``quick`` shrinks everything for a smoke run."""

    quick: bool = False
    repeats: int | None = None  # None: each workload's own default

    def rounds(self, default: int, quick: int = 1) -> int:
        if self.repeats is not None:
            return self.repeats
        return quick if self.quick else default


@dataclass
class Row:
    """One comparison with its target: ``value`` (a ratio, or bytes per agent) vs ``target``.

    ``op`` says which side passes: ``"<="`` (at most the target) or ``">="`` (at least).
    A row with no target is context, shown beside the targets it explains.
    """

    workload: str
    name: str
    value: float
    unit: str  # "x" for ratios, "B/agent", "s"
    detail: str  # the medians behind the value, for the table
    op: str | None = None
    target: float | None = None
    rounds: int = 0
    medians: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        return self.value <= self.target if self.op == "<=" else self.value >= self.target

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return data


def ratio_row(
    workload: str,
    name: str,
    samples: dict[str, list[float]],
    measured: str,
    baseline: str,
    *,
    op: str | None = None,
    target: float | None = None,
    faster: bool = False,
) -> Row:
    """Compare the medians of ``measured`` and ``baseline``.

    The value is ``measured / baseline`` (how many times the baseline's time), or with
    ``faster`` ``baseline / measured`` (how many times faster than the baseline).
    """
    m = statistics.median(samples[measured])
    b = statistics.median(samples[baseline])
    value = b / m if faster else m / b
    return Row(
        workload=workload,
        name=name,
        value=value,
        unit="x",
        detail=f"{fmt_s(m)} vs {fmt_s(b)}",
        op=op,
        target=target,
        rounds=len(samples[measured]),
        medians={measured: m, baseline: b},
        samples={measured: samples[measured], baseline: samples[baseline]},
    )


def fmt_s(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.1f} ms"


def alternate(
    contenders: dict[str, Callable[[], float]], rounds: int, *, warmup: int = 1
) -> dict[str, list[float]]:
    """Run each contender once per round, in rotating order; return its timed samples.

    Each contender returns the seconds it measured itself (so set-up such as starting an
    event loop stays out of it, or in, as the workload decides). A full collection runs
    before each sample so that one contender's garbage is not collected on another's
    clock. Warm-up rounds (imports, caches, thread pools) are not kept.
    """
    names = list(contenders)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            seconds = contenders[name]()
            if r >= warmup:
                samples[name].append(seconds)
    return samples


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def python_child(
    args: list[str], *, stdin: str | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` in the repository root with this interpreter; fail loudly."""
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"child {' '.join(args)[:200]} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
        )
    return proc


def run_workload_in_child(module: str, config: Config) -> list[Row]:
    """Run ``benchmarks.MODULE.run(config)`` in a fresh interpreter and return its rows."""
    proc = python_child(["-m", "benchmarks._child", module, json.dumps(asdict(config))])
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    return [Row(**{k: v for k, v in row.items() if k != "passed"}) for row in rows]
