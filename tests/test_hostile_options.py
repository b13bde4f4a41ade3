"""Hostile options and scenarios are refused before anything runs (issue 15, classes 1, 4).

Hypothesis generates values of every type and range for every option of every entry
point (both hosts, compat's configure), of the policy values, and of `Scenario` and its
TOML files. The promise checked: a valid value is accepted; anything else is a
`TypeError` or `ValueError` (`ScenarioError` for files) naming the option, raised before
any agent ran; never another exception, never silent acceptance.
"""

from __future__ import annotations

import asyncio
import math
import string
from typing import Any

import mesa
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_mesa
from fault_injection import Scenario, ScenarioError, load_scenario, scenario_from_dict
from fault_injection._scenario import MAX_AGENTS, MAX_STEPS
from trio_mesa import CircuitBreaker, RateLimit, Retry, StepPolicy, compat
from trio_mesa._checks import MAX_COUNT

HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.integers(max_value=-1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from(["true", "false", "no", "yes", "0", "1", "inline", "thread"]),
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.builds(object),
)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fits_float(v: Any) -> bool:
    try:
        float(v)
    except OverflowError:
        return False
    return True


def _seconds(v: Any, *, none: bool = True, inf: bool = True) -> bool:
    if v is None:
        return none
    if not _is_number(v) or not _fits_float(v) or math.isnan(v) or v < 0:
        return False
    return inf or math.isfinite(v)


def _count(v: Any, *, none: bool = True) -> bool:
    return (v is None and none) or (
        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_COUNT
    )


# What StepPolicy accepts, option by option: an independent statement of the rules.
VALID = {
    "strict": lambda v: v is True or v is False,
    "fail_fast": lambda v: v is True or v is False,
    "abandon_threads": lambda v: v is True or v is False,
    "shuffle": lambda v: v is None or v is True or v is False,
    "timeout": _seconds,
    "deadline": _seconds,
    "max_concurrency": _count,
    "max_threads": lambda v: _count(v, none=False),
    "sync_mode": lambda v: v in ("inline", "thread") and isinstance(v, str),
    "retry": lambda v: v is None,
    "rate_limit": lambda v: v is None,
    "breaker": lambda v: v is None,
}


class Counted(mesa.Agent):
    calls = 0

    def step(self) -> None:
        Counted.calls += 1


class SteppingModel(mesa.Model):
    """A model whose own step steps its agents (what `simulate` drives)."""

    def step(self) -> None:
        self.agents.shuffle_do("step")


def _model() -> mesa.Model:
    model = SteppingModel(rng=0)
    Counted(model)
    Counted(model)
    return model


def _run(entry: str, model: mesa.Model, **options: Any) -> Any:
    if entry == "run_step":
        return trio_mesa.run_step(model.agents, **options)
    if entry == "step_agents":

        async def main() -> Any:
            return await trio_mesa.step_agents(model.agents, **options)

        return trio.run(main)
    if entry == "aio_step_agents":
        return asyncio.run(trio_mesa.aio_step_agents(model.agents, **options))
    if entry == "simulate":
        return trio_mesa.simulate(model, 1, progress=False, **options)
    if entry == "aio_simulate":
        return asyncio.run(trio_mesa.aio_simulate(model, 1, progress=False, **options))
    assert entry == "compat.configure"
    before = compat.configure()
    try:
        return compat.configure(**options)
    finally:
        compat.configure(**before.as_kwargs())


ENTRIES = [
    "run_step",
    "step_agents",
    "aio_step_agents",
    "simulate",
    "aio_simulate",
    "compat.configure",
]


@pytest.mark.parametrize("entry", ENTRIES)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(option=st.sampled_from(sorted(VALID)), value=HOSTILE)
def test_every_option_is_checked_the_same_on_every_entry_point(
    entry: str, option: str, value: Any
) -> None:
    model = _model()
    Counted.calls = 0
    if VALID[option](value):
        _run(entry, model, **{option: value})
        return
    with pytest.raises((TypeError, ValueError)) as info:
        _run(entry, model, **{option: value})
    assert type(info.value) in (TypeError, ValueError), repr(info.value)
    assert option in str(info.value)
    assert Counted.calls == 0


@pytest.mark.parametrize("entry", ["run_step", "step_agents", "aio_step_agents"])
@settings(max_examples=40, deadline=None)
@given(value=HOSTILE)
def test_a_policy_that_is_not_a_step_policy_is_a_type_error(entry: str, value: Any) -> None:
    if value is None:
        return
    Counted.calls = 0
    with pytest.raises(TypeError, match=r"policy must be a trio_mesa\.StepPolicy"):
        _run(entry, _model(), policy=value)
    assert Counted.calls == 0


@settings(max_examples=40, deadline=None)
@given(value=HOSTILE)
def test_a_clock_that_is_not_a_trio_clock_is_a_type_error(value: Any) -> None:
    if value is None:
        return
    Counted.calls = 0
    with pytest.raises(TypeError, match=r"clock must be a trio\.abc\.Clock"):
        trio_mesa.run_step(_model().agents, clock=value)
    assert Counted.calls == 0


POLICY_VALUES = {
    Retry: {
        "attempts": lambda v: _count(v, none=False),
        "initial": lambda v: _seconds(v, none=False, inf=False) and v <= 60,
        "max_delay": lambda v: _seconds(v, none=False, inf=False) and v >= 1,
        "jitter": lambda v: v is True or v is False,
        "honor_retry_after": lambda v: v is True or v is False,
        "max_retry_after": lambda v: _seconds(v, inf=False),
    },
    RateLimit: {
        "per": lambda v: _seconds(v, none=False, inf=False) and v > 0,
        "burst": _count,
    },
    CircuitBreaker: {
        "failure_rate": lambda v: _seconds(v, none=False, inf=False) and 0 < v <= 1,
        "min_calls": lambda v: _count(v, none=False),
        "window": lambda v: _seconds(v, none=False, inf=False) and v > 0,
        "reset_after": lambda v: _seconds(v, none=False, inf=False),
        "probes": lambda v: _count(v, none=False),
    },
}
BASE: dict[type, dict[str, Any]] = {RateLimit: {"rate": 10}}


@pytest.mark.parametrize("cls", list(POLICY_VALUES), ids=lambda c: c.__name__)
@settings(max_examples=120, deadline=None)
@given(data=st.data())
def test_policy_values_check_every_field(cls: type, data: st.DataObject) -> None:
    field = data.draw(st.sampled_from(sorted(POLICY_VALUES[cls])))
    value = data.draw(HOSTILE)
    kwargs = {**BASE.get(cls, {}), field: value}
    if POLICY_VALUES[cls][field](value):
        assert StepPolicy(**{_slot(cls): cls(**kwargs)})
        return
    with pytest.raises((TypeError, ValueError)) as info:
        cls(**kwargs)
    assert type(info.value) in (TypeError, ValueError)
    assert field in str(info.value)


def _slot(cls: type) -> str:
    return {Retry: "retry", RateLimit: "rate_limit", CircuitBreaker: "breaker"}[cls]


def _budget_count(v: Any) -> bool:
    return v is None or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 10**12)


BUDGET_FIELDS = {
    "max_calls": _budget_count,
    "max_tokens": _budget_count,
    "max_cost": lambda v: _seconds(v, inf=False),
    "max_lost_fraction": lambda v: _seconds(v, inf=False) and (v is None or v <= 1),
    "stop": lambda v: isinstance(v, str) and v in ("after_step", "now"),
}


@settings(max_examples=150, deadline=None)
@given(field=st.sampled_from(sorted(BUDGET_FIELDS)), value=HOSTILE)
def test_budget_checks_every_field(field: str, value: Any) -> None:
    if BUDGET_FIELDS[field](value):
        assert getattr(trio_mesa.Budget(**{field: value}), field) == value
        return
    with pytest.raises((TypeError, ValueError)) as info:
        trio_mesa.Budget(**{field: value})
    assert type(info.value) in (TypeError, ValueError)
    assert field in str(info.value)


@pytest.mark.parametrize("entry", ["simulate", "aio_simulate"])
@settings(max_examples=60, deadline=None)
@given(argument=st.sampled_from(["steps", "progress", "budget"]), value=HOSTILE)
def test_simulate_checks_its_own_arguments(entry: str, argument: str, value: Any) -> None:
    valid = {
        "steps": lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 3,
        "progress": lambda v: v is None or v is True or v is False,
        "budget": lambda v: v is None,
    }[argument]
    if argument == "steps" and _is_number(value) and 3 < value <= 10_000_000:
        return  # valid, but too long a run for a property test
    args: dict[str, Any] = {"steps": 1, "progress": False, argument: value}
    model = _model()
    Counted.calls = 0

    def run() -> Any:
        if entry == "simulate":
            return trio_mesa.simulate(model, **args)
        return asyncio.run(trio_mesa.aio_simulate(model, **args))

    if valid(value):
        report = run()
        assert len(report) == args["steps"] and Counted.calls == 2 * args["steps"]
        return
    with pytest.raises((TypeError, ValueError)) as info:
        run()
    assert type(info.value) in (TypeError, ValueError), repr(info.value)
    assert argument in str(info.value)
    assert Counted.calls == 0


# -- scenarios (class 4) --------------------------------------------------------------

SCENARIO_FIELDS = {
    "agents": lambda v: _count(v, none=False) and v <= MAX_AGENTS,
    "steps": lambda v: _count(v, none=False) and v <= MAX_STEPS,
    "timeout": lambda v: v is None or (_seconds(v, inf=False) and v > 0),
    "strict": lambda v: v is True or v is False,
    "real_time_scale": lambda v: _seconds(v, none=False, inf=False) and v > 0,
}


@settings(max_examples=150, deadline=None)
@given(field=st.sampled_from(sorted(SCENARIO_FIELDS)), value=HOSTILE)
def test_scenario_fields_are_checked(field: str, value: Any) -> None:
    if SCENARIO_FIELDS[field](value):
        assert getattr(Scenario("s", **{field: value}), field) == value
        return
    with pytest.raises((TypeError, ValueError)) as info:
        Scenario("s", **{field: value})
    assert type(info.value) in (TypeError, ValueError)
    assert field in str(info.value)


@settings(max_examples=100, deadline=None)
@given(weights=st.dictionaries(st.sampled_from(["asyncio", "trio", "sync"]), HOSTILE, min_size=1))
def test_flavor_weights_are_finite_non_negative_numbers(weights: dict[str, Any]) -> None:
    def ok(v: Any) -> bool:
        return _is_number(v) and _fits_float(v) and math.isfinite(v) and v >= 0

    if all(ok(v) for v in weights.values()) and sum(weights.values()) > 0:
        scenario = Scenario("s", flavors=weights)
        assert scenario.flavors == weights
        return
    with pytest.raises((TypeError, ValueError)) as info:
        Scenario("s", flavors=weights)
    assert type(info.value) in (TypeError, ValueError)
    assert "flavor" in str(info.value)


TOML_SCALARS = st.one_of(
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(string.ascii_letters + " _-", max_size=8),
)
KEYS = st.sampled_from(
    ["agents", "steps", "seed", "timeout", "deadline", "strict", "guard", "latency",
     "flavors", "faults", "rules", "retry", "quota", "rate_limit", "bogus"]
)  # fmt: skip


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"


TOML_VALUES = st.recursive(
    TOML_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["kind", "trio", "sync", "rate", "seconds", "x"]), inner)
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=st.dictionaries(KEYS, TOML_VALUES, max_size=4), depth=st.integers(0, 3000))
def test_any_toml_file_loads_or_is_a_scenario_error(
    tmp_path_factory: pytest.TempPathFactory, table: dict[str, Any], depth: int
) -> None:
    path = tmp_path_factory.mktemp("toml") / "hostile.toml"
    text = "\n".join(f"{k} = {_toml_value(v)}" for k, v in table.items())
    if depth > 2000:  # deep nesting: tomllib recurses
        text += "\nnested = " + "[" * depth + "]" * depth
    path.write_text(text + "\n")
    try:
        scenario = load_scenario(path)
    except ScenarioError as exc:
        assert str(path) in str(exc)
        return
    assert isinstance(scenario, Scenario)


@settings(max_examples=100, deadline=None)
@given(table=st.dictionaries(KEYS, TOML_VALUES, max_size=4))
def test_any_table_builds_or_is_a_scenario_error(table: dict[str, Any]) -> None:
    try:
        assert isinstance(scenario_from_dict(table, source="mine"), Scenario)
    except ScenarioError as exc:
        assert str(exc).startswith("mine")


def test_the_cli_exits_2_with_the_message_for_a_bad_file(tmp_path, capsys) -> None:
    from fault_injection._cli import main

    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(SystemExit) as info:
        main(["run", str(path)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert str(path) in err and "nested too deeply" in err and "Traceback" not in err
