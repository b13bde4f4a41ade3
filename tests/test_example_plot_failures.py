"""``examples/plot_failures.py`` runs headless, its DataCollector table is exact, and the
README's picture is what it draws today."""

from __future__ import annotations

import importlib.util
import os
import struct
import subprocess
import sys
from pathlib import Path

from fault_injection import expected_run
from trio_mesa import Status

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "plot_failures.py"
PICTURE = ROOT / "docs" / "_static" / "failures.png"


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


def _png_text(path: Path) -> dict[str, str]:
    """The PNG's tEXt chunks (keyword -> text)."""
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), path
    chunks, pos = {}, 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        if kind == b"tEXt":
            keyword, _, text = data[pos + 8 : pos + 8 + length].partition(b"\0")
            chunks[keyword.decode("latin-1")] = text.decode("latin-1")
        pos += 12 + length
    return chunks


def test_the_readme_picture_shows_what_the_example_computes_today() -> None:
    example = _load()
    _, frame = example.run()
    assert _png_text(PICTURE).get("Description") == example.figures(frame), (
        "docs/_static/failures.png is stale: "
        "python examples/plot_failures.py docs/_static/failures.png"
    )
    assert "docs/_static/failures.png" in (ROOT / "README.md").read_text()
