"""`CircuitBreaker` and `CircuitOpen`: the closed / open / half-open cycle with explicit
``now``, what the report's events say, probes passed back, cross-run clocks, threads, and
the state machine's invariants as a property."""

from __future__ import annotations

import math
import pickle
import threading

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from trio_mesa._breaker import MAX_EVENTS, BreakerEvent, CircuitBreaker, CircuitOpen


class InternalServerError(Exception):
    status_code = 500


def fail(b: CircuitBreaker, *times: float, exc: BaseException | None = None) -> None:
    for t in times:
        b.record_failure(t, exc or InternalServerError("500 boom"))


def ok(b: CircuitBreaker, *times: float) -> None:
    for t in times:
        b.record_success(t)


# -- validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"failure_rate": 0}, ValueError, ["failure_rate", "0"]),
        ({"failure_rate": 1.5}, ValueError, ["failure_rate", "1.5"]),
        ({"failure_rate": math.nan}, ValueError, ["failure_rate", "nan"]),
        ({"failure_rate": "50%"}, TypeError, ["failure_rate", "'50%'"]),
        ({"min_calls": 0}, ValueError, ["min_calls", "0"]),
        ({"min_calls": 2.5}, TypeError, ["min_calls", "2.5"]),
        ({"min_calls": True}, TypeError, ["min_calls", "True"]),
        ({"window": 0}, ValueError, ["window", "0"]),
        ({"window": -1}, ValueError, ["window", "-1"]),
        ({"window": math.inf}, ValueError, ["window", "inf"]),
        ({"reset_after": -0.1}, ValueError, ["reset_after", "-0.1"]),
        ({"reset_after": math.nan}, ValueError, ["reset_after", "nan"]),
        ({"reset_after": "30"}, TypeError, ["reset_after", "'30'"]),
        ({"probes": 0}, ValueError, ["probes", "0"]),
        ({"probes": None}, TypeError, ["probes", "None"]),
        ({"failures": 5, "min_calls": 5}, TypeError, ["failures", "min_calls"]),
    ],
)
def test_bad_input_names_field_and_value(
    kwargs: dict[str, object], error: type[Exception], words: list[str]
) -> None:
    with pytest.raises(error) as info:
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]
    for word in words:
        assert word in str(info.value)


def test_defaults() -> None:
    b = CircuitBreaker()
    assert (b.failure_rate, b.min_calls, b.window, b.reset_after, b.probes) == (
        0.5,
        20,
        10.0,
        30.0,
        1,
    )
    assert b.state == "closed"
    assert (b.opened_at, b.reset_at, b.reason, b.events, b.openings) == (None, None, "", [], 0)
    assert repr(b) == (
        "CircuitBreaker(failure_rate=0.5, min_calls=20, window=10, reset_after=30, "
        "probes=1, state='closed')"
    )


def test_parameters_are_keywords() -> None:
    with pytest.raises(TypeError):
        CircuitBreaker(5, 10, 30)  # type: ignore[misc]


def test_the_old_failures_spelling_warns_and_means_min_calls() -> None:
    with pytest.warns(DeprecationWarning, match=r"failures=5 is read as min_calls=5"):
        b = CircuitBreaker(failures=5, window=10, reset_after=30)
    assert (b.min_calls, b.failure_rate) == (5, 0.5)
    with pytest.warns(DeprecationWarning, match="use min_calls"):
        assert b.failures == 5
    # A provider that is down opens it after the same five failures as before.
    fail(b, 0.0, 0.1, 0.2, 0.3)
    assert b.state == "closed"
    fail(b, 0.4)
    assert b.state == "open"
    with pytest.raises(ValueError, match="failures"):  # checked before it warns
        CircuitBreaker(failures=0)


# -- the cycle -------------------------------------------------------------------------


def test_it_opens_on_the_failure_rate_once_the_window_holds_min_calls() -> None:
    b = CircuitBreaker(failure_rate=0.5, min_calls=4, window=10, reset_after=30)
    fail(b, 0.0, 1.0, 2.0)
    assert b.state == "closed"  # 3 of 3 failed, but fewer than min_calls verdicts
    ok(b, 3.0, 4.0, 5.0)
    fail(b, 6.0)  # 4 of 7 failed: 57%
    assert b.state == "open"
    assert (b.opened_at, b.reset_at, b.openings) == (6.0, 36.0, 1)
    assert b.reason == "4 of 7 calls within 10s failed; the last InternalServerError: 500 boom"
    assert b.events == [BreakerEvent(6.0, "opened", b.reason)]


def test_a_low_failure_rate_never_opens_it() -> None:
    b = CircuitBreaker(failure_rate=0.5, min_calls=4, window=10)
    for k in range(1000):  # one call a second, every fourth fails: at most 3 of 10
        if k % 4 == 3:
            fail(b, float(k))
        else:
            ok(b, float(k))
    assert (b.state, b.events) == ("closed", [])


def test_verdicts_leave_the_window_after_window_seconds() -> None:
    b = CircuitBreaker(failure_rate=0.5, min_calls=3, window=10)
    ok(b, 0.0, 0.0, 0.0, 0.0)
    fail(b, 5.0, 6.0, 7.0)  # 3 of 7
    assert b.state == "closed"
    fail(b, 10.0)  # the successes at 0.0 are exactly `window` old: gone; 4 of 4
    assert b.state == "open"
    assert b.reason.startswith("4 of 4 calls within 10s failed")


def test_open_fails_fast_with_times_relative_to_the_refused_attempt() -> None:
    b = CircuitBreaker(min_calls=2, reset_after=30)
    fail(b, 1000.0, 1002.0, exc=TimeoutError("read timed out"))
    with pytest.raises(CircuitOpen) as info:
        b.before_attempt(1031.5)
    e = info.value
    assert (e.opened_at, e.reset_at, e.half_open, e.now, e.opening) == (
        1002.0,
        1032.0,
        False,
        1031.5,
        1,
    )
    assert e.reason == "2 of 2 calls within 10s failed; the last TimeoutError: read timed out"
    # No raw clock reading, no repeat of the failure: the step's events say that once.
    assert str(e) == (
        "circuit open, half-opens in 0.500 s (opened 29.500 s ago: 2 of 2 calls within "
        "10s failed); no call made"
    )
    assert isinstance(e, Exception)


def test_half_open_admits_one_probe_and_a_success_closes_it() -> None:
    b = CircuitBreaker(min_calls=1, reset_after=30)
    fail(b, 0.0)
    assert b.state_at(29.0) == "open"
    assert b.state_at(30.0) == "half_open"
    assert b.state == "open"  # state_at changes nothing
    assert b.before_attempt(30.5) is True  # the probe
    assert b.state == "half_open"
    with pytest.raises(CircuitOpen) as info:
        b.before_attempt(30.6)
    assert info.value.half_open
    assert str(info.value).startswith("circuit half-open, every probe call in flight")
    b.record_success(31.0, probe=True)
    assert b.state == "closed"
    assert b.before_attempt(31.1) is False
    assert [(e.time, e.kind) for e in b.events] == [
        (0.0, "opened"),
        (30.0, "half_open"),
        (31.0, "closed"),
    ]
    assert b.events[2].reason == "a probe call succeeded"


def test_a_failed_probe_reopens_for_another_reset_after() -> None:
    b = CircuitBreaker(min_calls=1, reset_after=10)
    fail(b, 0.0)
    assert b.before_attempt(12.0) is True
    b.record_failure(13.0, ConnectionResetError("reset by peer"), probe=True)
    assert (b.state, b.opened_at, b.reset_at, b.openings) == ("open", 13.0, 23.0, 2)
    assert b.reason == "a probe call failed; the last ConnectionResetError: reset by peer"
    with pytest.raises(CircuitOpen) as info:
        b.before_attempt(22.0)
    assert info.value.opening == 2
    assert b.before_attempt(23.0) is True
    assert [e.kind for e in b.events] == ["opened", "half_open", "opened", "half_open"]


def test_several_probes_decide_by_the_failure_rate() -> None:
    b = CircuitBreaker(failure_rate=0.5, min_calls=1, reset_after=5, probes=3)
    fail(b, 0.0)
    assert [b.before_attempt(5.0) for _ in range(3)] == [True, True, True]
    with pytest.raises(CircuitOpen):
        b.before_attempt(5.0)
    b.record_success(6.0, probe=True)
    assert b.state == "half_open"  # two failures could still make 2 of 3
    b.record_failure(6.5, InternalServerError("x"), probe=True)
    assert b.state == "half_open"
    with pytest.raises(CircuitOpen):  # a slot with a verdict is not given again
        b.before_attempt(6.6)
    b.record_success(7.0, probe=True)  # 1 of 3 failed
    assert b.state == "closed"
    assert b.events[-1].reason == "2 of 3 probe calls succeeded"
    fail(b, 8.0)  # the window was forgotten when it closed; min_calls=1: 1 of 1
    assert b.state == "open"
    assert [b.before_attempt(13.0) for _ in range(3)] == [True, True, True]
    fail(b, 13.5, exc=InternalServerError("a"))
    b.record_failure(13.6, InternalServerError("b"), probe=True)
    b.record_failure(13.7, InternalServerError("c"), probe=True)  # 2 of 3: reopen at once
    assert (b.state, b.opened_at) == ("open", 13.7)
    assert b.reason == "2 of 3 probe calls failed; the last InternalServerError: c"


def test_closing_forgets_the_verdicts_counted_before() -> None:
    b = CircuitBreaker(min_calls=2, window=100, reset_after=1)
    fail(b, 0.0, 0.5)
    assert b.before_attempt(2.0)
    b.record_success(2.0, probe=True)
    fail(b, 3.0)
    assert b.state == "closed"  # one verdict since it closed, not three


def test_release_frees_the_probe_slot_without_a_verdict() -> None:
    b = CircuitBreaker(min_calls=1, reset_after=5)
    fail(b, 0.0)
    assert b.before_attempt(5.0) is True
    b.release(probe=True)  # e.g. cancelled, a 429, or a non-outage failure
    assert b.state == "half_open"
    assert b.before_attempt(6.0) is True


def test_late_calls_started_before_it_opened_do_not_move_it() -> None:
    b = CircuitBreaker(min_calls=2, reset_after=10)
    slow = b.before_attempt(0.0)  # a slow call, admitted while closed
    assert slow is False
    fail(b, 1.0, 2.0)
    b.record_failure(3.0, InternalServerError("late"), probe=slow)  # open: not counted
    assert (b.opened_at, b.reason.endswith("500 boom")) == (2.0, True)
    assert b.before_attempt(12.0) is True  # half-open, the probe in flight
    b.record_success(12.5, probe=slow)  # the slow call finally answers: proves little
    assert b.state == "half_open"
    b.record_failure(12.6, InternalServerError("late"), probe=False)
    assert b.state == "half_open"
    b.record_success(13.0, probe=True)
    assert b.state == "closed"


def test_reset_after_zero_half_opens_at_once() -> None:
    b = CircuitBreaker(min_calls=1, reset_after=0)
    fail(b, 4.0)
    assert b.before_attempt(4.0) is True


def test_long_messages_are_shortened_in_the_reason() -> None:
    b = CircuitBreaker(min_calls=1)
    fail(b, 0.0, exc=InternalServerError("x" * 1000))
    assert len(b.reason) < 300
    assert b.reason.endswith("... (800 more characters)")


def test_circuit_open_pickles() -> None:
    e = CircuitOpen(1.0, 31.0, "5 of 6 calls within 10s failed", half_open=True, now=2.0, opening=3)
    back = pickle.loads(pickle.dumps(e))
    assert (back.opened_at, back.reset_at, back.reason, back.half_open, back.now) == (
        1.0,
        31.0,
        "5 of 6 calls within 10s failed",
        True,
        2.0,
    )
    assert (back.opening, str(back)) == (3, str(e))
    plain = CircuitOpen(1.0, 31.0, "5 of 6 calls within 10s failed; the last X: y")
    assert str(plain) == "circuit open (opened after 5 of 6 calls within 10s failed); no call made"


def test_events_is_a_bounded_copy_and_events_since_counts_what_was_dropped() -> None:
    b = CircuitBreaker(min_calls=1, reset_after=1)
    fail(b, 0.0)
    b.events.clear()
    assert len(b.events) == 1
    mark = b.events_recorded
    t = 0.0
    for _ in range(MAX_EVENTS):  # half-open, fail the probe: two events per round
        t += 1.0
        assert b.before_attempt(t)
        b.record_failure(t, InternalServerError("x"), probe=True)
    assert b.events_recorded == 1 + 2 * MAX_EVENTS
    assert len(b.events) == MAX_EVENTS
    assert b.events[-1] == BreakerEvent(t, "opened", b.reason)
    since = b.events_since(mark)
    assert since == b.events  # only the kept ones of the 2 * MAX_EVENTS since
    assert b.events_since(b.events_recorded) == []
    assert b.events_since(b.events_recorded - 2) == b.events[-2:]


def test_watchers_are_woken_on_changes_that_may_let_a_waiter_through() -> None:
    b = CircuitBreaker(min_calls=1, reset_after=5)
    woken: list[str] = []
    b.watch(lambda: woken.append("w"))
    fail(b, 0.0)
    assert woken == ["w"]  # opened: a waiter from an earlier opening gives up
    assert b.before_attempt(5.0)
    with pytest.raises(CircuitOpen) as info:
        b.before_attempt(5.0)
    refusal = info.value
    b.release(probe=True)
    assert woken == ["w", "w"]  # the probe slot is free
    # Watching after a change that came after the refusal wakes at once: not missed.
    late: list[str] = []
    b.watch(lambda: late.append("late"), refusal)
    assert late == ["late"]
    assert b.before_attempt(5.0)
    with pytest.raises(CircuitOpen) as info:
        b.before_attempt(5.0)
    quiet: list[str] = []
    quiet_wake = quiet.append
    b.watch(lambda: quiet_wake("q"), info.value)
    assert quiet == []
    b.record_success(6.0, probe=True)  # closed
    assert quiet == ["q"]
    b.unwatch(lambda: None)  # unknown: no error


# -- across runs and threads ------------------------------------------------------------


def test_rebase_moves_open_times_onto_the_new_clock() -> None:
    a, c = object(), object()
    b = CircuitBreaker(min_calls=2, window=10, reset_after=30)
    b.rebase(a, 1000.0)
    fail(b, 1000.0, 1001.0)
    # Next run: its clock reads 0.0, 11 s (by the caller's reckoning) after the last call.
    b.rebase(c, 0.0, elapsed=11.0)
    assert (b.opened_at, b.reset_at) == (-11.0, 19.0)
    with pytest.raises(CircuitOpen) as info:
        b.before_attempt(18.9)
    assert info.value.reset_at == 19.0
    assert b.before_attempt(19.0) is True
    assert b.events[0].time == 1001.0  # history stays on the clock that recorded it


def test_rebase_moves_counted_failures() -> None:
    a, c = object(), object()
    b = CircuitBreaker(min_calls=2, window=10)
    fail(b, 500.0)
    b.rebase(a, 500.0)  # the first clock is adopted as is
    b.record_failure(3.0, InternalServerError("x"), clock=c)  # 500 -> ~3 - real gap
    assert b.state == "open"


def test_threads_count_every_failure_and_open_once() -> None:
    b = CircuitBreaker(min_calls=800, window=1e9)
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(100):
            b.record_failure(0.0, InternalServerError("x"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert b.state == "open"
    assert [e.kind for e in b.events] == ["opened"]
    assert b.reason.startswith("800 of 800 calls within 1e+09s failed")


def test_inside_trio_run_with_mock_clock() -> None:
    # Ten agents, started 1 s apart, call a provider that is down until t=40; a call
    # takes 1 s; after a failure or a CircuitOpen an agent waits 5 s and tries again.
    b = CircuitBreaker(min_calls=3, window=10, reset_after=15)
    calls: list[float] = []
    outcomes: dict[int, str] = {}

    async def agent(i: int) -> None:
        await trio.sleep(i)
        for _ in range(60):
            now = trio.current_time()
            try:
                probe = b.before_attempt(now)
            except CircuitOpen:
                await trio.sleep(5)
                continue
            calls.append(now)
            await trio.sleep(1)
            if trio.current_time() < 40:
                b.record_failure(trio.current_time(), InternalServerError("down"), probe=probe)
                await trio.sleep(5)
                continue
            b.record_success(trio.current_time(), probe=probe)
            outcomes[i] = "ok"
            return

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(agent, i)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(outcomes) == 10
    kinds = [(e.time, e.kind) for e in b.events]
    # Calls at 0, 1, 2 fail at 1, 2, 3: open at 3, half-open at 18; the probe (18-19)
    # fails: open again until 34; the probe at 34 fails at 35: open until 50; the
    # probe at 50 succeeds at 51 and closes it. (Which agent probes is up to Trio's
    # scheduler; when is not.)
    assert kinds == [
        (3.0, "opened"),
        (18.0, "half_open"),
        (19.0, "opened"),
        (34.0, "half_open"),
        (35.0, "opened"),
        (50.0, "half_open"),
        (51.0, "closed"),
    ]
    # While open, no call was made: the only calls after 3 and before 51 were the
    # probes. (At 3 itself, an agent may get in before the failure that opens it.)
    assert [t for t in calls if 3 < t < 51] == [18.0, 34.0, 50.0]


# -- the state machine as a property ----------------------------------------------------

_NEXT = {None: {"opened"}, "opened": {"half_open"}, "half_open": {"closed", "opened"}}
_NEXT["closed"] = {"opened"}

ops = st.lists(
    st.tuples(
        st.floats(0, 8),  # time advance
        st.sampled_from(["attempt", "success", "failure", "release"]),
        st.integers(0, 1000),  # which outstanding attempt finishes
    ),
    max_size=80,
)


@given(
    failure_rate=st.sampled_from([0.25, 0.5, 2 / 3, 1.0]),
    min_calls=st.integers(1, 4),
    window=st.floats(0.5, 20),
    reset_after=st.floats(0, 20),
    probes=st.integers(1, 3),
    script=ops,
)
def test_property_state_machine(
    failure_rate: float,
    min_calls: int,
    window: float,
    reset_after: float,
    probes: int,
    script: list,
) -> None:
    b = CircuitBreaker(
        failure_rate=failure_rate,
        min_calls=min_calls,
        window=window,
        reset_after=reset_after,
        probes=probes,
    )
    now = 0.0
    outstanding: list[bool] = []  # probe flags of attempts admitted and not yet back
    verdicts: list[tuple[float, bool]] = []  # non-probe verdicts recorded while closed
    admitted = 0  # probes admitted in the current half-open spell
    for gap, op, pick in script:
        now += gap
        if op == "attempt":
            expected = b.state_at(now)
            if expected == "half_open" and b.state == "open":
                admitted = 0
            try:
                probe = b.before_attempt(now)
            except CircuitOpen as e:
                assert expected in ("open", "half_open")
                assert e.opened_at <= now and e.opening == b.openings
                if not e.half_open:
                    assert now < e.reset_at
                continue
            assert probe == (expected == "half_open")
            outstanding.append(probe)
            admitted += probe
            assert sum(outstanding) <= probes
            continue
        if not outstanding:
            continue
        probe = outstanding.pop(pick % len(outstanding))
        before = b.state
        n_events = len(b.events)
        if op == "success":
            if before == "closed" and not probe:
                verdicts.append((now, False))
            b.record_success(now, probe=probe)
        elif op == "failure":
            if before == "closed" and not probe:
                verdicts.append((now, True))
            b.record_failure(now, InternalServerError("x"), probe=probe)
        else:
            b.release(probe=probe)
            admitted -= probe
            assert b.state == before
        new = b.events[n_events:]
        if before == "closed" and not probe:
            recent = [f for t, f in verdicts if t > now - window]
            trips = len(recent) >= min_calls and sum(recent) / len(recent) >= failure_rate
            # Only a failure can trip it, and one that leaves the window over the line does.
            assert bool(new and new[-1].kind == "opened") == (op == "failure" and trips)
        if new and new[-1].kind in ("opened", "closed"):
            verdicts.clear()
        if not probe and before != "closed":
            assert not new  # late non-probe verdicts never move an open circuit
        if probe and before == "half_open":
            assert admitted <= probes
    kinds = [e.kind for e in b.events]
    prev = None
    for kind in kinds:
        assert kind in _NEXT[prev]
        prev = kind
    times = [e.time for e in b.events]
    assert times == sorted(times)
