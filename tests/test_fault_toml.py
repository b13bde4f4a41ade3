"""Scenarios from TOML: a good file runs; a bad one fails with a message naming the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from fault_injection import (
    FaultKind,
    LogNormal,
    ScenarioError,
    load_scenario,
    run_scenario,
    scenario_from_dict,
)

GOOD = """
name = "my-provider"
description = "what my provider does on a bad day"
agents = 12
steps = 3
seed = 4
timeout = 10.0
latency = { kind = "lognormal", median = 1.0, sigma = 0.8 }

[flavors]
asyncio = 3
sync = 1

[faults]
rate_limit = 0.1
malformed_json = 0.05

[[rules]]
kind = "hang"
share = 0.1
calls = [2]
"""


def test_a_good_file_loads_and_runs(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(GOOD)
    scenario = load_scenario(path)
    assert scenario.name == "my-provider" and scenario.agents == 12
    assert scenario.latency == LogNormal(1.0, 0.8)
    assert scenario.faults == {FaultKind.RATE_LIMIT: 0.1, FaultKind.MALFORMED_JSON: 0.05}
    assert scenario.rules[0].kind is FaultKind.HANG and scenario.rules[0].calls == (2,)
    assert run_scenario(scenario).matched


def test_name_defaults_to_the_file_stem(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text("agents = 2\nsteps = 1\n")
    assert load_scenario(path).name == "tiny"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("agents = [", "not valid TOML"),
        ("agnets = 3", r"unknown key\(s\) \['agnets'\]"),
        ("agents = 'ten'", "agents must be a positive integer"),
        ("[faults]\nrate_limit = 2", "probability"),
        ("[faults]\nhang = 0.1", "needs a timeout or a deadline"),
        ("[[rules]]\nkind = 'explode'", "unknown fault kind 'explode'"),
        ("[[rules]]\nshare = 0.5", "missing 'kind'"),
        ("[[rules]]\nkind = 'hang'\nwhen = 3", r"rules\[0\]: unknown key"),
        ("latency = { kind = 'gamma' }", "'kind' must be one of"),
        ("latency = { kind = 'uniform', low = 1 }", "bad parameters"),
        ("flavors = 3", "'flavors' must be a table"),
        ("__import__ = 'os'", "unknown key"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=match) as info:
        load_scenario(path)
    assert str(path) in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "nope.toml")


def test_from_dict_needs_a_name() -> None:
    with pytest.raises(ScenarioError):
        scenario_from_dict({"agents": 3})


def test_the_documented_scenario_file_loads_and_matches_the_oracle() -> None:
    # docs/guides/fault-injection.md shows examples/my-provider.toml in full, verbatim.
    root = Path(__file__).parent.parent
    path = root / "examples" / "my-provider.toml"
    guide = (root / "docs" / "guides" / "fault-injection.md").read_text()
    assert f"```toml\n{path.read_text()}```" in guide, "the guide's copy of the file is stale"
    scenario = load_scenario(path)
    assert scenario.name == "my-provider" and scenario.retry is not None
    assert {rule.kind for rule in scenario.rules} == {FaultKind.HANG, FaultKind.CONNECTION_ERROR}
    result = run_scenario(scenario, seed=7)
    assert result.matched, result.mismatches
