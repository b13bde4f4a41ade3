"""The asyncio host: every named scenario through ``trio_mesa.compat`` on ``asyncio.run``.

Real time, with each scenario's latencies scaled down (its ``real_time_scale``); the
outcome table must equal the Trio host's virtual-time one, agent for agent.
"""

from __future__ import annotations

import pytest

from fault_injection import SCENARIOS, run_scenario

pytest.importorskip("trio_mesa.compat")

# demo is in real seconds (about 9 s of sleeping); `make demo` runs it.
NAMES = sorted(n for n in SCENARIOS if n != "demo")


@pytest.mark.parametrize("name", NAMES)
def test_named_scenario_matches_the_oracle_on_asyncio(name: str) -> None:
    on_asyncio = run_scenario(SCENARIOS[name], host="asyncio")
    assert on_asyncio.mismatches == []
    assert on_asyncio.host == "asyncio" and on_asyncio.real_time
    on_trio = run_scenario(SCENARIOS[name])
    assert on_asyncio.outcome_table() == on_trio.outcome_table()


def test_demo_scenario_matches_on_asyncio_when_shrunk() -> None:
    result = run_scenario(SCENARIOS["demo"], host="asyncio", agents=30, steps=3)
    assert result.mismatches == []
    assert (
        result.outcome_table()
        == run_scenario(SCENARIOS["demo"], agents=30, steps=3).outcome_table()
    )


def test_a_policy_the_oracle_was_not_told_about_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # TRIO_MESA_STRICT=1 makes compat raise StepFailed where the scenario (and so the
    # oracle) says the step returns a report: the checker must say so.
    monkeypatch.setenv("TRIO_MESA_STRICT", "1")
    result = run_scenario(SCENARIOS["dead-agent"], host="asyncio", steps=1)
    assert not result.matched
    assert any("expected it to return a report" in m for m in result.mismatches)
