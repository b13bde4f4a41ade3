"""Run directories: ``simulate(checkpoint=DIR)``, ``resume(DIR)``, and what they refuse."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import mesa
import pytest
import trio
from trio.testing import MockClock

import trio_mesa
from trio_mesa import Budget, CheckpointError, RunReport, Status, record_usage, trio_native
from trio_mesa._checkpoint import RunDirectory

PROMPT, COMPLETION = 5, 2


class Interrupt:
    """Raises KeyboardInterrupt from agent 1's step ``at`` (once, in this process)."""

    at: int | None = None


class TokenAgent(mesa.Agent):
    def __init__(self, model: mesa.Model, latency: float) -> None:
        super().__init__(model)
        self.latency = latency
        self.done: list[int] = []

    @trio_native
    async def astep(self) -> int:
        await trio.sleep(self.latency)
        if self.unique_id == 1 and self.model.steps == Interrupt.at:
            Interrupt.at = None
            raise KeyboardInterrupt
        if self.unique_id == 2 and self.model.steps == 2:
            raise ValueError("agent 2 fails in step 2")
        record_usage(prompt_tokens=PROMPT, completion_tokens=COMPLETION, cost=0.5)
        self.done.append(self.model.steps)
        return self.model.steps


class TokenModel(mesa.Model):
    def __init__(self, n: int = 4) -> None:
        super().__init__(rng=42)
        for i in range(1, n + 1):
            TokenAgent(self, i / 16)
        self.datacollector = mesa.DataCollector(model_reporters={"n": lambda m: len(m.agents)})

    def step(self) -> None:
        self.agents.shuffle_do("step")
        self.datacollector.collect(self)


def virtual() -> MockClock:
    return MockClock(autojump_threshold=0)


def table(report: RunReport) -> list[list[tuple[object, ...]]]:
    return [
        [
            (
                o.unique_id,
                type(o.agent).__name__,
                o.status,
                type(o.exception).__name__ if o.exception else None,
                str(o.exception) if o.exception else None,
                o.result,
                o.attempts,
                o.usage,
            )
            for o in s.outcomes
        ]
        for s in report.steps
    ]


def state(model: TokenModel) -> object:
    return (
        model.steps,
        {a.unique_id: a.done for a in model.agents},
        model.random.getstate(),
        model.datacollector.get_model_vars_dataframe().to_dict(),
    )


def test_a_resumed_run_equals_the_run_never_stopped(tmp_path: Path) -> None:
    whole_model = TokenModel()
    whole = trio_mesa.simulate(whole_model, 5, clock=virtual(), progress=False)
    model = TokenModel()
    first = trio_mesa.simulate(
        model,
        5,
        checkpoint=tmp_path / "run",
        clock=virtual(),
        progress=False,
        budget=Budget(max_calls=8),
    )
    assert len(first.steps) == 3  # 4 + 3 (agent 2 failed in step 2) + 4 calls
    assert "max_calls=8" in (first.stopped_because or "")
    assert "trio_mesa.resume(" in str(first)
    again = trio_mesa.resume(tmp_path / "run", budget=Budget(max_calls=100), clock=virtual())
    assert again.resumed_after == (3,)
    assert len(again.steps) == 5 and again.stopped_because is None
    assert table(again) == table(whole)
    assert again.usage == whole.usage  # the whole run's, steps before the resume included
    _, last, _ = RunDirectory.open("test", tmp_path / "run").newest_snapshot()
    assert state(last) == state(whole_model)
    assert "resumed after step 3" in str(again)


def test_a_budget_counts_the_whole_run_across_resumes(tmp_path: Path) -> None:
    report = trio_mesa.simulate(
        TokenModel(),
        10,
        checkpoint=tmp_path / "run",
        clock=virtual(),
        progress=False,
        budget=Budget(max_cost=4),
    )
    # $2 a step ($1.5 in step 2, where agent 2 fails); stop="after_step" finishes the step.
    assert report.usage.known_cost == 5.5 and len(report.steps) == 3
    resumed = trio_mesa.resume(tmp_path / "run", budget=Budget(max_cost=8), clock=virtual())
    assert resumed.usage.known_cost == 9.5 and len(resumed.steps) == 5
    assert resumed.stopped_because == "max_cost=8 crossed: $9.5000 after step 5"
    # The same budget again: it is spent, so no step runs.
    same = trio_mesa.resume(tmp_path / "run", budget=Budget(max_cost=8), clock=virtual())
    assert len(same.steps) == 5 and same.usage.known_cost == 9.5
    assert same.stopped_because == "max_cost=8 crossed: $9.5000 before step 6 (resumed)"
    assert same.resumed_after == (3, 5)


def test_ctrl_c_leaves_the_last_snapshot_and_says_how_to_resume(tmp_path: Path) -> None:
    Interrupt.at = 3
    model = TokenModel()
    with pytest.raises(KeyboardInterrupt) as caught:
        trio_mesa.simulate(model, 4, checkpoint=tmp_path / "run", clock=virtual(), progress=False)
    notes = "\n".join(getattr(caught.value, "__notes__", []))
    assert f"trio_mesa.resume({str(tmp_path / 'run')!r})" in notes
    assert "step 2 is its newest snapshot" in notes
    report = trio_mesa.resume(tmp_path / "run", clock=virtual())
    assert report.resumed_after == (2,)
    assert [s.step for s in report.steps] == [1, 2, 3, 4]
    assert report.counts[Status.OK] == 15 and report.counts[Status.FAILED] == 1


def test_aio_simulate_and_aio_resume(tmp_path: Path) -> None:
    class AioAgent(mesa.Agent):
        async def astep(self) -> int:
            await asyncio.sleep(0)
            return self.unique_id

    class AioModel(mesa.Model):
        def __init__(self) -> None:
            super().__init__(rng=1)
            for _ in range(3):
                AioAgent(self)

        def step(self) -> None:
            self.agents.shuffle_do("astep")

    async def main() -> tuple[RunReport, RunReport]:
        first = await trio_mesa.aio_simulate(
            AioModel(), 2, checkpoint=tmp_path / "run", progress=False
        )
        rest = await trio_mesa.aio_resume(tmp_path / "run", steps=4)
        return first, rest

    first, rest = asyncio.run(main())
    assert len(first.steps) == 2 and len(rest.steps) == 4 and rest.resumed_after == (2,)
    assert rest.counts[Status.OK] == 12


def test_run_report_from_json_gives_the_report_back() -> None:
    report = trio_mesa.simulate(TokenModel(), 3, clock=virtual(), progress=False)
    back = RunReport.from_json(report.to_json())
    assert table(back) == table(report)
    assert [s.duration for s in back.steps] == [s.duration for s in report.steps]
    assert back.usage == report.usage and back.requested == 3
    assert str(back) == str(report)
    with pytest.raises(ValueError, match=r"not a RunReport\.to_json document"):
        RunReport.from_json('{"requested": 3}')


# -- refused -------------------------------------------------------------------------------


class Unpicklable(TokenModel):
    def __init__(self) -> None:
        super().__init__()
        self.stepped = 0
        self.client = {"lock": threading.Lock()}

    def step(self) -> None:
        self.stepped += 1


def test_a_model_that_cannot_be_snapshotted_is_refused_before_step_1(tmp_path: Path) -> None:
    model = Unpicklable()
    with pytest.raises(CheckpointError, match=r"model\.client\['lock'\] \(lock\)"):
        trio_mesa.simulate(model, 3, checkpoint=tmp_path / "run", clock=virtual())
    assert model.stepped == 0


def test_a_checkpoint_path_that_is_a_file_or_holds_something_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    with pytest.raises(CheckpointError, match="this is a file"):
        trio_mesa.simulate(TokenModel(), 1, checkpoint=file)
    with pytest.raises(CheckpointError, match="cannot"):
        trio_mesa.simulate(TokenModel(), 1, checkpoint=file / "run")
    with pytest.raises(CheckpointError, match=r"not empty \(file\)"):
        trio_mesa.simulate(TokenModel(), 1, checkpoint=tmp_path)
    trio_mesa.simulate(TokenModel(), 1, checkpoint=tmp_path / "run", clock=virtual())
    with pytest.raises(CheckpointError, match=r"holds a run of .*TokenModel \(1 steps\).*resume"):
        trio_mesa.simulate(TokenModel(), 1, checkpoint=tmp_path / "run")
    with pytest.raises(ValueError, match="cassette= or checkpoint="):
        trio_mesa.simulate(TokenModel(), 1, checkpoint=tmp_path / "b", cassette=tmp_path / "c")


@pytest.fixture
def kept(tmp_path: Path) -> Path:
    trio_mesa.simulate(TokenModel(), 3, checkpoint=tmp_path / "run", clock=virtual(), keep=2)
    return tmp_path / "run"


def test_only_the_last_keep_snapshots_are_kept(kept: Path) -> None:
    assert sorted(p.name for p in kept.glob("snapshot-*")) == [
        "snapshot-00000002.pkl",
        "snapshot-00000003.pkl",
    ]
    manifest = json.loads((kept / "manifest.json").read_text())
    assert manifest["model_class"].endswith("TokenModel") and manifest["steps"] == 3
    assert set(manifest) >= {"trio_mesa", "mesa", "python", "budget", "policy", "snapshots"}


def test_an_edited_snapshot_is_refused_never_loaded(kept: Path) -> None:
    snapshot = kept / "snapshot-00000003.pkl"
    data = bytearray(snapshot.read_bytes())
    data[-5] ^= 1
    snapshot.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"snapshot-00000003\.pkl: digest .* differs"):
        trio_mesa.resume(kept, steps=4, clock=virtual())


def test_a_cut_last_ledger_line_is_a_step_not_finished(kept: Path) -> None:
    ledger = kept / "ledger.jsonl"
    lines = ledger.read_bytes().split(b"\n")
    ledger.write_bytes(b"\n".join(lines[:2]) + b"\n" + lines[2][:40])
    manifest = json.loads((kept / "manifest.json").read_text())
    manifest["snapshots"] = manifest["snapshots"][:1]  # the snapshot of step 2
    (kept / "manifest.json").write_text(json.dumps(manifest))
    report = trio_mesa.resume(kept, clock=virtual())
    assert report.resumed_after == (2,) and [s.step for s in report.steps] == [1, 2, 3]
    assert len(ledger.read_bytes().split(b"\n")) == 4  # three whole lines again


def test_a_damaged_ledger_line_is_refused_naming_it(kept: Path) -> None:
    ledger = kept / "ledger.jsonl"
    lines = ledger.read_bytes().split(b"\n")
    lines[1] = b'{"step": 2'
    ledger.write_bytes(b"\n".join(lines))
    with pytest.raises(CheckpointError, match=r"ledger\.jsonl: line 2: not a ledger line"):
        trio_mesa.resume(kept, steps=4, clock=virtual())


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("trio_mesa", "0.0.1", "made by trio-mesa '0.0.1'"),
        ("model_class", "other.Model", "holds a model of class .*TokenModel, the run's is other"),
        ("version", 99, "run directory format 99"),
    ],
)
def test_a_directory_of_another_run_is_refused(kept: Path, field, value, message) -> None:
    manifest = json.loads((kept / "manifest.json").read_text())
    manifest[field] = value
    (kept / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=message):
        trio_mesa.resume(kept, steps=4, clock=virtual())


def test_resume_refuses_fewer_steps_than_done_and_what_is_no_run(kept: Path, tmp_path) -> None:
    with pytest.raises(CheckpointError, match="steps=2, but the run has finished 3 steps"):
        trio_mesa.resume(kept, steps=2, clock=virtual())
    with pytest.raises(CheckpointError, match="no manifest"):
        trio_mesa.resume(tmp_path, clock=virtual())


def test_resume_uses_the_runs_policy_locks_and_all(tmp_path: Path) -> None:
    policy = trio_mesa.StepPolicy(
        timeout=5, breaker=trio_mesa.CircuitBreaker(), rate_limit=trio_mesa.RateLimit(1000)
    )
    first = trio_mesa.simulate(
        TokenModel(),
        4,
        checkpoint=tmp_path / "run",
        clock=virtual(),
        policy=policy,
        budget=Budget(max_calls=4),
        progress=False,
    )
    assert len(first.steps) == 1
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["settings_error"] is None
    rest = trio_mesa.resume(tmp_path / "run", budget=Budget(), clock=virtual())
    assert [s.step for s in rest.steps] == [1, 2, 3, 4] and rest.counts[Status.OK] == 15


class Counting:
    """A hook holding a generator (which does not pickle)."""

    def __init__(self) -> None:
        self.numbers = iter(range(10**6))
        self.gen = (n for n in self.numbers)

    def on_report(self, report: object) -> None:
        next(self.gen)


def test_a_policy_that_does_not_pickle_is_asked_for_on_resume(tmp_path: Path) -> None:
    Interrupt.at = 2
    with pytest.raises(KeyboardInterrupt):
        trio_mesa.simulate(
            TokenModel(), 3, checkpoint=tmp_path / "run", clock=virtual(), hooks=(Counting(),)
        )
    with pytest.raises(CheckpointError, match=r"\['options'\]\['hooks'\]\[0\]\.gen \(generator\)"):
        trio_mesa.resume(tmp_path / "run", clock=virtual())
    report = trio_mesa.resume(tmp_path / "run", clock=virtual(), hooks=(Counting(),))
    assert report.resumed_after == (1,) and len(report.steps) == 3
