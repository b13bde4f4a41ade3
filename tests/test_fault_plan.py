"""The fault plan: seeded, order-independent, and never tying a latency with a limit."""

from __future__ import annotations

import math

import pytest

from fault_injection import FaultKind, FaultPlan, FaultRule, Fixed, LogNormal, Scenario, Uniform
from fault_injection._plan import CallRandom
from trio_mesa import Flavor

MIXED = Scenario(
    "mixed",
    agents=30,
    steps=3,
    flavors={"asyncio": 1, "trio": 1, "sync": 1},
    latency=LogNormal(1.0, 1.0),
    faults={FaultKind.RATE_LIMIT: 0.2, FaultKind.HANG: 0.1},
    timeout=3.0,
)


def test_same_seed_same_plan_in_any_query_order() -> None:
    a, b = FaultPlan(MIXED, 5), FaultPlan(MIXED, 5)
    keys = [(u, n) for u in range(1, 31) for n in range(1, 4)]
    forward = [a.call(u, n) for u, n in keys]
    backward = [b.call(u, n) for u, n in reversed(keys)][::-1]
    assert forward == backward
    assert a.flavors == b.flavors


def test_different_seeds_differ() -> None:
    a, b = FaultPlan(MIXED, 1), FaultPlan(MIXED, 2)
    assert [a.call(u, 1) for u in range(1, 31)] != [b.call(u, 1) for u in range(1, 31)]


def test_flavor_counts_follow_the_weights() -> None:
    plan = FaultPlan(MIXED.replace(flavors={"asyncio": 2, "trio": 1, "sync": 1}, agents=10), 0)
    counts = {f: list(plan.flavors.values()).count(f) for f in Flavor}
    assert counts == {Flavor.ASYNCIO: 5, Flavor.TRIO: 3, Flavor.SYNC: 2} or counts == {
        Flavor.ASYNCIO: 5,
        Flavor.TRIO: 2,
        Flavor.SYNC: 3,
    }


def test_rules_target_agents_and_calls() -> None:
    scenario = Scenario(
        "r",
        agents=10,
        steps=4,
        flavors={"trio": 1},
        rules=(FaultRule("server_error", agents=(3, 4), calls=(2,)),),
    )
    plan = FaultPlan(scenario, 0)
    hit = {
        (u, n)
        for u in range(1, 11)
        for n in range(1, 5)
        if plan.call(u, n).kind is not FaultKind.OK
    }
    assert hit == {(3, 2), (4, 2)}


def test_share_picks_a_seeded_subset() -> None:
    scenario = Scenario(
        "s", agents=20, flavors={"trio": 1}, rules=(FaultRule("hang", share=0.1),), timeout=5
    )
    dead = {u for u in range(1, 21) if FaultPlan(scenario, 3).call(u, 1).kind is FaultKind.HANG}
    assert len(dead) == 2
    assert dead == {
        u for u in range(1, 21) if FaultPlan(scenario, 3).call(u, 7).kind is FaultKind.HANG
    }


def test_sync_agents_cannot_hang_or_interrupt() -> None:
    scenario = Scenario(
        "sync",
        agents=4,
        flavors={"sync": 1},
        rules=(FaultRule("interrupt", calls=(1,)), FaultRule("hang", calls=(2,))),
        timeout=5,
    )
    plan = FaultPlan(scenario, 0)
    assert {plan.call(u, 1).kind for u in range(1, 5)} == {FaultKind.OK}
    assert {plan.call(u, 2).kind for u in range(1, 5)} == {FaultKind.TIMEOUT}


def test_latencies_keep_away_from_the_limit_and_never_tie() -> None:
    scenario = Scenario(
        "near",
        agents=50,
        steps=1,
        flavors={"trio": 1},
        latency=Uniform(9.0, 11.0),
        timeout=10.0,
        guard=0.05,
        real_time_scale=1.0,
    )
    plan = FaultPlan(scenario, 0)
    for uid in range(1, 51):
        latency = plan.call(uid, 1).latency
        assert abs(latency - 10.0) >= 0.5 - 2**-11
        assert (latency * 2**11) % 2 == 1  # an odd multiple of the grid


def test_hang_latency_is_infinite() -> None:
    scenario = Scenario("h", agents=1, flavors={"trio": 1}, rules=(FaultRule("hang"),), deadline=1)
    assert FaultPlan(scenario, 0).call(1, 1).latency == math.inf


def test_rate_limit_carries_retry_after() -> None:
    scenario = Scenario("rl", agents=5, flavors={"trio": 1}, faults={"rate_limit": 1.0})
    call = FaultPlan(scenario, 0).call(1, 1)
    assert call.kind is FaultKind.RATE_LIMIT and call.retry_after > 0
    assert call.exception_name == "RateLimitError"


def test_call_random_is_deterministic_and_uniform_enough() -> None:
    xs = [CallRandom(1, 2, 3).random() for _ in range(3)]
    assert xs[0] == xs[1] == xs[2]
    rng = CallRandom(42)
    draws = [rng.random() for _ in range(4000)]
    assert all(0 <= x < 1 for x in draws)
    assert 0.45 < sum(draws) / len(draws) < 0.55


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: Fixed(-1), ValueError),
        (lambda: Uniform(3, 1), ValueError),
        (lambda: LogNormal(0), ValueError),
        (lambda: Fixed("1"), TypeError),
    ],
)
def test_bad_latencies_are_rejected(make, error) -> None:
    with pytest.raises(error):
        make()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"faults": {"hang": 0.1}}, "needs a timeout or a deadline"),
        ({"faults": {"nope": 0.1}}, "unknown fault kind 'nope'"),
        ({"faults": {"rate_limit": 0.7, "timeout": 0.6}}, "sum to"),
        ({"flavors": {"gevent": 1}}, "unknown flavor"),
        ({"rules": (FaultRule("timeout", agents=(99,)),)}, "targets agent 99"),
        ({"agents": 0}, "agents must be a positive integer"),
        ({"timeout": 0}, "timeout must be a positive"),
    ],
)
def test_bad_scenarios_name_the_problem(changes, match) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        Scenario("bad", **{"agents": 10, **changes})
