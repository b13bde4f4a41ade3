"""`trio_mesa.simulate` / `aio_simulate`: the model's own step, every agent-set step
through trio-mesa, reports filed per model step, budgets, reporters, bad input."""

from __future__ import annotations

import asyncio
import io
import json

import mesa
import pytest
import trio
from mesa.agentset import AgentSet, _HardKeyAgentSet
from trio.testing import MockClock

import trio_mesa
from trio_mesa import Budget, RunReport, Status, record_usage, trio_native

PROMPT, COMPLETION = 5, 2  # tokens each agent bills per step
TOKENS = PROMPT + COMPLETION


class TokenAgent(mesa.Agent):
    """A Trio agent that sleeps its own latency (virtual time) and bills 7 tokens."""

    def __init__(self, model: mesa.Model, latency: float, fail_on: tuple[int, ...] = ()):
        super().__init__(model)
        self.latency = latency
        self.fail_on = fail_on
        self.done: list[int] = []

    @trio_native
    async def astep(self) -> int:
        await trio.sleep(self.latency)
        if self.model.steps in self.fail_on:
            raise ValueError(f"agent {self.unique_id} fails in step {self.model.steps}")
        record_usage(prompt_tokens=PROMPT, completion_tokens=COMPLETION)
        self.done.append(self.model.steps)
        return self.model.steps


class TokenModel(mesa.Model):
    """Agent i sleeps i/16 s (distinct, exact in binary); the model does more than step."""

    def __init__(
        self, n: int = 10, *, fail: dict[int, tuple[int, ...]] | None = None, sets_per_step: int = 1
    ) -> None:
        super().__init__(rng=42)
        fail = fail or {}
        for i in range(1, n + 1):
            TokenAgent(self, i / 16, fail.get(i, ()))
        self.sets_per_step = sets_per_step
        self.after: list[int] = []  # the model's own work after its agents stepped
        self.datacollector = mesa.DataCollector(
            model_reporters={**trio_mesa.model_reporters(), "mine": lambda m: len(m.after)}
        )

    def step(self) -> None:
        for _ in range(self.sets_per_step):
            self.agents.shuffle_do("step")
        self.after.append(self.steps)
        self.datacollector.collect(self)


def virtual() -> MockClock:
    return MockClock(autojump_threshold=0)


def test_runs_the_models_own_step_n_times_and_files_each_report() -> None:
    model = TokenModel(10, sets_per_step=2)
    run = trio_mesa.simulate(model, 3, clock=virtual(), progress=False)
    assert isinstance(run, RunReport)
    assert model.after == [1, 2, 3]
    assert [s.step for s in run.steps] == [1, 2, 3]
    assert [len(s.reports) for s in run.steps] == [2, 2, 2]
    assert run.agent_steps == 60
    assert run.counts[Status.OK] == 60 and run.lost == 0
    assert run.usage.total_tokens == 60 * TOKENS
    assert run.usage.calls == 60
    # every agent stepped concurrently: a model step takes the slowest agent's latency
    # twice (two agent-set steps), 10/16 s each, in virtual time
    assert [s.duration for s in run.steps] == [1.25, 1.25, 1.25]
    assert run.stopped_because is None
    assert all(a.done == [1, 1, 2, 2, 3, 3] for a in model.agents)


def test_the_patch_is_scoped_to_the_run() -> None:
    before = (AgentSet.__dict__["shuffle_do"], _HardKeyAgentSet.__dict__["shuffle_do"])
    model = TokenModel(3)
    trio_mesa.simulate(model, 1, clock=virtual(), progress=False)
    assert (AgentSet.__dict__["shuffle_do"], _HardKeyAgentSet.__dict__["shuffle_do"]) == before

    class Boom(TokenModel):
        def step(self) -> None:
            self.agents.shuffle_do("step")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trio_mesa.simulate(Boom(3), 2, clock=virtual(), progress=False)
    assert (AgentSet.__dict__["shuffle_do"], _HardKeyAgentSet.__dict__["shuffle_do"]) == before
    # outside a run, shuffle_do("step") is Mesa's own again: Agent.step, not astep
    model = TokenModel(2)
    model.step()
    assert all(a.done == [] for a in model.agents) and model.after == [1]


def test_user_enabled_automatic_stepping_is_left_as_it_was() -> None:
    from trio_mesa.compat import (
        disable_automatic_parallel_stepping,
        enable_automatic_parallel_stepping,
    )

    enable_automatic_parallel_stepping()
    try:
        patched = _HardKeyAgentSet.__dict__["shuffle_do"]
        trio_mesa.simulate(TokenModel(3), 1, clock=virtual(), progress=False)
        assert _HardKeyAgentSet.__dict__["shuffle_do"] is patched
    finally:
        disable_automatic_parallel_stepping()


def test_policy_options_apply_to_the_agent_steps() -> None:
    model = TokenModel(10)
    run = trio_mesa.simulate(model, 2, clock=virtual(), progress=False, timeout=0.3)
    # agents 1..4 sleep 1/16..4/16 s < 0.3 s; 5..10 time out
    for s in run.steps:
        (report,) = s.reports
        by_id = report.by_id()
        assert {u for u, o in by_id.items() if o.status is Status.OK} == {1, 2, 3, 4}
        assert {u for u, o in by_id.items() if o.status is Status.TIMED_OUT} == set(range(5, 11))
    assert run.lost == 12
    assert run.usage.total_tokens == 8 * TOKENS


def test_budget_after_step_stops_at_the_right_step_in_virtual_time() -> None:
    model = TokenModel(10)
    # 70 tokens a step: 200 is reached during step 3, which finishes (210 tokens)
    run = trio_mesa.simulate(
        model, 10, clock=virtual(), progress=False, budget=Budget(max_tokens=200)
    )
    assert len(run.steps) == 3 and model.after == [1, 2, 3]
    assert run.counts[Status.OK] == 30
    assert run.usage.total_tokens == 210
    assert run.stopped_because == "max_tokens=200 crossed: 210 tokens after step 3"
    assert run.duration == 3 * 10 / 16


def test_budget_max_calls_and_max_cost_unknown() -> None:
    run = trio_mesa.simulate(
        TokenModel(10), 10, clock=virtual(), progress=False, budget=Budget(max_calls=20)
    )
    assert len(run.steps) == 2
    assert run.stopped_because == "max_calls=20 crossed: 20 calls after step 2"
    # cost unknown (record_usage without cost): known_cost stays 0, below any limit
    run = trio_mesa.simulate(
        TokenModel(3), 4, clock=virtual(), progress=False, budget=Budget(max_cost=0.01)
    )
    assert run.stopped_because is None and len(run.steps) == 4


def test_budget_now_cancels_agents_in_flight() -> None:
    model = TokenModel(10)
    # step 2 brings the run from 70 to 140 tokens at its 10th agent; with 100 the limit
    # is reached by the 5th agent of step 2 to finish (agent 5, at 5/16 s): agents 6..10
    # are still sleeping and are cancelled; model.step() is not called again
    run = trio_mesa.simulate(
        model, 10, clock=virtual(), progress=False, budget=Budget(max_tokens=100, stop="now")
    )
    assert len(run.steps) == 2 and model.after == [1, 2]
    (report,) = run.steps[1].reports
    by_id = report.by_id()
    assert {u for u, o in by_id.items() if o.status is Status.OK} == {1, 2, 3, 4, 5}
    cancelled = [o for o in report if o.status is Status.CANCELLED]
    assert {o.unique_id for o in cancelled} == {6, 7, 8, 9, 10}
    assert all("max_tokens=100 crossed" in str(o.exception) for o in cancelled)
    assert run.stopped_because == "max_tokens=100 crossed: 105 tokens in step 2"
    assert run.steps[1].duration == 5 / 16
    assert run.lost == 5
    assert all(a.done == [1, 2] for a in model.agents if a.unique_id <= 5)


def test_budget_now_cancels_the_later_agent_set_steps_of_that_model_step() -> None:
    model = TokenModel(4, sets_per_step=2)
    run = trio_mesa.simulate(
        model, 5, clock=virtual(), progress=False, budget=Budget(max_calls=2, stop="now")
    )
    assert len(run.steps) == 1
    first, second = run.steps[0].reports
    assert [o.status for o in sorted(first, key=lambda o: o.unique_id)] == [
        Status.OK,
        Status.OK,
        Status.CANCELLED,
        Status.CANCELLED,
    ]
    assert all(o.status is Status.CANCELLED and o.attempts == 0 for o in second)
    assert model.after == [1]  # model.step() itself ran to its end


def test_max_lost_fraction() -> None:
    # agent 1 fails in every step from 3 on: 1 lost in 10 is 0.1, not above 0.1; agents
    # 1 and 2 failing in step 4 make 3 of 40 (0.075) ... use a clear case:
    model = TokenModel(4, fail={1: (2,), 2: (2,)})
    run = trio_mesa.simulate(
        model, 5, clock=virtual(), progress=False, budget=Budget(max_lost_fraction=0.2)
    )
    # step 1: 0/4; step 2: 2/8 = 0.25 > 0.2: stop after step 2
    assert len(run.steps) == 2
    assert run.stopped_because == (
        "max_lost_fraction=0.2 crossed: 2 of 8 agent-steps lost (25.0%) after step 2"
    )


def test_model_reporters_read_the_current_step_with_a_real_datacollector() -> None:
    model = TokenModel(4, fail={1: (2,), 3: (2, 3)})
    trio_mesa.simulate(model, 3, clock=virtual(), progress=False)
    frame = model.datacollector.get_model_vars_dataframe()
    assert list(frame["ok"]) == [4, 2, 3]
    assert list(frame["failed"]) == [0, 2, 1]
    assert list(frame["timed_out"]) == [0, 0, 0]
    assert list(frame["retries"]) == [0, 0, 0]
    assert list(frame["tokens"]) == [4 * TOKENS, 2 * TOKENS, 3 * TOKENS]
    # record_usage gave no cost: unknown, NaN (pandas' missing), in a float column
    assert frame["cost"].isna().all() and frame["cost"].dtype == "float64"
    assert list(frame["mine"]) == [1, 2, 3]


class SilentAgent(TokenAgent):
    """Like TokenAgent, but its client reports no usage (no litellm, no record_usage)."""

    @trio_native
    async def astep(self) -> int:
        await trio.sleep(self.latency)
        return self.model.steps


class SilentModel(TokenModel):
    def __init__(self, n: int) -> None:
        super().__init__(0)
        for i in range(1, n + 1):
            SilentAgent(self, i / 16)


def test_untracked_usage_is_unknown_not_free() -> None:
    model = SilentModel(3)
    run = trio_mesa.simulate(model, 2, clock=virtual(), progress=False)
    # Mesa's DataCollector: NaN, pandas' "missing", in float columns (None would make an
    # all-unknown column dtype object, which .plot() refuses); never 0 tokens, $0.0
    frame = model.datacollector.get_model_vars_dataframe()
    assert frame["tokens"].isna().all() and frame["tokens"].dtype == "float64"
    assert frame["cost"].isna().all() and frame["cost"].dtype == "float64"
    frame["tokens"].plot  # noqa: B018 - a numeric column: plotting would work
    assert run.usage.cost is None and not run.usage.recorded
    records = run.to_records()
    assert {(r["prompt_tokens"], r["completion_tokens"], r["cost"]) for r in records} == {
        (None, None, None)
    }
    assert json.loads(run.to_json())["usage"]["cost"] is None
    assert str(run.usage) == "no LLM calls recorded: tokens n/a, cost unknown"
    assert "tokens=n/a" in repr(run)
    table = str(run).splitlines()
    assert table[1].split()[-2] == "tokens" and table[2].split()[-2] == "n/a"
    # the live display says so too
    from trio_mesa._progress import ProgressView

    class Finished:
        usage, finished, requested, ok, failed, in_flight = run.usage, [1, 2], 2, 6, 0, 0
        stopped_because = None

        def eta(self) -> None:
            return None

    figures = ProgressView(Finished()).figures()  # type: ignore[arg-type]
    assert figures["tokens"] is None and figures["cost"] is None
    rich = pytest.importorskip("rich.console")
    out = rich.Console(width=80, record=True, color_system=None, file=io.StringIO())
    out.print(ProgressView(Finished()))  # type: ignore[arg-type]
    text = out.export_text()
    assert "tokens n/a  cost unknown" in text and "$0.0000" not in text


def test_outcomes_is_a_property_everywhere_and_the_old_call_warns() -> None:
    model = TokenModel(3, sets_per_step=2)
    run = trio_mesa.simulate(model, 2, clock=virtual(), progress=False)
    step = run.steps[0]
    report = step.reports[0]
    assert isinstance(report.outcomes, tuple)  # StepReport: always an attribute
    assert isinstance(step.outcomes, tuple) and isinstance(run.outcomes, tuple)
    assert step.outcomes == step.reports[0].outcomes + step.reports[1].outcomes
    assert run.outcomes == run.steps[0].outcomes + run.steps[1].outcomes
    assert len(run.outcomes) == 12
    # the old spelling, a method call, still gives every outcome, with a warning
    for owner in (step, run):
        with pytest.warns(DeprecationWarning, match=r"write \.outcomes, not \.outcomes\(\)"):
            assert list(owner.outcomes()) == list(owner.outcomes)


def test_run_report_says_why_agent_steps_were_lost() -> None:
    # agents 1 and 3 fail (ValueError) in steps 2 and 3; agent 4 (0.25 s) always times out
    model = TokenModel(4, fail={1: (2, 3), 3: (2,)})
    run = trio_mesa.simulate(model, 3, clock=virtual(), progress=False, timeout=0.2)
    assert run.failures_by_type == {
        "AgentTimeout": (3, "step 1, agent 4: its timeout of 0.2 s elapsed"),
        "ValueError": (3, "step 2, agent 3: agent 3 fails in step 2"),
    }
    lines = str(run).splitlines()
    assert lines[-3:] == [
        "lost agent-steps by exception type:",
        "       3  AgentTimeout, e.g. step 1, agent 4: its timeout of 0.2 s elapsed",
        "       3  ValueError, e.g. step 2, agent 3: agent 3 fails in step 2",
    ]
    assert all(len(line) <= 80 for line in lines)
    doc = json.loads(run.to_json())
    assert doc["failures_by_type"]["ValueError"] == {
        "count": 3,
        "example": "step 2, agent 3: agent 3 fails in step 2",
    }


def test_run_report_records_json_str_repr() -> None:
    model = TokenModel(3, fail={2: (2,)})
    run = trio_mesa.simulate(model, 2, clock=virtual(), progress=False)
    records = run.to_records()
    assert len(records) == 6
    assert [r["step"] for r in records] == [1, 1, 1, 2, 2, 2]
    failed = [r for r in records if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["unique_id"] == 2 and failed[0]["step"] == 2
    assert failed[0]["exception_type"] == "ValueError"
    assert failed[0]["exception_message"] == "agent 2 fails in step 2"
    doc = json.loads(run.to_json())
    assert doc["completed"] == 2 and doc["requested"] == 2
    assert doc["counts"]["ok"] == 5 and doc["counts"]["failed"] == 1 and doc["lost"] == 1
    assert doc["usage"]["prompt_tokens"] == 5 * PROMPT
    assert doc["records"] == json.loads(json.dumps(records))
    assert repr(run) == "<RunReport steps=2/2 OK=5 FAILED=1 tokens=35 duration=0.375>"
    text = str(run)
    assert text.splitlines()[0].startswith("run: 2/2 steps, 6 agent-steps (5 ok, 1 failed)")
    assert "1 lost" in text
    assert run.usage_by_agent() == {
        1: trio_mesa.Usage(2, 2 * PROMPT, 2 * COMPLETION, 0.0, 2),
        2: trio_mesa.Usage(1, PROMPT, COMPLETION, 0.0, 1),
        3: trio_mesa.Usage(2, 2 * PROMPT, 2 * COMPLETION, 0.0, 2),
    }
    with pytest.raises(AttributeError):
        run.requested = 5  # type: ignore[misc]


def test_zero_steps() -> None:
    model = TokenModel(2)
    run = trio_mesa.simulate(model, 0, progress=False)
    assert run.steps == () and model.after == [] and run.stopped_because is None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"steps": 1.5}, TypeError, "steps must be an integer >= 0, not 1.5"),
        ({"steps": True}, TypeError, "steps must be an integer >= 0, not True"),
        ({"steps": -1}, ValueError, "steps must be an integer >= 0, not -1"),
        ({"steps": 10**8}, ValueError, "steps must be .* at most 10,000,000"),
        ({"progress": 1}, TypeError, "progress must be True, False or None"),
        ({"budget": {"max_tokens": 1}}, TypeError, "budget must be a trio_mesa.Budget"),
        ({"timeout": -1}, ValueError, "timeout"),
        ({"nonsense": 1}, TypeError, "nonsense"),
    ],
)
def test_bad_arguments_fail_before_the_first_step(kwargs, error, match) -> None:
    model = TokenModel(2)
    args = {"steps": 2, **kwargs}
    with pytest.raises(error, match=match):
        trio_mesa.simulate(model, **args)
    assert model.after == [] and model.steps == 0


def test_a_model_without_step_is_refused() -> None:
    with pytest.raises(TypeError, match=r"simulate\(\): model must have a callable step"):
        trio_mesa.simulate(object(), 1)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"max_calls": True}, TypeError, "max_calls must be an integer >= 0, not True"),
        ({"max_calls": 1.0}, TypeError, "max_calls must be an integer"),
        ({"max_tokens": -1}, ValueError, "max_tokens must be an integer >= 0"),
        ({"max_tokens": 10**13}, ValueError, "max_tokens must be .* at most 1,000,000,000,000"),
        ({"max_cost": float("nan")}, ValueError, "max_cost must be a non-negative finite"),
        ({"max_cost": float("inf")}, ValueError, "max_cost must be a non-negative finite"),
        ({"max_cost": 10**400}, ValueError, "max_cost is too large"),
        ({"max_cost": "1"}, TypeError, "max_cost must be a number"),
        ({"max_lost_fraction": 1.5}, ValueError, r"max_lost_fraction must be .* in \[0, 1\]"),
        ({"max_lost_fraction": -0.1}, ValueError, r"max_lost_fraction must be .* in \[0, 1\]"),
        ({"stop": "later"}, ValueError, "stop must be 'after_step' or 'now'"),
    ],
)
def test_budget_validates_every_field(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        Budget(**kwargs)


def test_simulate_refuses_a_running_loop() -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError, match="aio_simulate"):
            trio_mesa.simulate(TokenModel(1), 1)

    asyncio.run(main())


class AioAgent(mesa.Agent):
    """An asyncio agent using a lock made before the run: it must stay on one loop."""

    lock: asyncio.Lock | None = None

    async def astep(self) -> int:
        assert AioAgent.lock is not None
        async with AioAgent.lock:
            await asyncio.sleep(0)
        record_usage(prompt_tokens=3, completion_tokens=1)
        return self.model.steps


class AioModel(mesa.Model):
    def __init__(self, n: int) -> None:
        super().__init__(rng=1)
        for _ in range(n):
            AioAgent(self)
        self.loops: set[int] = set()

    def step(self) -> None:
        self.agents.shuffle_do("step")


def test_aio_simulate_keeps_agents_on_the_callers_loop() -> None:
    async def main() -> RunReport:
        AioAgent.lock = asyncio.Lock()  # bound to this loop at first use
        return await trio_mesa.aio_simulate(AioModel(5), 3, progress=False)

    run = asyncio.run(main())
    assert len(run.steps) == 3 and run.counts[Status.OK] == 15
    assert run.usage.total_tokens == 15 * 4


def test_simulate_trio_host_keeps_asyncio_agents_on_one_loop() -> None:
    loops: set[int] = set()

    class LoopAgent(mesa.Agent):
        async def astep(self) -> None:
            loops.add(id(asyncio.get_running_loop()))
            await asyncio.sleep(0)

    class M(mesa.Model):
        def __init__(self) -> None:
            super().__init__(rng=3)
            for _ in range(4):
                LoopAgent(self)

        def step(self) -> None:
            self.agents.shuffle_do("step")

    run = trio_mesa.simulate(M(), 3, progress=False)
    assert run.counts[Status.OK] == 12
    assert len(loops) == 1


class TwoKinds(mesa.Model):
    """Steps agents_by_type (a _HardKeyAgentSet), a selected AgentSet with "astep", and
    do_async: three agent-set steps in one model step, each filed under it."""

    def __init__(self) -> None:
        super().__init__(rng=5)
        for i in range(1, 5):
            TokenAgent(self, i / 16)

    def step(self) -> None:
        self.agents_by_type[TokenAgent].shuffle_do("step")
        odd = self.agents.select(lambda a: a.unique_id % 2 == 1)
        assert type(odd) is AgentSet
        odd.shuffle_do("astep")
        results = asyncio.run(self.agents.do_async("astep"))  # compat's, in this thread
        self.results = sorted(r for r in results)


def test_every_kind_of_agent_set_call_is_stepped_and_filed() -> None:
    model = TwoKinds()
    run = trio_mesa.simulate(model, 2, clock=virtual(), progress=False, timeout=10)
    assert [len(s.reports) for s in run.steps] == [3, 3]
    for s in run.steps:
        by_type, odd, all_async = s.reports
        assert sorted(o.unique_id for o in by_type) == [1, 2, 3, 4]
        assert sorted(o.unique_id for o in odd) == [1, 3]
        assert sorted(o.unique_id for o in all_async) == [1, 2, 3, 4]
        assert all(o.status is Status.OK for o in s.outcomes)
    assert model.results == [2, 2, 2, 2]
    assert all(
        a.done == [1, 1, 1, 2, 2, 2] if a.unique_id % 2 else a.done == [1, 1, 2, 2]
        for a in model.agents
    )
    assert run.usage.calls == 2 * (4 + 2 + 4)


def test_an_error_in_model_step_ends_the_run_and_propagates() -> None:
    class Broken(TokenModel):
        def step(self) -> None:
            super().step()
            if self.steps == 2:
                raise RuntimeError("the model's own bug")

    model = Broken(3)
    with pytest.raises(RuntimeError, match="the model's own bug"):
        trio_mesa.simulate(model, 5, clock=virtual(), progress=False)
    assert model.after == [1, 2]


def test_strict_mode_step_failed_propagates_from_the_model_step() -> None:
    model = TokenModel(3, fail={2: (1,)})
    with pytest.raises(trio_mesa.StepFailed):
        trio_mesa.simulate(model, 3, clock=virtual(), progress=False, strict=True)
    assert model.after == []


def test_aio_simulate_budget_and_reporters() -> None:
    async def main() -> RunReport:
        AioAgent.lock = asyncio.Lock()
        return await trio_mesa.aio_simulate(
            AioModel(5), 10, progress=False, budget=Budget(max_tokens=40)
        )

    run = asyncio.run(main())
    # 20 tokens a step: 40 is reached in step 2
    assert len(run.steps) == 2
    assert run.stopped_because == "max_tokens=40 crossed: 40 tokens after step 2"


def test_keyboard_interrupt_from_an_agent_cancels_the_rest_and_unpatches() -> None:
    before = _HardKeyAgentSet.__dict__["shuffle_do"]

    class Interrupting(TokenAgent):
        @trio_native
        async def astep(self) -> int:
            if self.model.steps == 2:
                raise KeyboardInterrupt
            return await super().astep()

    model = TokenModel(3)
    Interrupting(model, 0.5)
    with pytest.raises(KeyboardInterrupt):
        trio_mesa.simulate(model, 5, clock=virtual(), progress=False)
    assert model.after == [1]
    assert _HardKeyAgentSet.__dict__["shuffle_do"] is before
    # the agents sleeping when it happened were cancelled: none recorded step 2
    assert all(a.done == [1] for a in model.agents)
