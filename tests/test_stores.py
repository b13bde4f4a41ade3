"""`MemoryStore` on a clock the test moves, the settings values, and Redis URLs: the
store's arithmetic with time under control (tests/test_stores_redis.py holds a real
server to the same answers)."""

from __future__ import annotations

import logging
import threading

import pytest
import trio

from trio_mesa import RateLimit
from trio_mesa._stores import (
    BreakerRule,
    BudgetLimits,
    MemoryStore,
    Quota,
    RedisStore,
    Settlement,
    Spend,
    StateStore,
    Verdict,
    redact_url,
)
from trio_mesa._stores._url import parse_redis_url


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock) -> MemoryStore:
    return MemoryStore(clock=clock)


def micros(offsets: tuple[float, ...]) -> list[int]:
    return [round(o * 1_000_000) for o in offsets]


def test_both_stores_are_state_stores() -> None:
    assert isinstance(MemoryStore(), StateStore)
    assert isinstance(RedisStore("redis://localhost", workers=1), StateStore)


# Quota ------------------------------------------------------------------------------


def test_the_interval_is_whole_microseconds_rounded_up() -> None:
    assert Quota(10).interval_us == 100_000
    assert Quota(3).interval_us == 333_334  # never faster than asked
    assert Quota(100_000, per=60).interval_us == 600
    assert Quota(10, burst=8).share(4) == Quota(2.5, 1.0, 2)
    assert Quota(10, burst=3).share(4).burst == 1


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [({"rate": 0}, ValueError), ({"rate": 1, "burst": 0}, ValueError), ({"rate": "1"}, TypeError)],
)
def test_a_bad_quota_is_refused(kwargs, error) -> None:
    with pytest.raises(error):
        Quota(**kwargs)


# Rate limits ------------------------------------------------------------------------


async def test_memory_gives_ratelimit_slots_for_unit_weights(store, clock) -> None:
    # Unit weights: the same slots as today's RateLimit (here at 10 per second).
    limit = RateLimit(10, burst=2)
    expected = [round((limit.reserve(clock.now).start - clock.now) * 1e6) for _ in range(6)]
    grant = await store.rate_reserve("q", Quota(10, burst=2), [1] * 6)
    assert micros(grant.offsets) == expected == [0, 0, 100_000, 200_000, 300_000, 400_000]


async def test_requests_and_tokens_buckets_give_request_mode_ratelimit_slots(store, clock) -> None:
    # RateLimit(requests=5, tokens=1000): two buckets, reserved together.
    limit = RateLimit(requests=5, tokens=1000, per=1.0)
    tokens = [300, 900, 1, 2500, 10, 10, 10, 10]
    expected = []
    for t in tokens:
        reservation = limit.reserve(clock.now, tokens=t)
        assert reservation is not None
        expected.append(round((reservation.start - clock.now) * 1e6))
    quotas = [Quota(5, burst=5), Quota(1000, burst=1000)]
    grant = await store.rate_reserve("q", quotas, [(1, t) for t in tokens])
    assert micros(grant.offsets) == expected
    assert expected == [0, 200_000, 201_000, 1_201_000, 2_711_000, 2_721_000, 2_731_000, 2_741_000]


async def test_an_idle_limit_is_a_full_bucket_and_refills_with_time(store, clock) -> None:
    quota = Quota(10, burst=3)
    assert micros((await store.rate_reserve("q", quota, [3])).offsets) == [0]
    assert micros((await store.rate_reserve("q", quota, [1])).offsets) == [100_000]
    clock.now += 10
    assert micros((await store.rate_reserve("q", quota, [2, 1, 1])).offsets) == [0, 0, 100_000]


async def test_a_weight_above_the_burst_waits_for_a_full_bucket_and_owes_it_all(
    store, clock
) -> None:
    quota = Quota(10, burst=2)
    assert micros((await store.rate_reserve("q", quota, [5, 1])).offsets) == [0, 400_000]
    clock.now += 0.1
    assert micros((await store.rate_reserve("q", quota, [5])).offsets) == [500_000]


async def test_hold_off_pauses_everyone_and_is_never_shortened(store, clock) -> None:
    quota = Quota(10, burst=5)
    first = await store.rate_hold_off("q", quota, 2.0)
    assert (first.moved, first.left, first.epoch) == (True, 2.0, 1)
    clock.now += 0.5
    shorter = await store.rate_hold_off("q", quota, 1.0)
    assert (shorter.moved, shorter.left, shorter.epoch) == (False, 1.5, 1)
    grant = await store.rate_reserve("q", quota, [1, 1, 1])
    # After a hold-off starts resume one at a time, even with a burst.
    assert micros(grant.offsets) == [1_500_000, 1_600_000, 1_700_000]
    assert grant.hold_off_left == 1.5
    clock.now += 0.001
    assert (await store.rate_hold_off("q", quota, 0.0001)).left == 1.499  # rounded up to 1 ms


async def test_confirm_voids_slots_inside_a_later_hold_off(store, clock) -> None:
    quota = Quota(10)
    grant = await store.rate_reserve("q", quota, [1, 1])
    assert await store.rate_confirm("q", quota, grant.epoch, [1]) is None
    await store.rate_hold_off("q", quota, 5)
    clock.now += 0.1
    again = await store.rate_confirm("q", quota, grant.epoch, [1])
    assert again is not None and micros(again.offsets) == [4_900_000]
    assert await store.rate_confirm("q", quota, again.epoch, [1]) is None
    clock.now += 5
    assert await store.rate_confirm("q", quota, grant.epoch, [1]) is None  # hold-off over


async def test_settle_adds_or_gives_back_weight(store, clock) -> None:
    quota = Quota(100, burst=1)  # 10 ms a unit
    await store.rate_reserve("q", quota, [10])  # estimated 10 units: owes 100 ms
    await store.rate_settle("q", quota, 20)  # used 30
    assert micros((await store.rate_reserve("q", quota, [1])).offsets) == [300_000]
    await store.rate_settle("q", quota, -1000)
    assert micros((await store.rate_reserve("q", quota, [1, 1])).offsets) == [0, 10_000]
    clock.now += 100
    await store.rate_settle("q", quota, 5)  # an idle limit owes from now
    assert micros((await store.rate_reserve("q", quota, [1])).offsets) == [50_000]


@pytest.mark.parametrize(
    ("weights", "error"),
    [([], ValueError), ([0], ValueError), ([1.5], TypeError), ([True], TypeError)],
)
async def test_bad_weights_are_refused_before_anything_changes(store, weights, error) -> None:
    with pytest.raises(error):
        await store.rate_reserve("q", Quota(10), weights)
    assert micros((await store.rate_reserve("q", Quota(10), [1])).offsets) == [0]


@pytest.mark.parametrize("name", ["", "a b", "{x}", "x" * 201, 3])
async def test_bad_names_are_refused(store, name) -> None:
    with pytest.raises((TypeError, ValueError)):
        await store.rate_reserve(name, Quota(10), [1])


async def test_memory_is_safe_from_many_threads(store) -> None:
    quota, n = Quota(1000), 8
    offsets: list[int] = []

    def take() -> None:
        for _ in range(200):
            offsets.extend(micros(store.rate_reserve_now("q", quota, [1]).offsets))

    threads = [threading.Thread(target=take) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(offsets) == [k * 1000 for k in range(n * 200)]  # the clock never moved


# Breaker ----------------------------------------------------------------------------


async def test_breaker_opens_on_the_rate_half_opens_and_probes(store, clock) -> None:
    rule = BreakerRule(failure_rate=0.5, min_calls=4, window=10, reset_after=30, probes=2)
    await store.breaker_record("b", rule, [Verdict("outage", reason="E: 0")] * 3)
    clock.now += 10  # a verdict at t counts until t + 10: these are gone
    assert (await store.breaker_status("b", rule)).calls == 0
    status = await store.breaker_record(
        "b", rule, [Verdict("outage", reason="E: 1"), Verdict("success"), Verdict("success")]
    )
    assert (status.state, status.calls, status.failed) == ("closed", 3, 1)
    clock.now += 5
    status = await store.breaker_record("b", rule, [Verdict("outage", reason="E: 2")])
    assert status.opened and status.state == "open" and status.half_opens_in == 30.0
    assert status.reason == "2 of 4 calls within 10s failed; the last E: 2"
    clock.now += 29.999
    assert (await store.breaker_claim("b", rule, 3)).admitted == 0
    clock.now += 0.001
    claim = await store.breaker_claim("b", rule, 3)
    assert (claim.admitted, claim.probes, claim.status.state) == (2, 2, "half_open")
    one = await store.breaker_record("b", rule, [Verdict("success", probe=True)])
    assert one.state == "half_open"  # a failure of the other could still reach 50%
    two = await store.breaker_record("b", rule, [Verdict("outage", True, "E: 3")])
    assert two.opened and two.openings == 2
    assert two.reason == "1 of 2 probe calls failed; the last E: 3"
    clock.now += 30
    await store.breaker_claim("b", rule, 2)
    closed = await store.breaker_record("b", rule, [Verdict("success", probe=True)] * 2)
    assert closed.closed and closed.state == "closed"


async def test_a_non_probe_verdict_while_open_changes_nothing(store) -> None:
    rule = BreakerRule(min_calls=1, reset_after=5)
    await store.breaker_record("b", rule, [Verdict("outage", reason="E")])
    status = await store.breaker_record("b", rule, [Verdict("success"), Verdict("outage")])
    assert status.state == "open" and status.openings == 1 and not status.opened


# Budget -----------------------------------------------------------------------------


async def test_budget_grants_within_limits_and_settles(store) -> None:
    limits = BudgetLimits(max_micro_usd=BudgetLimits.micro_usd(0.0001), max_tokens=None)
    assert limits.max_micro_usd == 100
    grant = await store.budget_reserve("u", limits, [Spend(60, 5), Spend(50), Spend(40)])
    assert grant.granted == (True, False, True)
    totals = await store.budget_settle("u", [Settlement(Spend(60, 5), Spend(70, 7))])
    assert totals == (await store.budget_totals("u"))
    assert (totals.spent_micro_usd, totals.reserved_micro_usd, totals.spent_tokens) == (70, 40, 7)
    assert (await store.budget_reserve("u", limits, [Spend(1)])).granted == (False,)


# URLs -------------------------------------------------------------------------------


def test_urls_are_parsed_and_redacted() -> None:
    url = parse_redis_url("rediss://me:p%40ss@example.org:6380/2?ssl_cert_reqs=none")
    assert (url.host, url.port, url.db, url.username, url.password) == (
        "example.org",
        6380,
        2,
        "me",
        "p@ss",
    )
    assert url.tls and url.ssl_context() is not None
    assert repr(url) == "RedisURL('rediss://me:***@example.org:6380/2?ssl_cert_reqs=none')"
    assert parse_redis_url("redis://localhost").redacted == "redis://localhost:6379/0"
    assert parse_redis_url("redis://localhost").ssl_context() is None
    assert redact_url("redsi://:pw@host:1") == "redsi://***@host:1"
    assert redact_url("redis://:a@b@host") == "redis://:***@host:6379/0"


def test_a_redis_store_is_refused_bad_options() -> None:
    with pytest.raises(TypeError, match="workers"):
        RedisStore("redis://localhost", workers=0.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        RedisStore("redis://localhost")  # type: ignore[call-arg]


async def test_a_redis_store_must_be_entered(caplog) -> None:
    caplog.set_level(logging.WARNING)
    store = RedisStore("redis://:pw@localhost", workers=1)
    with pytest.raises(RuntimeError, match="not open") as info:
        await store.rate_reserve("q", Quota(1), [1])
    assert "pw" not in str(info.value).replace("***", "")
    await trio.lowlevel.checkpoint()
