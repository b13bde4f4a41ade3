"""`RateLimit`: exact slot times with explicit ``now``, hold-offs voiding earlier slots,
translation across runs' clocks, thread safety, a real ``trio.run`` under ``MockClock``,
and the GCRA spacing invariant as a property."""

from __future__ import annotations

import heapq
import math
import threading

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_mesa._rate_limit import HoldOff, RateLimit, Reservation

# Rates whose intervals are exact binary fractions (1/4, 1/2, 1/8), so slot times are
# exact and the expected lists below need no approx.


def starts(limit: RateLimit, now: float, n: int) -> list[float]:
    return [limit.reserve(now).start for _ in range(n)]


# -- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"rate": 0}, ValueError, ["rate", "0"]),
        ({"rate": -2}, ValueError, ["rate", "-2"]),
        ({"rate": math.nan}, ValueError, ["rate", "nan"]),
        ({"rate": math.inf}, ValueError, ["rate", "inf"]),
        ({"rate": True}, TypeError, ["rate", "True"]),
        ({"rate": "5"}, TypeError, ["rate", "'5'"]),
        ({"rate": 5, "per": 0}, ValueError, ["per", "0"]),
        ({"rate": 5, "per": -1.0}, ValueError, ["per", "-1.0"]),
        ({"rate": 5, "per": math.inf}, ValueError, ["per", "inf"]),
        ({"rate": 5, "burst": 0}, ValueError, ["burst", "0"]),
        ({"rate": 5, "burst": 2.0}, TypeError, ["burst", "2.0"]),
        ({"rate": 5, "burst": False}, TypeError, ["burst", "False"]),
        ({"rate": 1e308, "per": 1e-308}, ValueError, ["per", "rate"]),
    ],
)
def test_bad_input_names_field_and_value(
    kwargs: dict[str, object], error: type[Exception], words: list[str]
) -> None:
    with pytest.raises(error) as info:
        RateLimit(**kwargs)  # type: ignore[arg-type]
    for word in words:
        assert word in str(info.value)


def test_attributes_and_default_burst() -> None:
    limit = RateLimit(50)
    assert (limit.rate, limit.per, limit.burst, limit.interval) == (50.0, 1.0, 1, 0.02)
    assert repr(limit) == "RateLimit(rate=50, per=1, burst=1)"
    assert RateLimit(3, per=60, burst=3).interval == 20.0


@pytest.mark.parametrize("until", [math.nan, math.inf, "3", None])
def test_hold_off_validates_times(until: object) -> None:
    with pytest.raises((TypeError, ValueError), match="until"):
        RateLimit(4).hold_off(until, now=0.0)  # type: ignore[arg-type]


# -- slots -----------------------------------------------------------------------------


def test_default_burst_spaces_every_start() -> None:
    limit = RateLimit(4)
    assert starts(limit, 0.0, 6) == [0.0, 0.25, 0.5, 0.75, 1.0, 1.25]
    assert limit.reservations == 6


def test_room_means_start_now() -> None:
    limit = RateLimit(4)
    assert limit.reserve(10.0).start == 10.0
    assert limit.reserve(10.3).start == 10.3  # 0.25 after the last: free
    assert limit.reserve(10.4).start == 10.55  # only 0.1 after: waits
    assert limit.reserve(100.0).start == 100.0  # idle: slots are not saved up (burst 1)
    assert limit.reserve(100.0).start == 100.25


def test_burst_admits_that_many_at_once_after_idling() -> None:
    limit = RateLimit(2, burst=3)
    assert starts(limit, 0.0, 5) == [0.0, 0.0, 0.0, 0.5, 1.0]
    # The bucket refills at 2 per second: by 1.5, half a second after the last start,
    # it has saved one start, not a burst.
    assert starts(limit, 1.5, 2) == [1.5, 2.0]
    assert starts(limit, 10.0, 4) == [10.0, 10.0, 10.0, 10.5]


def test_per_scales_the_interval() -> None:
    limit = RateLimit(2, per=8.0)
    assert starts(limit, 0.0, 3) == [0.0, 4.0, 8.0]


# -- hold-offs -------------------------------------------------------------------------


def test_hold_off_voids_slots_reserved_before_it() -> None:
    limit = RateLimit(4)
    r = [limit.reserve(0.0) for _ in range(4)]
    assert [x.start for x in r] == [0.0, 0.25, 0.5, 0.75]
    assert limit.confirm(r[0], 0.0) is None  # started before the 429 arrived
    assert limit.hold_off(2.0, now=0.1, reason="RateLimitError (Retry-After 1.9s)")
    # The agent that reserved 0.25 does not start at 0.25, nor do all start at 2.0.
    again = [limit.confirm(x, x.start) for x in r[1:]]
    assert [x.start for x in again if x is not None] == [2.0, 2.25, 2.5]
    assert all(limit.confirm(x, x.start) is None for x in again if x is not None)
    assert (limit.voided, limit.hold_offs, limit.reservations) == (3, 1, 7)
    assert limit.last_hold_off == HoldOff(
        at=0.1, until=2.0, reason="RateLimitError (Retry-After 1.9s)"
    )
    assert limit.reserve(2.0).start == 2.75


def test_slots_after_the_hold_off_stay_valid() -> None:
    limit = RateLimit(4)
    r = [limit.reserve(0.0) for _ in range(8)]  # 0 .. 1.75
    limit.hold_off(1.0, now=0.0)
    assert limit.confirm(r[3], 0.75) == Reservation(1.75 + 0.25, 1)  # voided: after all
    assert limit.confirm(r[4], 1.0) is None  # 1.0 is not before the gate's end
    assert limit.confirm(r[7], 1.75) is None
    assert limit.voided == 1


def test_hold_off_empties_the_burst() -> None:
    limit = RateLimit(2, burst=4)
    limit.hold_off(5.0, now=0.0)
    # One at a time from the gate's end: the provider has just said we were too fast.
    assert starts(limit, 0.0, 3) == [5.0, 5.5, 6.0]
    assert starts(limit, 100.0, 5) == [100.0, 100.0, 100.0, 100.0, 100.5]


def test_hold_off_only_counts_when_it_moves_the_gate() -> None:
    limit = RateLimit(4)
    assert not limit.hold_off(1.0, now=1.0)  # already over
    assert not limit.hold_off(0.5, now=1.0)
    assert limit.last_hold_off is None
    assert limit.hold_off(3.0, now=1.0, reason="a")
    assert not limit.hold_off(3.0, now=1.1, reason="b")  # the herd reporting one 429
    assert not limit.hold_off(2.0, now=1.2, reason="c")
    assert limit.hold_off(4.0, now=1.3, reason="d")
    assert limit.hold_offs == 2
    assert limit.last_hold_off == HoldOff(1.3, 4.0, "d")
    assert limit.gate_open_at(1.5) == 4.0
    assert limit.gate_open_at(9.0) == 9.0
    assert limit.reservations == 0  # gate_open_at takes no slot


def test_confirm_woken_early_returns_same_reservation() -> None:
    limit = RateLimit(4)
    limit.reserve(0.0)
    r = limit.reserve(0.0)
    assert limit.confirm(r, 0.2) is r
    assert limit.confirm(r, 0.25) is None


def test_voided_slot_woken_late_reserves_from_its_wake_time() -> None:
    limit = RateLimit(4)
    r = [limit.reserve(0.0) for _ in range(3)]  # 0, 0.25, 0.5
    assert limit.confirm(r[0], 0.0) is None
    limit.hold_off(0.6, now=0.1)
    # Its slot (0.5) fell inside the hold-off; woken late, at 3.0, when the gate is long
    # open: the slot was still spent in the hold-off, so it takes a fresh one, at 3.0.
    assert limit.confirm(r[2], 3.0) == Reservation(3.0, 1)
    assert limit.voided == 1


# -- across runs -----------------------------------------------------------------------


def test_rebase_moves_slots_onto_the_new_clock() -> None:
    a, b = object(), object()
    limit = RateLimit(4)
    limit.rebase(a, 100.0)
    assert starts(limit, 100.0, 3) == [100.0, 100.25, 100.5]  # next free: 100.75
    # A new run whose clock reads 5.0, 0.125 s after the old one last read 100.0.
    limit.rebase(b, 5.0, elapsed=0.125)
    assert limit.reserve(5.0).start == 5.625
    limit.rebase(b, 5.0, elapsed=99.0)  # same clock: nothing moves
    assert limit.reserve(5.0).start == 5.875


def test_rebase_carries_a_hold_off_into_the_next_run() -> None:
    a, b = object(), object()
    limit = RateLimit(4)
    limit.rebase(a, 1000.0)
    limit.hold_off(1030.0, now=1000.0)
    limit.rebase(b, 0.0, elapsed=10.0)  # 10 s later: 20 s of the hold-off remain
    assert limit.gate_open_at(0.0) == 20.0
    assert limit.reserve(0.0).start == 20.0


def test_clock_keyword_switches_per_call() -> None:
    # Two runs in two threads alternate calls; each passes its clock.
    a, b = object(), object()
    limit = RateLimit(4)
    assert limit.reserve(50.0, clock=a).start == 50.0
    assert limit.reserve(7.0, clock=b).start >= 7.0  # real time elapsed: at most 7.25
    r = limit.reserve(50.0, clock=a)
    assert 50.0 <= r.start <= 50.5
    assert limit.confirm(r, r.start, clock=a) is None


def test_first_clock_is_adopted_as_is() -> None:
    limit = RateLimit(4)
    assert limit.reserve(3.0).start == 3.0  # no clock given yet
    limit.rebase(object(), 3.0)
    assert limit.reserve(3.0).start == 3.25


def test_measured_elapsed_never_pulls_slots_into_the_past() -> None:
    limit = RateLimit(4)
    limit.rebase(object(), 10.0)
    starts(limit, 10.0, 4)
    limit.rebase(object(), 0.0)  # perf_counter-measured gap
    s = limit.reserve(0.0).start
    assert 0.0 <= s <= 1.0


# -- threads ---------------------------------------------------------------------------


def test_threads_reserving_at_once_get_distinct_slots() -> None:
    limit = RateLimit(8)
    got: list[float] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        mine = [limit.reserve(0.0).start for _ in range(500)]
        with lock:
            got.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == [i / 8 for i in range(4000)]
    assert limit.reservations == 4000


# -- inside trio.run, in virtual time ----------------------------------------------------


async def _agent(limit: RateLimit, started: list[float], fail: dict[int, float]) -> None:
    clock = trio.lowlevel.current_clock()
    reservation: Reservation | None = limit.reserve(trio.current_time(), clock=clock)
    while reservation is not None:
        await trio.sleep_until(reservation.start)
        reservation = limit.confirm(reservation, trio.current_time(), clock=clock)
    now = trio.current_time()
    started.append(now)
    # Trio schedules tasks started together in no fixed order, so the failure is tied
    # to the n-th start, not to a task: that one's call got a 429 with a Retry-After.
    retry_after = fail.get(len(started) - 1)
    if retry_after is not None:
        limit.hold_off(now + retry_after, now=now, reason=f"start {len(started) - 1}: 429")


def _step(limit: RateLimit, n: int, fail: dict[int, float]) -> list[float]:
    started: list[float] = []

    async def main() -> None:
        limit.rebase(trio.lowlevel.current_clock(), trio.current_time(), elapsed=0.0)
        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(_agent, limit, started, fail)
        limit.rebase(trio.lowlevel.current_clock(), trio.current_time())

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return started


def test_trio_run_with_mock_clock_exact_start_times() -> None:
    limit = RateLimit(4)
    # The second start (0.25) gets a 429 saying "retry after 2 s": the six agents
    # holding slots 0.5..1.75 wake, find them void, and start from 2.25, 0.25 apart.
    started = _step(limit, 8, {1: 2.0})
    assert started == [0.0, 0.25, 2.25, 2.5, 2.75, 3.0, 3.25, 3.5]
    assert (limit.hold_offs, limit.voided, limit.reservations) == (1, 6, 14)
    assert limit.last_hold_off == HoldOff(0.25, 2.25, "start 1: 429")
    # A second run (a new MockClock) back to back with the first (elapsed=0.0): it
    # keeps the 0.25 spacing after the first run's last start (3.5, when it ended).
    second = _step(limit, 3, {})
    assert second == [0.25, 0.5, 0.75]
    assert limit.reservations == 17


async def test_pytest_trio_mock_clock(mock_clock: trio.testing.MockClock) -> None:
    limit = RateLimit(2, burst=2)
    started: list[float] = []
    t0 = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(_agent, limit, started, {})
    assert [t - t0 for t in started] == [0.0, 0.0, 0.5, 1.0, 1.5]


# -- properties ------------------------------------------------------------------------


def _assert_gcra(times: list[float], limit: RateLimit) -> None:
    times = sorted(times)
    eps = 1e-9 * max(1.0, *(abs(t) for t in times)) if times else 0.0
    b, interval = limit.burst, limit.interval
    for i in range(len(times)):
        for j in range(i + b, min(len(times), i + b + 40)):
            # Among k = j - i + 1 consecutive starts, the last is >= (k - burst) * T later.
            assert times[j] - times[i] >= (j - i + 1 - b) * interval - eps * (j - i + 1)
    # Hence any half-open window of `per` seconds holds at most burst + ceil(rate) - 1.
    most = b + math.ceil(limit.rate - 1e-9) - 1
    for i, t in enumerate(times):
        inside = sum(1 for u in times[i:] if u < t + limit.per - eps * 100)
        assert inside <= most


limits = st.builds(
    RateLimit,
    rate=st.sampled_from([0.5, 1, 2, 3, 4, 7.5, 10, 50]),
    per=st.sampled_from([0.5, 1.0, 2.0, 60.0]),
    burst=st.one_of(st.none(), st.integers(1, 6)),
)


@given(limit=limits, gaps=st.lists(st.floats(0, 3), max_size=60))
def test_property_reservations_keep_the_spacing(limit: RateLimit, gaps: list[float]) -> None:
    now, got = 0.0, []
    for gap in gaps:
        now += gap
        s = limit.reserve(now).start
        assert s >= now  # never a delay below zero
        assert not got or s >= got[-1]  # first come, first served
        got.append(s)
    _assert_gcra(got, limit)


@settings(max_examples=150)
@given(
    limit=limits,
    arrivals=st.lists(st.floats(0, 20), min_size=1, max_size=40),
    hold_offs=st.lists(st.tuples(st.floats(0, 20), st.floats(0, 10)), max_size=5),
)
def test_property_no_start_inside_a_hold_off(
    limit: RateLimit, arrivals: list[float], hold_offs: list[tuple[float, float]]
) -> None:
    # A discrete-event run of the engine's loop: reserve, sleep until start, confirm.
    events: list[tuple[float, int, str, object]] = []
    seq = 0
    for t in arrivals:
        events.append((t, seq, "arrive", None))
        seq += 1
    for t, length in hold_offs:
        events.append((t, seq, "hold", t + length))
        seq += 1
    heapq.heapify(events)
    gates: list[float] = []  # ends of hold-offs in force, as set so far
    admitted: list[float] = []
    while events:
        now, _, kind, data = heapq.heappop(events)
        if kind == "hold":
            assert isinstance(data, float)
            if limit.hold_off(data, now=now):
                gates.append(data)
            continue
        r = limit.reserve(now) if kind == "arrive" else limit.confirm(data, now)  # type: ignore[arg-type]
        if r is None:
            assert all(now >= g for g in gates)  # no start while any gate is closed
            admitted.append(now)
            continue
        assert r.start >= now
        heapq.heappush(events, (r.start, seq, "wake", r))
        seq += 1
    assert len(admitted) == len(arrivals)  # everyone starts, eventually
    _assert_gcra(admitted, limit)


# -- request mode ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({}, TypeError, ["rate", "requests"]),
        ({"rate": 5, "requests": 5}, TypeError, ["not both"]),
        ({"requests": 0}, ValueError, ["requests", "0"]),
        ({"tokens": 0}, ValueError, ["tokens", "0"]),
        ({"tokens": 2.5}, TypeError, ["tokens", "2.5"]),
        ({"requests": 5, "burst": 2}, TypeError, ["burst", "shorter period"]),
    ],
)
def test_request_mode_bad_input_names_field_and_value(kwargs, error, words) -> None:
    with pytest.raises(error) as info:
        RateLimit(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_request_mode_is_a_bucket_of_one_periods_worth() -> None:
    limit = RateLimit(requests=4, tokens=100, per=2.0)
    assert limit.per_request and (limit.requests, limit.tokens, limit.burst) == (4.0, 100, 4)
    assert repr(limit) == "RateLimit(requests=4, tokens=100, per=2)"
    assert not RateLimit(2).per_request
    # Four at once, then one every 0.5 s; tokens are not what binds here.
    assert [limit.reserve(0.0, tokens=10).start for _ in range(6)] == [0, 0, 0, 0, 0.5, 1.0]


def test_a_reservation_weighs_its_tokens() -> None:
    limit = RateLimit(tokens=128, per=1.0)
    assert [limit.reserve(0.0, tokens=64).start for _ in range(4)] == [0.0, 0.0, 0.5, 1.0]
    assert limit.tokens_reserved == 256
    # A request larger than the bucket waits for a full one and leaves it in debt.
    assert limit.reserve(0.0, tokens=320).start == 2.0
    assert limit.reserve(0.0, tokens=16).start == 4.5 - 112 / 128


def test_a_start_past_the_deadline_takes_nothing() -> None:
    limit = RateLimit(requests=1, per=4.0)
    assert limit.reserve(0.0, deadline=1.0) is not None  # now: free
    assert limit.reserve(0.0, deadline=4.0) is None  # its slot would be 4.0
    assert limit.reservations == 1
    assert limit.reserve(0.0).start == 4.0  # the slot is still free


def test_settling_moves_slots_not_yet_started() -> None:
    limit = RateLimit(tokens=8, per=1.0)
    first = limit.reserve(0.0, tokens=8)
    waiting = limit.reserve(0.0, tokens=8)
    assert (first.start, waiting.start) == (0.0, 1.0)
    limit.settle(8, 4, now=0.0)  # it used half: the waiting slot moves to 0.5
    assert limit.confirm(waiting, 0.25) == Reservation(0.5, 0, 8)
    assert limit.confirm(waiting, 0.5) is None
    limit.settle(8, 24, now=0.5)  # that one used 16 more: the next waits for them
    assert limit.reserve(0.5, tokens=8).start == 3.5
    assert (limit.tokens_used, limit.expected_ratio) == (28, 1.0)  # nothing learned


def test_what_estimates_miss_is_learned_from_usage() -> None:
    limit = RateLimit(tokens=10_000, per=1.0)
    for estimate, used in ((300, 200), (100, 100)):  # a fixed part of 50, half the rest
        r = limit.reserve(0.0, tokens=estimate)
        assert r is not None
        limit.settle(r.tokens, used, now=0.0, estimate=estimate)
    assert limit.expected_tokens(500) == 300
    assert limit.reserve(0.0, tokens=500).tokens == 300


def test_slots_the_token_bucket_held_back_leave_one_at_a_time() -> None:
    # Requests: a bucket of 2, one every 0.5 s; tokens: a bucket of 4, 4 a second.
    limit = RateLimit(requests=2, tokens=4, per=1.0)
    early = [limit.reserve(0.0, tokens=4) for _ in range(4)]
    assert [r.start for r in early] == [0.0, 1.0, 2.0, 3.0]  # the tokens bind
    for r in early:
        assert limit.confirm(r, r.start) is None
    late = [limit.reserve(0.0, tokens=4) for _ in range(4)]
    assert [r.start for r in late] == [4.0, 5.0, 6.0, 7.0]
    for _ in early:
        limit.settle(4, 0, now=3.0)  # none of them used a token: 4 s given back
    # The token bucket would let all four go at 3.0, and so would the request schedule
    # (it counted the early ones at their request slots, 0 to 1.5); but they were given
    # at 0, 1, 2 and 3: the request bucket lets one go at 3.0, the next at 3.5.
    assert limit.confirm(late[0], 3.0) is None
    assert limit.confirm(late[1], 3.0) == Reservation(3.5, 0, 4)
