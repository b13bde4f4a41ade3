"""trio_mesa.compat with recovery policies: Retry and RateLimit through configure/policy."""

from __future__ import annotations

import asyncio

import mesa
import pytest

import trio_mesa
from trio_mesa import RateLimit, Retry, Status, compat


class Flaky(mesa.Agent):
    """Fails its first ``fails`` calls with a 429-shaped error."""

    def __init__(self, model, fails: int = 0) -> None:
        super().__init__(model)
        self.fails = fails
        self.calls = 0

    def _call(self) -> str:
        self.calls += 1
        if self.calls <= self.fails:
            error = RuntimeError("429 Too Many Requests")
            error.status_code = 429  # type: ignore[attr-defined]
            raise error
        return "ok"


class AsyncFlaky(Flaky):
    async def astep(self) -> str:
        await asyncio.sleep(0)
        return self._call()


class SyncFlaky(Flaky):
    def step(self) -> str:
        return self._call()


QUICK = Retry(attempts=3, initial=0.001, max_delay=0.01, jitter=False)


def test_a_scoped_retry_recovers_mesa_llm_style_agents_on_the_callers_loop() -> None:
    model = mesa.Model(rng=1)
    flaky = AsyncFlaky(model, fails=2)
    steady = [AsyncFlaky(model) for _ in range(3)]

    async def main() -> trio_mesa.StepReport:
        with compat.policy(retry=QUICK):
            return await compat.step_agents_parallel(list(model.agents))

    report = asyncio.run(main())
    assert report.all_ok
    assert report.by_id()[flaky.unique_id].attempts == 3
    assert [a.calls for a in steady] == [1, 1, 1]


def test_configured_retry_and_rate_limit_apply_to_threaded_stepping() -> None:
    saved = compat.configure()
    model = mesa.Model(rng=1)
    agents = [SyncFlaky(model, fails=1) for _ in range(3)]
    try:
        compat.configure(retry=QUICK, rate_limit=RateLimit(1000))
        report = compat.step_agents_multithreaded(agents)
    finally:
        compat.configure(**saved.as_kwargs())
    assert [(o.status, o.attempts) for o in report] == [(Status.OK, 2)] * 3
    assert compat.configure().retry is saved.retry


@pytest.mark.parametrize(
    ("options", "message"),
    [({"retry": 3}, "retry must be"), ({"rate_limit": "50/s"}, "rate_limit must be")],
)
def test_compat_refuses_what_step_policy_refuses(options, message) -> None:
    with pytest.raises(TypeError, match=rf"trio_mesa.compat.configure\(\): {message}"):
        compat.configure(**options)
