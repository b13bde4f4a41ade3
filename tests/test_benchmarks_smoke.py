"""The benchmark harness still runs: tiny workloads, result structure only (no timings)."""

from __future__ import annotations

import io
import json
import math
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import run, w1_trio_noop, w2_compat_asyncio, w4_run_step_asyncio, w10_snapshot
from benchmarks._harness import Row


def check_rows(rows: list[Row], workload: str) -> None:
    assert rows
    for row in rows:
        assert row.workload == workload
        assert math.isfinite(row.value)
        assert row.rounds == 1
        assert (row.target is None) == (row.passed is None)
        json.dumps(row.to_json(), allow_nan=False)


def test_trio_noop_workload_compares_every_contender() -> None:
    rows = w1_trio_noop.measure(20, rounds=1, warmup=0)
    check_rows(rows, "1")
    assert [r.target for r in rows] == [1.3, 1.3, None, None, None, None]
    assert set(rows[0].medians) == {"trio-mesa max_concurrency", "bare nursery"}
    # The shared limiter's target is against a bare nursery honouring the same limiter.
    assert set(rows[1].medians) == {"trio-mesa limiter", "bare nursery + limiter"}


def test_compat_asyncio_workload() -> None:
    check_rows(w2_compat_asyncio.measure(20, 0.0, rounds=1, warmup=0), "2")


def test_run_step_workload() -> None:
    check_rows(w4_run_step_asyncio.measure(10, 0.001, rounds=1, warmup=0), "4")


def test_snapshot_workload() -> None:
    rows = w10_snapshot.measure(1, agents=20, latency=0.0)
    check_rows(rows, "10")
    assert [r.unit for r in rows] == ["%", "KiB"]


def test_table_shows_every_row_with_its_status() -> None:
    rows = w1_trio_noop.measure(10, rounds=1, warmup=0)
    out = io.StringIO()
    with redirect_stdout(out):
        run.print_table(rows, run.machine(), {})
    text = out.getvalue()
    assert all(r.name in text for r in rows)
    assert "<= 1.3x" in text and "context" in text


def test_bad_arguments_exit_2() -> None:
    with pytest.raises(SystemExit) as exc:
        run.main(["--only", "99"])
    assert exc.value.code == 2
