"""`RedisStore` against a real ``redis-server`` (tests/redis_server.py): the scripts'
arithmetic on the server's clock, NOSCRIPT, processes sharing one budget, the fallbacks
when the server dies, URLs and their passwords, TLS.

Times come from the server's TIME, so nothing here is virtual: the assertions are on
offsets returned by one atomic call (exact), never on how long anything took.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import multiprocessing.pool
import random
import traceback
import uuid
from collections.abc import Callable, Iterator

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis_server import RedisServer, budget_worker, free_port, rate_worker, self_signed_cert

from trio_mesa._stores import (
    BreakerRule,
    BudgetLimits,
    MemoryStore,
    Quota,
    RedisStore,
    Settlement,
    Spend,
    StoreUnreachable,
    Verdict,
    redact_url,
)

PASSWORD = "s3cr3t-pw%/x"  # percent and slash: its encoded form must be hidden too
ENCODED = "s3cr3t-pw%25%2Fx"


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    s = RedisServer()
    yield s
    s.kill()


@pytest.fixture
def start_server() -> Iterator[Callable[..., RedisServer]]:
    """Start a server of the test's own (to kill, or with a password or TLS); every one
    is killed after the test, whatever happened."""
    started: list[RedisServer] = []

    def start(**kwargs: object) -> RedisServer:
        started.append(RedisServer(**kwargs))  # type: ignore[arg-type]
        return started[-1]

    yield start
    for s in started:
        s.kill()


@pytest.fixture(scope="module")
def processes() -> Iterator[multiprocessing.pool.Pool]:
    """4 spawned processes (as a sweep's), started once for the module."""
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        yield pool


def fresh() -> str:
    return "t-" + uuid.uuid4().hex[:12]


def micros(offsets: tuple[float, ...]) -> list[int]:
    return [round(o * 1_000_000) for o in offsets]


# GCRA -------------------------------------------------------------------------------


async def test_one_batch_of_reservations_is_spaced_exactly_by_the_interval(server) -> None:
    async with RedisStore(server.url, workers=1) as store:
        grant = await store.rate_reserve(fresh(), Quota(10), [1] * 50)
    assert micros(grant.offsets) == [k * 100_000 for k in range(50)]
    assert grant.epoch == 0 and grant.hold_off_left == 0.0


async def test_a_burst_starts_at_once_then_the_rest_is_spaced(server) -> None:
    async with RedisStore(server.url, workers=1) as store:
        grant = await store.rate_reserve(fresh(), Quota(10, burst=3), [1] * 6)
    assert micros(grant.offsets) == [0, 0, 0, 100_000, 200_000, 300_000]


async def test_weighted_reservations_wait_for_their_weight_as_memory_does(server) -> None:
    quota = Quota(100_000, per=60, burst=2_000)  # tokens per minute: 600 us a token
    weights = [1_500, 500, 1_200, 3_000, 1]
    async with RedisStore(server.url, workers=1) as store:
        grant = await store.rate_reserve(fresh(), quota, weights)
    local = await MemoryStore().rate_reserve("x", quota, weights)
    assert micros(grant.offsets) == micros(local.offsets) == [0, 0, 720_000, 1_920_000, 2_520_600]


async def test_a_hold_off_is_a_ttl_a_shorter_one_never_shortens(server) -> None:
    name, quota = fresh(), Quota(10)
    async with RedisStore(server.url, workers=1) as store:
        first = await store.rate_hold_off(name, quota, 3600)
        assert (first.moved, first.left, first.epoch) == (True, 3600.0, 1)
        shorter = await store.rate_hold_off(name, quota, 1.0)
        assert not shorter.moved and shorter.epoch == 1
        assert 1.0 < shorter.left <= 3600.0
        longer = await store.rate_hold_off(name, quota, 7200)
        assert (longer.moved, longer.left, longer.epoch) == (True, 7200.0, 2)
        grant = await store.rate_reserve(name, quota, [1, 1, 1])
        pttl = await store._connected().pttl(store.key(name, "hold"))
    offsets = micros(grant.offsets)
    assert grant.epoch == 2 and 0 < grant.hold_off_left <= 7200.0
    # Everyone waits for the hold-off, then one at a time.
    # (The TTL counts whole milliseconds, the arrival time microseconds.)
    assert grant.hold_off_left * 1_000_000 - 1000 < offsets[0] <= 7_200_000_000
    assert [b - a for a, b in itertools.pairwise(offsets)] == [100_000, 100_000]
    assert 0 < pttl <= 7_200_000  # stored as a TTL, not as a time


async def test_a_slot_inside_a_later_hold_off_is_void_at_confirm(server) -> None:
    name, quota = fresh(), Quota(10)
    async with RedisStore(server.url, workers=1) as store:
        grant = await store.rate_reserve(name, quota, [1, 1])
        assert await store.rate_confirm(name, quota, grant.epoch, [1, 1]) is None
        await store.rate_hold_off(name, quota, 600)
        again = await store.rate_confirm(name, quota, grant.epoch, [1, 1])
        assert again is not None and again.epoch == 1
        assert min(again.offsets) > again.hold_off_left - 0.001 > 500
        assert await store.rate_confirm(name, quota, again.epoch, [1]) is None


async def test_settle_takes_more_weight_or_gives_it_back(server) -> None:
    name, quota = fresh(), Quota(1, per=1000)  # 1000 s a unit: call times are noise
    async with RedisStore(server.url, workers=1) as store:
        await store.rate_reserve(name, quota, [1])
        await store.rate_settle(name, quota, 2)  # the response used 3 units, not 1
        late = await store.rate_reserve(name, quota, [1])
        assert 2990 < late.offsets[0] <= 3000
        await store.rate_settle(name, quota, -10)  # more than owed: the limit is idle
        idle = await store.rate_reserve(name, quota, [1, 1])
    assert micros(idle.offsets) == [0, 1_000_000_000]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rate=st.integers(1, 5000),
    per=st.sampled_from([0.5, 1.0, 7.0, 60.0]),
    burst=st.integers(1, 50),
    weights=st.lists(st.integers(1, 80), min_size=1, max_size=40),
    tokens=st.none() | st.tuples(st.integers(1, 10**6), st.integers(1, 10**6)),
)
def test_redis_and_memory_agree_on_the_gcra_for_any_batch(
    server, rate, per, burst, weights, tokens
) -> None:
    quota: Quota | list[Quota] = Quota(rate, per, burst)
    if tokens is not None:  # a second bucket: tokens per period, each weight (1, w * k)
        quota = [Quota(rate, per, burst), Quota(tokens[0], per, tokens[0])]
        weights = [(1, w * tokens[1] // 80) for w in weights]

    async def both() -> tuple[list[int], list[int]]:
        async with RedisStore(server.url, workers=1) as store:
            shared = await store.rate_reserve(fresh(), quota, weights)
        local = await MemoryStore().rate_reserve("x", quota, weights)
        return micros(shared.offsets), micros(local.offsets)

    shared, local = trio.run(both)
    assert shared == local


def test_four_processes_never_share_a_slot_of_one_quota(server, processes) -> None:
    # 1000 s a slot: an offset is its slot's index times 1000 s, less the few seconds
    # since the first reservation, so rounding tells exactly which slot each process got.
    name = fresh()
    given = processes.starmap(rate_worker, [(server.url, name, 25, 4)] * 4)
    slots = sorted(round(o / 1000) for offsets in given for o in offsets)
    assert slots == list(range(400))


# Breaker ----------------------------------------------------------------------------


async def wait_for_state(store, name, rule, state: str) -> None:
    with trio.fail_after(5):
        while (await store.breaker_status(name, rule)).state != state:
            await trio.sleep(0.01)


async def test_breaker_trips_on_the_failure_rate_then_probes(server) -> None:
    name = fresh()
    rule = BreakerRule(failure_rate=0.5, min_calls=4, window=60, reset_after=0.05, probes=1)
    async with RedisStore(server.url, workers=1) as store:
        status = await store.breaker_record(
            name,
            rule,
            [Verdict("success"), Verdict("outage", reason="X: a"), Verdict("success")],
        )
        assert (status.state, status.calls, status.failed) == ("closed", 3, 1)
        status = await store.breaker_record(name, rule, [Verdict("outage", reason="E: down")])
        assert status.opened and status.openings == 1
        assert status.reason == "2 of 4 calls within 60s failed; the last E: down"
        await wait_for_state(store, name, rule, "half_open")
        claim = await store.breaker_claim(name, rule, 5)
        assert (claim.admitted, claim.probes) == (1, 1)
        assert (await store.breaker_claim(name, rule, 5)).admitted == 0  # slot taken
        await store.breaker_record(name, rule, [Verdict("neutral", probe=True)])  # a 429
        assert (await store.breaker_claim(name, rule, 5)).probes == 1  # slot given back
        reopened = await store.breaker_record(name, rule, [Verdict("outage", True, "E: still")])
        assert reopened.opened and reopened.openings == 2
        assert reopened.reason == "a probe call failed; the last E: still"
        await wait_for_state(store, name, rule, "half_open")
        assert (await store.breaker_claim(name, rule)).probes == 1
        closed = await store.breaker_record(name, rule, [Verdict("success", probe=True)])
        assert closed.closed and closed.state == "closed" and closed.calls == 0
        assert (await store.breaker_claim(name, rule, 7)).admitted == 7


async def test_an_open_breaker_refuses_every_process_until_it_half_opens(server) -> None:
    name = fresh()
    rule = BreakerRule(min_calls=1, reset_after=3600)
    async with RedisStore(server.url, workers=2) as one, RedisStore(server.url, workers=2) as two:
        await one.breaker_record(name, rule, [Verdict("outage", reason="E: x")])
        claim = await two.breaker_claim(name, rule, 3)
    assert claim.admitted == 0 and claim.status.state == "open"
    assert 3500 < claim.status.half_opens_in <= 3600


# Budget -----------------------------------------------------------------------------


async def test_budget_reserves_within_the_limit_and_settles(server) -> None:
    name = fresh()
    limits = BudgetLimits(max_micro_usd=100, max_tokens=1000)
    async with RedisStore(server.url, workers=1) as store:
        grant = await store.budget_reserve(name, limits, [Spend(40, 10), Spend(70), Spend(60)])
        assert grant.granted == (True, False, True)  # 100 exactly: at the limit is allowed
        assert (grant.totals.reserved_micro_usd, grant.totals.reserved_tokens) == (100, 10)
        assert (await store.budget_reserve(name, limits, [Spend(1)])).granted == (False,)
        totals = await store.budget_settle(name, [Settlement(Spend(40, 10), Spend(25, 900))])
        assert (totals.spent_micro_usd, totals.reserved_micro_usd, totals.settled) == (25, 60, 1)
        tokens = await store.budget_reserve(name, limits, [Spend(0, 90), Spend(0, 91)])
        assert tokens.granted == (True, False)
        assert await store.budget_totals(name) == tokens.totals


def test_four_processes_never_overspend_one_budget(server, processes) -> None:
    name, limit = fresh(), 1_000
    rng = random.Random(7)
    work = [[rng.randint(1, 9) for _ in range(150)] for _ in range(4)]  # 4 x ~750 asked
    granted = processes.starmap(budget_worker, [(server.url, name, limit, w, 5) for w in work])

    async def totals():
        async with RedisStore(server.url, workers=4) as store:
            return await store.budget_totals(name)

    final = trio.run(totals)
    assert final.spent_micro_usd == sum(granted) <= limit
    assert final.reserved_micro_usd == 0
    assert sum(granted) > limit - 9  # the budget was used up, not refused early


# Scripts, outages -------------------------------------------------------------------


async def test_scripts_are_loaded_again_after_script_flush(server) -> None:
    async with RedisStore(server.url, workers=1) as store:
        await store._connected().script_flush()
        grant = await store.rate_reserve(fresh(), Quota(10), [1, 1])
        assert micros(grant.offsets) == [0, 100_000]
        assert store.script_reloads == 1
        await store.rate_reserve(fresh(), Quota(10), [1])
        assert store.script_reloads == 1


async def test_when_redis_dies_each_kind_falls_back_as_documented_and_says_so_once(
    caplog, start_server
) -> None:
    caplog.set_level(logging.WARNING, logger="trio_mesa")
    killed = start_server(password=PASSWORD)
    rule, limits = BreakerRule(min_calls=1), BudgetLimits(max_micro_usd=10**6)
    async with RedisStore(killed.url, workers=4, retry_after=3600) as store:
        assert (await store.budget_reserve("b", limits, [Spend(5)])).granted == (True,)
        killed.kill()
        grants = []
        for _ in range(3):
            grants.append(await store.rate_reserve("q", Quota(10), [1, 1, 1]))
            claim = await store.breaker_claim("br", rule, 2)
            refused = await store.budget_reserve("b", limits, [Spend(1)])
        # Rate limit: a fresh local limiter at a quarter of the quota (0.4 s apart).
        assert micros(grants[0].offsets) == [0, 400_000, 800_000]
        # Breaker: local state works (closed, then opened by a local outage).
        assert claim.admitted == 2
        opened = await store.breaker_record("br", rule, [Verdict("outage", reason="E: x")])
        assert opened.opened and (await store.breaker_claim("br", rule)).admitted == 0
        # Budget: closed.
        assert refused.granted == (False,) and refused.unavailable
        with pytest.raises(StoreUnreachable, match="budget 'b'"):
            await store.budget_settle("b", [Settlement(Spend(5), Spend(4))])
        assert store.pending_settlements == 1
        with pytest.raises(StoreUnreachable):
            await store.budget_totals("b")
    assert [f.kind for f in store.fallbacks] == ["rate_limit", "breaker", "budget"]
    warnings = [r.getMessage() for r in caplog.records if r.name == "trio_mesa"]
    assert len(warnings) == 3
    assert "falls back to a local limiter at 1/4 of its quota" in warnings[0]
    assert "falls back to this process's own state" in warnings[1]
    assert "fails closed" in warnings[2]
    for text in [*warnings, *(f.reason for f in store.fallbacks), repr(store.fallbacks)]:
        assert PASSWORD not in text and ENCODED not in text
        assert f"127.0.0.1:{killed.port}" in text or "Fallback(" in text


async def test_settlements_kept_while_down_are_sent_when_redis_answers_again(
    start_server,
) -> None:
    down = start_server()
    limits = BudgetLimits(max_micro_usd=100)
    async with RedisStore(down.url, workers=1, retry_after=0) as store:
        down.kill()
        with pytest.raises(StoreUnreachable):
            await store.budget_settle("b", [Settlement(Spend(0), Spend(30))])
        back = start_server(port=down.port)  # a fresh server on the same port
        try:
            grant = await store.budget_reserve("b", limits, [Spend(70), Spend(1)])
            assert grant.granted == (True, False)  # the 30 spent while down counted
            assert grant.totals.spent_micro_usd == 30 and store.pending_settlements == 0
            assert not store.falling_back
        finally:
            back.kill()


# URLs, passwords, TLS ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "redsi://127.0.0.1:6379/0",
        "redis//127.0.0.1:6379",
        "redis://:s3cr3t-pw%25%2Fx@127.0.0.1:99999/0",
        "redis://127.0.0.1:6379/db0",
        "redis://127.0.0.1:6379/0?ssl_cert_reqs=none",
        "http://:s3cr3t-pw%25%2Fx@127.0.0.1:6379",
        "redis://:s3cr3t-pw%25%2Fx@/0",
    ],
)
def test_a_misspelled_url_is_refused_on_construction_without_its_password(url) -> None:
    with pytest.raises(ValueError) as info:
        RedisStore(url, workers=1)
    text = "".join(traceback.format_exception(info.value))
    assert PASSWORD not in text and ENCODED not in text


async def test_an_unreachable_url_is_refused_at_start_naming_it() -> None:
    port = free_port()
    url = f"redis://:{ENCODED}@127.0.0.1:{port}/0"
    store = RedisStore(url, workers=1, timeout=2)
    with pytest.raises(StoreUnreachable) as info:
        async with store:
            pass
    text = "".join(traceback.format_exception(info.value))
    assert f"redis://:***@127.0.0.1:{port}/0" in str(info.value)
    assert PASSWORD not in text and ENCODED not in text


async def test_a_password_never_shows_but_works(start_server) -> None:
    secured = start_server(password=PASSWORD)
    url = f"redis://:{ENCODED}@127.0.0.1:{secured.port}/0"
    try:
        async with RedisStore(url, workers=2) as store:
            grant = await store.rate_reserve(fresh(), Quota(10), [1])
            status = await store.breaker_status(fresh(), BreakerRule())
            shown = [repr(store), str(store), store.url, repr(grant), repr(status)]
            shown += [repr(store._url), str(store._url), redact_url(url)]
        wrong = url.replace(ENCODED, "wr0ng-pw")
        with pytest.raises(StoreUnreachable) as info:
            async with RedisStore(wrong, workers=1):
                pass
        shown.append("".join(traceback.format_exception(info.value)))
    finally:
        secured.kill()
    assert "wr0ng-pw" not in shown[-1] and "127.0.0.1" in shown[-1]
    for text in shown:
        assert PASSWORD not in text and ENCODED not in text, text
    assert store.url == f"redis://:***@127.0.0.1:{secured.port}/0"


async def test_rediss_reaches_a_tls_server(tmp_path, start_server) -> None:
    cert, key = self_signed_cert(tmp_path)
    tls = start_server(tls=(cert, key), password=PASSWORD)
    url = f"rediss://:{ENCODED}@127.0.0.1:{tls.port}/0?ssl_ca_certs={cert}"
    try:
        async with RedisStore(url, workers=1) as store:
            grant = await store.rate_reserve(fresh(), Quota(10), [1, 1])
        assert micros(grant.offsets) == [0, 100_000]
        assert PASSWORD not in repr(store) and "rediss://" in repr(store)
        # Without the CA the certificate is refused, at start.
        with pytest.raises(StoreUnreachable, match="rediss://:\\*\\*\\*@"):
            async with RedisStore(url.partition("?")[0], workers=1):
                pass
    finally:
        tls.kill()


def test_the_store_works_on_an_asyncio_host(server) -> None:
    import asyncio

    async def main() -> tuple[float, ...]:
        async with RedisStore(server.url, workers=1) as store:
            return (await store.rate_reserve(fresh(), Quota(10), [1, 1])).offsets

    assert micros(asyncio.run(main())) == [0, 100_000]
