"""What a failed agent leaves on stderr, run the way users run it: a fresh interpreter.

With logging unconfigured (the compat drop-in's usual case) each failure is one short
line; with any handler configured the records go there, and nothing is printed twice.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from trio_mesa._log import LINES_PER_STEP, MAX_ROWS, WIDTH, fit

AGENTS = textwrap.dedent(
    """
    import asyncio, logging, threading
    import mesa
    from trio_mesa import compat

    class Negotiator(mesa.Agent):
        def step(self):
            if self.unique_id % 2:
                raise RuntimeError(f"malformed JSON from the LLM for agent {self.unique_id}")

    class Market(mesa.Model):
        def __init__(self, n):
            super().__init__(rng=42)
            self.parallel_stepping = True
            Negotiator.create_agents(self, n)

        def step(self):
            self.agents.shuffle_do("step")
    """
)

RUNS = {
    "shuffle_do": """
compat.enable_automatic_parallel_stepping("threading")
Market(N).step()
""",
    "step_agents_parallel": """
model = Market(N)
asyncio.run(compat.step_agents_parallel(list(model.agents)))
""",
    "step_agents_multithreaded": """
model = Market(N)
compat.step_agents_multithreaded(list(model.agents))
""",
}


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("TRIO_MESA_STRICT", None)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done


def _agent_lines(stderr: str) -> list[str]:
    """The fallback's records, one string each (continuation rows joined)."""
    records: list[str] = []
    for line in stderr.splitlines():
        if line.startswith("    ") and records:
            records[-1] += " " + line.strip()
        else:
            records.append(line)
    return [r for r in records if r.startswith("trio_mesa: agent")]


@pytest.mark.parametrize("entry", sorted(RUNS))
def test_unconfigured_drop_in_prints_each_failed_agent_once(entry: str) -> None:
    done = _run(AGENTS + "N = 6\n" + RUNS[entry])
    assert sorted(_agent_lines(done.stderr)) == [
        f"trio_mesa: agent {uid} (Negotiator) failed: RuntimeError: malformed JSON from "
        f"the LLM for agent {uid}"
        for uid in (1, 3, 5)
    ]
    assert "logging.basicConfig()" in done.stderr  # the one-time hint: how to get more
    assert done.stderr.count("logging is not configured") == 1
    assert "Traceback" not in done.stderr
    assert all(len(line) <= WIDTH for line in done.stderr.splitlines())


@pytest.mark.parametrize(
    "configure",
    [
        "logging.basicConfig()",
        'logging.getLogger("trio_mesa").addHandler(logging.StreamHandler())',
        "logging.basicConfig(level=logging.ERROR)",
    ],
)
def test_configured_logging_gets_the_records_and_nothing_twice(configure: str) -> None:
    done = _run(AGENTS + configure + "\nN = 6\n" + RUNS["shuffle_do"])
    assert "trio_mesa: agent" not in done.stderr  # no fallback line next to the records
    assert "logging is not configured" not in done.stderr
    for uid in (1, 3, 5):
        assert done.stderr.count(f"agent {uid} (Negotiator) failed") == 1
    assert done.stderr.count("Traceback") == 3  # the structured records, exc_info kept


def test_a_null_handler_on_the_trio_mesa_logger_silences_it() -> None:
    code = 'logging.getLogger("trio_mesa").addHandler(logging.NullHandler())\n'
    done = _run(AGENTS + code + "N = 6\n" + RUNS["shuffle_do"])
    assert done.stderr == ""


def test_a_thousand_failures_print_a_bounded_summary() -> None:
    done = _run(AGENTS + "N = 2000\n" + RUNS["shuffle_do"])
    assert len(_agent_lines(done.stderr)) == LINES_PER_STEP
    summary = done.stderr[done.stderr.index("trio_mesa: ... and") :]
    assert " ".join(summary.split()) == (
        f"trio_mesa: ... and {1000 - LINES_PER_STEP} more not shown (logging.basicConfig() "
        "shows all); model step 1: 1000 failed of 2000 agents"
    )
    assert len(done.stderr.splitlines()) <= 3 + LINES_PER_STEP * MAX_ROWS + 2


def test_a_hung_agent_with_no_timeout_is_named_on_stderr() -> None:
    # The hung thread is released by a logging filter (not a handler: that would count as
    # configured logging) once the warning is logged; SLOW_AFTER is shortened so that the
    # warning comes quickly, and nothing here depends on how quickly (the hung agent is
    # the model's only one: on a loaded machine a quick agent's thread can outlast 50 ms).
    code = AGENTS + textwrap.dedent(
        """
        import trio_mesa._slow_agents as slow
        slow.SLOW_AFTER = 0.05
        release = threading.Event()

        def on_record(record):
            if getattr(record, "trio_mesa_event", None) == "slow_agent":
                release.set()
            return True

        logging.getLogger("trio_mesa").addFilter(on_record)

        class Hung(mesa.Agent):
            def step(self):
                release.wait(50)  # the limit only keeps a missing warning from hanging

        model = Market(0)
        hung = Hung(model)
        compat.enable_automatic_parallel_stepping("threading")
        model.step()
        """
    )
    done = _run(code)
    (warning,) = [" ".join(r.split()) for r in _agent_lines(done.stderr) if "has run" in r]
    assert warning.startswith("trio_mesa: agent 1 (Hung) has run")
    assert "with no timeout the step waits for ever" in warning
    assert "configure(timeout=...)" in warning
    assert "worker thread, which cannot be killed" in warning


def test_fit_keeps_a_record_readable_at_80_columns() -> None:
    text = fit("agent 1 (A) failed: ValueError: line one\nline two " + "x" * 500)
    rows = text.splitlines()
    assert len(rows) == MAX_ROWS and all(len(row) <= WIDTH for row in rows)
    assert rows[0].startswith("agent 1 (A) failed: ValueError: line one line two")
    assert rows[-1].endswith(" ...")
