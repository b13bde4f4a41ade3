"""Recovery: Retry, RateLimit and CircuitBreaker around each agent call, in virtual time.

Every agent here records the virtual time of each of its calls, so the tests state the
exact schedule a policy must produce (MockClock: no real sleeps, no tolerance).
"""

from __future__ import annotations

import asyncio

import mesa
import pytest
import trio
from core_agents import Model

import trio_mesa
from trio_mesa import CircuitBreaker, CircuitOpen, RateLimit, Retry, Status, StepPolicy


class RateLimitError(Exception):
    """Shaped like litellm's and openai's: a status code, maybe a retry_after."""

    def __init__(self, message: str = "429 Too Many Requests", retry_after: float | None = None):
        super().__init__(message)
        self.status_code = 429
        if retry_after is not None:
            self.retry_after = retry_after


class _Script:
    """Fail the first ``fails`` calls with ``error()``, each call taking ``latency``."""

    def __init__(self, model, fails: int = 0, error=RateLimitError, latency: float = 0.0):
        super().__init__(model)
        self.fails = fails
        self.error = error
        self.latency = latency
        self.times: list[float] = []

    def _begin(self) -> None:
        try:
            now = trio.current_time()
        except RuntimeError:  # a worker thread: ask the Trio run
            now = trio.from_thread.run_sync(trio.current_time)
        self.times.append(now)

    def _end(self) -> str:
        if len(self.times) <= self.fails:
            raise self.error()
        return f"done-{self.unique_id}"


@trio_mesa.trio_native
class TrioScript(_Script, mesa.Agent):
    async def astep(self):
        self._begin()
        await trio.sleep(self.latency)
        return self._end()


class AsyncioScript(_Script, mesa.Agent):
    async def astep(self):
        self._begin()
        await asyncio.sleep(self.latency)
        return self._end()


class SyncScript(_Script, mesa.Agent):
    def step(self):
        self._begin()
        return self._end()


SCRIPTS = {"trio": TrioScript, "asyncio": AsyncioScript, "sync": SyncScript}
MODES = [("trio", "inline"), ("asyncio", "inline"), ("sync", "inline"), ("sync", "thread")]
EXACT = Retry(attempts=3, initial=1.0, max_delay=60.0, jitter=False)


@pytest.mark.parametrize(("flavor", "sync_mode"), MODES)
async def test_only_the_failed_agent_is_tried_again_on_the_backoff(mock_clock, flavor, sync_mode):
    model = Model()
    cls = SCRIPTS[flavor]
    flaky = cls(model, fails=2)
    steady = [cls(model) for _ in range(4)]
    report = await trio_mesa.step_agents(model.agents, retry=EXACT, sync_mode=sync_mode)
    outcome = report.by_id()[flaky.unique_id]
    assert (outcome.status, outcome.attempts, outcome.result) == (
        Status.OK,
        3,
        f"done-{flaky.unique_id}",
    )
    # A worker thread reads the clock through the Trio run, and virtual time may have
    # jumped ahead meanwhile (every task is blocked while threads run): counts only.
    exact = sync_mode != "thread"
    assert len(flaky.times) == 3
    if exact:
        assert flaky.times == [0.0, 1.0, 3.0]  # backoff 1 s, then 2 s
        assert outcome.duration == 3.0
    for agent in steady:
        assert len(agent.times) == 1  # never stepped twice
        assert agent.times == [0.0] or not exact
        assert report.by_id()[agent.unique_id].attempts == 1
    assert [o.unique_id for o in report.retried] == [flaky.unique_id]
    assert report.attempts == 7
    assert "1 retried (1 recovered), 7 attempts in all" in str(report)


@pytest.mark.parametrize("flavor", ["trio", "asyncio", "sync"])
async def test_retry_after_wins_over_the_backoff(mock_clock, flavor):
    model = Model()
    agent = SCRIPTS[flavor](model, fails=1, error=lambda: RateLimitError(retry_after=7.5))
    report = await trio_mesa.step_agents(model.agents, retry=EXACT)
    assert report.outcomes[0].status is Status.OK
    assert agent.times == [0.0, 7.5]


async def test_a_failure_that_is_not_transient_is_not_retried(mock_clock):
    model = Model()
    agent = TrioScript(model, fails=5, error=lambda: ValueError("malformed JSON"))
    report = await trio_mesa.step_agents(model.agents, retry=EXACT)
    outcome = report.outcomes[0]
    assert (outcome.status, outcome.attempts, agent.times) == (Status.FAILED, 1, [0.0])
    assert isinstance(outcome.exception, ValueError)


async def test_attempts_run_out_and_the_last_exception_is_kept(mock_clock):
    model = Model()
    agent = TrioScript(model, fails=10)
    report = await trio_mesa.step_agents(model.agents, retry=EXACT)
    outcome = report.outcomes[0]
    assert (outcome.status, outcome.attempts, agent.times) == (Status.FAILED, 3, [0.0, 1.0, 3.0])
    assert any("gave up after 3 attempt(s)" in n for n in outcome.exception.__notes__)


@pytest.mark.parametrize("flavor", ["trio", "asyncio"])
async def test_the_timeout_bounds_the_whole_turn_and_no_wait_crosses_it(mock_clock, flavor):
    # Each attempt takes 1 s and fails; waits 0.5 s then 1 s. With timeout=3 the second
    # attempt ends at 2.5 s, and a 1 s wait would end at 3.5 s: the agent gives up then.
    model = Model()
    agent = SCRIPTS[flavor](model, fails=10, latency=1.0)
    retry = Retry(attempts=5, initial=0.5, jitter=False)
    report = await trio_mesa.step_agents(model.agents, retry=retry, timeout=3)
    outcome = report.outcomes[0]
    assert (outcome.status, outcome.attempts, outcome.duration) == (Status.FAILED, 2, 2.5)
    assert agent.times == [0.0, 1.5]
    assert any("would end past the agent's time limit" in n for n in outcome.exception.__notes__)
    assert trio.current_time() == 2.5


@pytest.mark.parametrize("flavor", ["trio", "asyncio"])
async def test_an_attempt_cut_by_the_timeout_is_timed_out_with_its_attempts(mock_clock, flavor):
    model = Model()
    SCRIPTS[flavor](model, fails=10, latency=2.0)
    retry = Retry(attempts=5, initial=0.5, jitter=False)
    report = await trio_mesa.step_agents(model.agents, retry=retry, timeout=3)
    outcome = report.outcomes[0]
    # Attempt 1: 0-2 s, wait 0.5 s, attempt 2 starts at 2.5 s and is cut at 3 s.
    assert (outcome.status, outcome.attempts, outcome.duration) == (Status.TIMED_OUT, 2, 3.0)


@pytest.mark.parametrize("flavor", ["trio", "asyncio", "sync"])
async def test_agents_start_no_faster_than_the_rate_limit(mock_clock, flavor):
    model = Model()
    agents = [SCRIPTS[flavor](model) for _ in range(6)]
    report = await trio_mesa.step_agents(agents, rate_limit=RateLimit(2))
    assert report.all_ok
    assert sorted(t for a in agents for t in a.times) == [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]


async def test_one_retry_after_pauses_every_agent_sharing_the_rate_limit(mock_clock):
    model = Model()
    first = TrioScript(model, fails=1, error=lambda: RateLimitError(retry_after=3.0))
    others = [TrioScript(model) for _ in range(4)]
    limit = RateLimit(10)  # a slot every 0.1 s
    report = await trio_mesa.step_agents([first, *others], retry=EXACT, rate_limit=limit)
    assert report.all_ok
    assert first.times[0] == 0.0
    # The 429 at t=0 voids the slots at 0.1-0.4 s: nobody starts before 3 s.
    later = sorted([first.times[1]] + [a.times[0] for a in others])
    assert later == pytest.approx([3.0, 3.1, 3.2, 3.3, 3.4])
    assert limit.hold_offs == 1 and limit.last_hold_off.until == 3.0


async def test_a_rate_limit_is_shared_across_steps(mock_clock):
    model = Model()
    agents = [TrioScript(model) for _ in range(2)]
    policy = StepPolicy(rate_limit=RateLimit(1))
    await trio_mesa.step_agents(agents, policy=policy)
    await trio_mesa.step_agents(agents, policy=policy)
    assert sorted(t for a in agents for t in a.times) == [0.0, 1.0, 2.0, 3.0]


class InternalServerError(Exception):
    status_code = 500


async def test_the_circuit_opens_on_outages_and_waiting_agents_call_once_a_probe_closes_it(
    mock_clock,
):
    def agents() -> list[TrioScript]:
        model = Model()
        return [TrioScript(model, fails=1, error=InternalServerError) for _ in range(2)] + [
            TrioScript(model) for _ in range(3)
        ]

    breaker = CircuitBreaker(min_calls=2, window=10, reset_after=30)
    policy = StepPolicy(breaker=breaker, max_concurrency=1, shuffle=False)
    # Time allows waiting: the healthy agents wait for the circuit to half-open at 30;
    # the first is the probe, its success closes the circuit, the others call then.
    group = agents()
    report = await trio_mesa.step_agents(group, policy=policy)
    assert [(o.status, type(o.exception).__name__, o.attempts) for o in report] == [
        (Status.FAILED, "InternalServerError", 1),
        (Status.FAILED, "InternalServerError", 1),
        (Status.OK, "NoneType", 1),
        (Status.OK, "NoneType", 1),
        (Status.OK, "NoneType", 1),
    ]
    assert [a.times for a in group] == [[0.0], [0.0], [30.0], [30.0], [30.0]]
    assert [(e.time, e.kind) for e in report.circuit_events] == [
        (0.0, "opened"),
        (30.0, "half_open"),
        (30.0, "closed"),
    ]
    assert "circuit opened at +0.000 s: 2 of 2 calls within 10s failed" in str(report)
    # Time does not allow it (timeout 10, the circuit half-opens 30 s on): FAILED with
    # CircuitOpen at once, and no call.
    group = agents()
    report = await trio_mesa.step_agents(group, policy=policy.replace(timeout=10))
    assert [(o.status, type(o.exception).__name__, o.attempts) for o in report][2:] == [
        (Status.FAILED, "CircuitOpen", 0)
    ] * 3
    assert [len(a.times) for a in group] == [1, 1, 0, 0, 0]
    assert [o.duration for o in report][2:] == [0.0] * 3
    assert isinstance(report.outcomes[2].exception, CircuitOpen)


async def test_a_429_never_opens_the_circuit(mock_clock):
    model = Model()
    group = [TrioScript(model, fails=1) for _ in range(5)]  # 429s
    breaker = CircuitBreaker(min_calls=2, window=10, reset_after=30)
    report = await trio_mesa.step_agents(group, breaker=breaker, shuffle=False)
    assert [type(o.exception).__name__ for o in report] == ["RateLimitError"] * 5
    assert (breaker.state, report.circuit_events) == ("closed", ())


async def test_a_recovered_agent_does_not_fail_a_strict_step(mock_clock):
    model = Model()
    TrioScript(model, fails=1)
    report = await trio_mesa.step_agents(model.agents, retry=EXACT, strict=True)
    assert report.all_ok


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retry": 3}, "retry must be a trio_mesa.Retry"),
        ({"rate_limit": 50}, "rate_limit must be a trio_mesa.RateLimit"),
        ({"breaker": True}, "breaker must be a trio_mesa.CircuitBreaker"),
    ],
)
def test_policy_values_are_checked_before_any_agent_runs(options, message):
    model = Model()
    agent = SyncScript(model)
    with pytest.raises(TypeError, match=message):
        trio_mesa.run_step(model.agents, **options)
    assert agent.times == []


def test_retries_on_the_asyncio_host_recover_the_failed_agent_only():
    async def main():
        model = Model()
        flaky = AsyncioScript(model, fails=2)
        steady = [AsyncioScript(model) for _ in range(3)]
        retry = Retry(attempts=3, initial=0.01, jitter=False)
        report = await trio_mesa.aio_step_agents(model.agents, retry=retry)
        return report, flaky, steady

    report, flaky, steady = asyncio.run(main())
    assert report.all_ok
    assert report.by_id()[flaky.unique_id].attempts == 3
    assert [len(a.times) for a in steady] == [1, 1, 1]


async def test_fail_fast_fires_on_a_final_failure_not_on_one_that_is_retried(mock_clock):
    model = Model()
    recovering = TrioScript(model, fails=1)  # retried at t=1, then OK
    slow = TrioScript(model, latency=5.0)
    report = await trio_mesa.step_agents(
        [recovering, slow], retry=EXACT, fail_fast=True, shuffle=False
    )
    assert [(o.status, o.attempts) for o in report] == [(Status.OK, 2), (Status.OK, 1)]
    doomed = TrioScript(model, fails=9, error=lambda: ValueError("bad JSON"))
    other = TrioScript(model, latency=5.0)
    report = await trio_mesa.step_agents(
        [doomed, other], retry=EXACT, fail_fast=True, shuffle=False
    )
    assert [o.status for o in report] == [Status.FAILED, Status.CANCELLED]


async def test_an_agent_waiting_at_the_gate_when_the_deadline_passes_times_out(mock_clock):
    model = Model()
    agents = [TrioScript(model) for _ in range(4)]
    report = await trio_mesa.step_agents(
        agents, rate_limit=RateLimit(1), deadline=1.5, shuffle=False
    )
    # Slots at 0, 1, 2, 3 s: the last two never call.
    assert [(o.status, o.attempts) for o in report] == [
        (Status.OK, 1),
        (Status.OK, 1),
        (Status.TIMED_OUT, 0),
        (Status.TIMED_OUT, 0),
    ]
    assert [len(a.times) for a in agents] == [1, 1, 0, 0]
    assert trio.current_time() == 1.5


async def test_a_concurrency_slot_is_held_through_the_waits_between_attempts(mock_clock):
    model = Model()
    flaky = TrioScript(model, fails=1)
    after = TrioScript(model)
    await trio_mesa.step_agents([flaky, after], retry=EXACT, max_concurrency=1, shuffle=False)
    assert flaky.times == [0.0, 1.0]
    assert after.times == [1.0]  # started only when flaky's turn ended
