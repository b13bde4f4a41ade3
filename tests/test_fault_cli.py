"""``python -m fault_injection``: list, run, --json, and exit statuses 0/1/2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fault_injection import SCENARIOS
from fault_injection._cli import main


def test_list_names_every_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in SCENARIOS:
        assert name in out


def test_run_json_is_one_document_with_the_specified_keys(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", "flaky", "--agents", "7", "--steps", "3", "--seed", "5", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"scenario", "seed", "host", "steps", "mismatches"}
    assert (doc["scenario"], doc["seed"], doc["host"], doc["mismatches"]) == (
        "flaky",
        5,
        "trio",
        [],
    )
    assert len(doc["steps"]) == 3
    for step in doc["steps"]:
        assert set(step["statuses"]) == {str(u) for u in range(1, 8)}
        assert sum(step["counts"].values()) == 7
        assert set(step["counts"]) == {"ok", "failed", "timed_out", "cancelled", "skipped"}


def test_strict_and_interrupt_steps_say_what_they_raised(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", "interrupt", "--json"]) == 0
    steps = json.loads(capsys.readouterr().out)["steps"]
    assert steps[-1]["raised"] == "KeyboardInterrupt" and steps[-1]["statuses"] == {}
    assert main(["run", "dead-agent", "--strict", "--steps", "2", "--json"]) == 0
    steps = json.loads(capsys.readouterr().out)["steps"]
    assert [s["raised"] for s in steps] == ["StepFailed", "StepFailed"]


def test_run_prints_a_summary_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "dead-agent", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "dead-agent" in out and "matched" in out
    assert "mesa-llm 0.3 stepping, same plan: step 1 aborts" in out


def test_run_a_toml_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mine.toml"
    path.write_text("agents = 5\nsteps = 2\ntimeout = 3\n[faults]\nhang = 0.2\n")
    assert main(["run", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["scenario"] == "mine"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "no-such-scenario"], "unknown scenario 'no-such-scenario'"),
        (["run", "flaky", "--agents", "0"], "positive integer"),
        (["run", "flaky", "--steps", "x"], "positive integer"),
        (["run", "flaky", "--seed", "1.5"], "integer"),
        (["run", "flaky", "--host", "curio"], "invalid choice"),
        (["run"], "required"),
        (["explode"], "invalid choice"),
        ([], "required"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_bad_toml_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("agents = [")
    with pytest.raises(SystemExit) as info:
        main(["run", str(path)])
    assert info.value.code == 2 and "not valid TOML" in capsys.readouterr().err


def test_mismatch_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("trio_mesa.compat")
    # TRIO_MESA_STRICT=1 changes compat's policy behind the oracle's back.
    monkeypatch.setenv("TRIO_MESA_STRICT", "1")
    assert main(["run", "dead-agent", "--steps", "1", "--host", "asyncio", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["mismatches"]


def test_module_entry_point_prints_only_json() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "fault_injection", "run", "strict", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # exactly one document: json.loads rejects trailing data
    assert doc["scenario"] == "strict" and doc["mismatches"] == []


def test_run_lists_the_last_steps_failed_agents(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "dead-agent", "--agents", "6", "--steps", "2", "--seed", "3"]
    assert main([*argv, "--json"]) == 0
    last = json.loads(capsys.readouterr().out)["steps"][-1]["statuses"]
    not_ok = sorted(uid for uid, status in last.items() if status != "ok")
    assert not_ok  # the dead agent fails every call
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"step 2: the {len(not_ok)} agent(s) that did not succeed" in out
    for uid in not_ok:
        assert any(
            line.split()[:1] == [uid] or f"│ {uid} " in line or f" {uid} │" in line
            for line in out.splitlines()
        ), uid


def test_run_json_imports_neither_pytest_nor_rich() -> None:
    # The virtual clock comes without trio.testing (which imports pytest, 0.2 s), and
    # --json prints without rich: what the command does not need it does not import.
    code = (
        "import contextlib, io, sys\n"
        "from fault_injection._cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    status = main(['run', 'flaky', '--agents', '4', '--steps', '2', '--json'])\n"
        "print(status, sorted(m for m in ('pytest', 'trio.testing', 'rich') if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "[]"]


def test_the_virtual_clock_is_trios_mock_clock() -> None:
    import trio.testing

    from fault_injection._runner import _mock_clock

    clock = _mock_clock()
    assert type(clock) is trio.testing.MockClock
    assert clock.autojump_threshold == 0 and clock.rate == 0


def test_run_labels_virtual_and_wall_time_and_measures_the_virtual_one() -> None:
    # 200 agents x 3 steps at a quota of 50 requests/s (burst 50): at least
    # (requests - 50) / 50 seconds of virtual time, however fast the process ran.
    from fault_injection import run_scenario
    from fault_injection._cli import render_text

    result = run_scenario(SCENARIOS["quota"], agents=200)
    assert result.matched and result.quota is not None
    floor = (result.quota["admitted"] - 50) / 50
    assert result.model_seconds >= floor > 10
    assert sum(s.seconds for s in result.steps) == result.model_seconds
    text = " ".join(render_text(result, width=1000).split())
    assert (
        f"took {result.model_seconds:.2f} s of virtual time "
        f"({result.wall_time:.2f} s of wall-clock time)" in text
    )
    # the comparison with mesa-llm uses the measured virtual time, labelled
    assert f"trio-mesa: 3 steps (600 agent-steps) in {result.model_seconds:.1f} virtual s" in text


def test_run_with_a_checkpoint_then_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kept = tmp_path / "run"
    argv = ["run", "flaky", "--agents", "6", "--steps", "3", "--seed", "5"]
    assert main([*argv, "--checkpoint", str(kept)]) == 0
    out = capsys.readouterr().out
    assert "oracle: every outcome of all 3 steps matched." in out
    assert f"python -m fault_injection resume {kept}" in " ".join(out.split())
    # A finished run resumes to nothing new, and checks the whole run again.
    assert main(["resume", str(kept), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["mismatches"] == [] and len(doc["steps"]) == 3 and doc["resumed_after"] == [3]
    assert doc["checkpoint"] == str(kept)
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--checkpoint", str(kept)])
    assert exited.value.code == 2
    assert "holds a run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "quota", "--checkpoint", str(tmp_path / "q")])
    assert "quota cannot be resumed exactly" in capsys.readouterr().err
