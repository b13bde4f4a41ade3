"""``examples/plot_failures.py`` runs headless, and its DataCollector table is exact."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

from fault_injection import expected_run
from trio_mesa import Status

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "plot_failures.py"


def _load():
    spec = importlib.util.spec_from_file_location("plot_failures", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_collected_figures_are_the_oracles() -> None:
    example = _load()
    report, frame = example.run()
    expected = expected_run(example.SCENARIO, example.SEED)
    assert len(report.steps) == len(expected.steps) == len(frame)
    for step, exp, (_, row) in zip(report.steps, expected.steps, frame.iterrows(), strict=True):
        (agent_step,) = step.reports
        assert {o.unique_id: o.status for o in agent_step} == exp.statuses
        assert row["ok"] == step.counts[Status.OK] == exp.counts[Status.OK]
        assert row["failed"] == step.counts[Status.FAILED] == exp.counts[Status.FAILED]
        assert row["timed_out"] == exp.counts[Status.TIMED_OUT]
        assert row["tokens"] == step.usage.total_tokens > 0
    assert frame["failed"].sum() > 0  # the plot has something to show


def test_the_example_runs_headless(tmp_path: Path) -> None:
    out = tmp_path / "failures.png"
    env = {**os.environ, "MPLBACKEND": "Agg"}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("run: 10/10 steps, 500 agent-steps")
    assert "ok  failed  timed_out  retries  tokens  cost" in proc.stdout
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "matplotlib is not installed" in proc.stdout
        assert not out.exists()
    else:
        assert f"plot written to {out}" in proc.stdout
        assert out.read_bytes().startswith(b"\x89PNG")
