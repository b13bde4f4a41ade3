"""Scenarios with a retry, a rate limit and a provider quota: plan, oracle, runs, TOML."""

from __future__ import annotations

import pytest
import trio

import trio_mesa
from fault_injection import (
    SCENARIOS,
    FakeLLM,
    FaultKind,
    FaultPlan,
    FaultRule,
    Fixed,
    Quota,
    RateLimitError,
    Scenario,
    ScenarioError,
    TokenBucket,
    expected_run,
    run_scenario,
    scenario_from_dict,
)
from fault_injection._cli import recovery_lines
from fault_injection._oracle import without_retries
from fault_injection._scenario import TRANSIENT_KINDS
from trio_mesa import Retry, Status

K = FaultKind
NO_JITTER = Retry(attempts=3, initial=0.5, max_delay=4.0, jitter=False)


def _scenario(**changes: object) -> Scenario:
    base = Scenario(
        name="t",
        agents=1,
        steps=2,
        latency=Fixed(1.0),
        timeout=10,
        retry=NO_JITTER,
        real_time_scale=1.0,  # the band kept clear of the limit: 0.05 s or 5%
    )
    return base.replace(**changes)


def test_transient_kinds_are_what_the_engine_retries() -> None:
    plan = FaultPlan(Scenario(name="k", agents=1))
    client = FakeLLM(plan, 1)
    for kind in K:
        if kind in (K.OK, K.HANG, K.INTERRUPT, K.MALFORMED_JSON, K.BAD_TOOL_CALL):
            continue
        exc = client._exception(plan.call(1, 1).__class__(1, 1, plan.flavors[1], kind, 1.0, 1.0))
        assert trio_mesa.is_transient(exc) == (kind in TRANSIENT_KINDS), kind


def test_a_retry_is_the_agents_next_planned_call() -> None:
    # Calls 1 and 2 fail with a 500; call 3 succeeds: step 1 takes three attempts
    # (waits 0.5 and 1.0), so step 2 starts at call 4.
    s = _scenario(rules=(FaultRule(K.SERVER_ERROR, calls=(1, 2)),))
    run = expected_run(s)
    first, second = run.steps
    assert first.statuses == {1: Status.OK} and first.attempts == {1: 3}
    assert first.calls_made == {1: 3} and first.calls[1].call == 3
    assert run.plan.position(1, 2)[0] == 2 and run.plan.position(1, 3)[0] == 3
    assert run.plan.first_call(1, 2) == 4
    assert second.attempts == {1: 1} and second.calls_made == {1: 4}
    # 1 s + 0.5 s wait + 1 s + 1.0 s wait + 1 s, each latency a hair over 1 s (the grid)
    assert 4.5 < first.ends[1] < 4.51


def test_retries_stop_at_the_attempts_and_at_the_time_limit() -> None:
    always = (FaultRule(K.CONNECTION_ERROR, calls=tuple(range(1, 20))),)
    run = expected_run(_scenario(rules=always))
    assert [e.attempts[1] for e in run.steps] == [3, 3]
    assert [e.statuses[1] for e in run.steps] == [Status.FAILED] * 2
    assert run.steps[1].calls_made == {1: 6}
    # timeout 3: attempt 1 ends at ~1, the wait ends at ~1.5, attempt 2 at ~2.5; its wait
    # of 1.0 would end past 3, so the agent gives up with its exception after 2 attempts.
    tight = expected_run(_scenario(rules=always, timeout=3))
    assert tight.steps[0].attempts == {1: 2} and tight.steps[0].statuses == {1: Status.FAILED}
    # a 429 asking for 30 s at timeout 10: no retry at all
    storm = expected_run(
        _scenario(rules=(FaultRule(K.RATE_LIMIT, calls=(1,)),), retry_afters=(30.0,))
    )
    assert storm.steps[0].attempts == {1: 1} and storm.steps[0].statuses == {1: Status.FAILED}


def test_an_attempt_running_at_the_timeout_times_out() -> None:
    rules = (
        FaultRule(K.SERVER_ERROR, calls=(1,)),
        FaultRule(K.OK, calls=(2,), latency=Fixed(9.0)),
    )
    step = expected_run(_scenario(rules=rules)).steps[0]
    assert step.statuses == {1: Status.TIMED_OUT} and step.attempts == {1: 2}


def test_non_transient_failures_are_not_retried() -> None:
    for kind in (K.MALFORMED_JSON, K.CONTENT_FILTER, K.BAD_TOOL_CALL):
        step = expected_run(_scenario(rules=(FaultRule(kind, calls=(1,)),))).steps[0]
        assert step.attempts == {1: 1} and step.statuses == {1: Status.FAILED}, kind


def test_without_a_retry_the_plan_is_unchanged() -> None:
    for name, s in SCENARIOS.items():
        if s.retry is None:
            continue
        plain = s.replace(retry=None, rate_limit=None, quota=None)
        run = expected_run(plain)
        assert all(set(e.attempts.values()) == {1} for e in run.steps), name
        assert without_retries(expected_run(s)).steps[0].calls == run.steps[0].calls


@pytest.mark.parametrize("flavors", [{"asyncio": 1}, {"trio": 1}, {"sync": 1}])
def test_retry_scenario_matches_the_oracle_for_every_flavor(flavors: dict[str, float]) -> None:
    s = Scenario(
        name="r",
        agents=30,
        steps=4,
        flavors=flavors,
        latency=Fixed(0.4),
        faults={K.SERVER_ERROR: 0.2, K.RATE_LIMIT: 0.1, K.MALFORMED_JSON: 0.05},
        retry_afters=(0.25, 0.5, 3.0),
        timeout=2,
        retry=Retry(attempts=4, initial=0.125, jitter=False),
        real_time_scale=0.25,
    )
    result = run_scenario(s)
    assert result.matched, result.mismatches
    assert sum(st.retried for st in result.steps) > 0


def test_demo_recovers_most_transient_failures_and_says_so() -> None:
    result = run_scenario(SCENARIOS["demo"], agents=40, steps=3)
    assert result.matched, result.mismatches
    (line,) = recovery_lines(result)
    plain = without_retries(result.expected)
    lost = sum(e.lost for e in result.expected.steps)
    lost_without = sum(e.lost for e in plain.steps)
    assert lost < lost_without
    assert line.startswith(f"retries: {lost} of 120 agent-steps lost with Retry(attempts=3), ")
    assert f", {lost_without} without it" in line
    full = expected_run(SCENARIOS["demo"])
    assert sum(e.lost for e in full.steps) * 1.5 < sum(e.lost for e in without_retries(full).steps)


@pytest.mark.parametrize("host", ["trio", "asyncio"])
def test_quota_completes_every_agent_without_a_429(host: str) -> None:
    result = run_scenario(SCENARIOS["quota"], host=host, agents=60 if host == "asyncio" else None)
    assert result.matched, result.mismatches
    assert all(set(st.statuses.values()) == {Status.OK} for st in result.steps)
    assert result.quota is not None and result.quota["refused"] == 0
    attempts = sum(st.attempts for st in result.steps)
    assert result.quota["admitted"] == attempts
    assert attempts == sum(sum(e.attempts.values()) for e in result.expected.steps)


async def test_the_fake_quota_refuses_with_an_honest_retry_after(mock_clock: object) -> None:
    s = Scenario(name="q", agents=1, quota=Quota(2, burst=1), rate_limit=2, latency=Fixed(0))
    bucket = TokenBucket(s.quota, clock=trio.current_time)  # type: ignore[arg-type]
    client = FakeLLM(FaultPlan(s), 1, quota=bucket)
    await client.trio_acompletion("hi")
    with pytest.raises(RateLimitError) as info:
        await client.trio_acompletion("hi")
    # the first call slept 2**-11 s, so the bucket holds 2**-10 tokens
    assert info.value.retry_after == pytest.approx(0.5 - 2**-11) and client.calls == 2
    await trio.sleep(0.5)
    await client.trio_acompletion("hi")
    assert bucket.refused == 1 and bucket.admitted == 2


def test_policy_scales_retry_and_rate_limit() -> None:
    s = SCENARIOS["quota"]
    policy = s.policy(0.02)
    assert policy.retry is not None and policy.retry.initial == pytest.approx(0.25 * 0.02)
    assert policy.rate_limit is not None and policy.rate_limit.rate == pytest.approx(50 / 0.02)
    assert s.policy().rate_limit is not policy.rate_limit  # a fresh limit per run


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"retry": {"attempts": 0}}, "retry: attempts"),
        ({"retry": {"attempts": 2, "tries": 1}}, "unknown key(s) ['tries']"),
        ({"retry": {"jitter": True}}, "jitter must be false"),
        ({"retry": 3}, "retry must be a trio_mesa.Retry"),
        ({"retry_afters": []}, "retry_afters must be a non-empty list"),
        ({"rate_limit": 0}, "rate_limit must be a positive"),
        ({"rate_limit_burst": 2}, "rate_limit_burst needs a rate_limit"),
        ({"rate_limit": 5, "timeout": 3}, "rate_limit with a timeout"),
        ({"quota": 5}, "quota (5 requests/s, burst 5) needs a rate_limit"),
        ({"quota": {"rate": 5}, "rate_limit": 5}, "quota must be a Quota"),
        ({"quota": 5, "rate_limit": 6}, "no faster and no burstier"),
        (
            {"retry": {}, "deadline": 3, "flavors": {"sync": 1}},
            "retry with sync agents and a deadline",
        ),
        (
            {"retry": {}, "timeout": 3, "rules": [{"kind": "interrupt"}]},
            "retry with 'interrupt' faults",
        ),
    ],
)
def test_toml_keys_are_validated(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ScenarioError) as info:
        scenario_from_dict({"name": "bad", **changes}, source="bad.toml")
    assert message in str(info.value) and str(info.value).startswith("bad.toml: ")


def test_toml_retry_table_and_quota() -> None:
    s = scenario_from_dict(
        {
            "name": "ok",
            "retry": {"attempts": 4, "initial": 0.5},
            "rate_limit": 10,
            "rate_limit_burst": 2,
            "quota": 10,
            "retry_afters": [0.5, 1],
        }
    )
    assert s.retry == Retry(attempts=4, initial=0.5, jitter=False)
    assert s.quota == Quota(10) and s.retry_afters == (0.5, 1.0)
    assert run_scenario(s, agents=30, steps=2).matched
