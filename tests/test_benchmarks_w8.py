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


def test_request_rows_hold_the_quota_as_published_to_issue_23s_targets() -> None:
    c = Measured(wall=7.7, finished=True, agents_ok=200, requests=404, rate_limited=4)
    wall, done, share = w8_quota.request_rows(
        "(c) compat, RateLimit(requests=50)", c, agents=200, floor=7.0, what="x", cap=60.0
    )
    assert math.isclose(wall.value, 1.1) and wall.target == 1.10 and wall.passed is True
    assert (done.value, done.passed) == (200, True)
    assert math.isclose(share.value, 100 * 4 / 404) and share.target == 1.0
    assert share.passed is True
    # A token rate whose floor for 65,000 tokens is 8.5 s: (65,000 - r) / r.
    r = w8_quota.token_rate(65_000)
    assert r == 6842 and math.isclose((65_000 - r) / r, 8.5, rel_tol=1e-3)
