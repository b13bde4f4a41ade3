"""Workload 8's rows and table, from made-up measurements (the workload itself takes ~30 s
of real HTTP against a quota, so the suite checks only what it reports and how)."""

from __future__ import annotations

import io
import json
import math
import sys
from contextlib import redirect_stdout
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import run, w8_quota
from benchmarks.w8_quota import Measured


def test_rows_compare_b_with_the_quota_floor_and_show_a_as_context() -> None:
    a = Measured(wall=60.0, finished=False, agents_ok=120, requests=3000, rate_limited=2500)
    b = Measured(wall=8.0, finished=True, agents_ok=200, requests=410, rate_limited=10)
    rows = w8_quota.rows(a, b, agents=200, calls=400, rate=50.0, burst=50, cap=60.0)
    assert [r.workload for r in rows] == ["8"] * 5
    floor, done, share, a_wall, a_done = rows
    assert floor.value == 8.0 / 7.0 and floor.passed is True  # (400 - 50) / 50 = 7 s
    assert (done.value, done.passed) == (200, True)
    assert math.isclose(share.value, 100 * 10 / 410) and share.passed is True
    assert a_wall.passed is None and a_wall.detail == "cut off at 60 s"
    assert a_done.detail == "3000 requests, 2500 x 429"
    for row in rows:
        json.dumps(row.to_json(), allow_nan=False)
    out = io.StringIO()
    with redirect_stdout(out):
        run.print_table(rows, run.machine(), {})
    text = out.getvalue()
    assert ">= 200 agents" in text and "<= 5%" in text and "1.14x" in text
    assert "8" in run.WORKLOADS and run.WORKLOADS["8"][0] == "w8_quota"


def test_b_options_follow_what_trio_mesa_provides() -> None:
    import trio_mesa

    assert ("retry" in w8_quota.B_OPTIONS) == hasattr(trio_mesa, "Retry")
    assert ("rate_limit" in w8_quota.B_OPTIONS) == hasattr(trio_mesa, "RateLimit")
