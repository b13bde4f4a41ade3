"""Scenario runs kept in a run directory: ``run SCENARIO --checkpoint DIR`` and ``resume DIR``.

A checkpointed run goes through `trio_mesa.simulate` (``checkpoint=DIR``), not the
runner's own step loop, so it can be killed at any instant and continued by
`trio_mesa.resume`; each step is then checked against the oracle by its outcomes
(status and exception type of every agent: what the ledger keeps of a step that ran in
another process). The scenario, seed and clock travel in the snapshot, on the model
(``model.cli_run``), so ``resume DIR`` needs nothing but the directory.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import trio_mesa
from trio_mesa import RunReport, Status
from trio_mesa._checkpoint import RunDirectory
from trio_mesa._text import CELL_LIMIT, describe_exception

from ._agents import FakeLLMModel
from ._oracle import ExpectedRun, ExpectedStep, expected_run
from ._plan import REAL_TIME_MARGIN
from ._runner import RunResult, StepResult, _mock_clock
from ._scenario import Scenario


def _expected(scenario: Scenario, seed: int | None, real_time: bool) -> tuple[ExpectedRun, float]:
    scale = scenario.real_time_scale if real_time else 1.0
    tolerance = REAL_TIME_MARGIN / scale if real_time else 0.0
    return expected_run(scenario, seed, tolerance=tolerance), scale


def run_checkpointed(
    scenario: Scenario,
    checkpoint: str | os.PathLike[str],
    seed: int | None = None,
    *,
    real_time: bool = False,
    every: int = 1,
) -> RunResult:
    """Run ``scenario`` through `trio_mesa.simulate` with ``checkpoint``, on the Trio
    host (virtual time unless ``real_time``), and check each step's outcomes against
    the oracle. Raises what `simulate` raises (a `trio_mesa.CheckpointError` first)."""
    expected, scale = _expected(scenario, seed, real_time)
    model = FakeLLMModel(expected.plan, scale=scale)
    model.cli_run = {"real_time": real_time}  # what `resume_checkpointed` needs
    started = time.perf_counter()
    report = trio_mesa.simulate(
        model,
        scenario.steps,
        policy=scenario.policy(scale),
        clock=None if real_time else _mock_clock(),
        checkpoint=checkpoint,
        every=every,
        progress=None,  # simulate's live display when stderr is a terminal
    )
    return result_of(report, expected, scale, real_time, time.perf_counter() - started)


def resume_checkpointed(directory: str | os.PathLike[str]) -> RunResult:
    """Continue the scenario run kept in ``directory`` (`run_checkpointed`) to its end,
    and check the whole run's outcomes against the oracle."""
    _, model, _ = RunDirectory.open("resume", directory).newest_snapshot()
    settings = getattr(model, "cli_run", None)
    if not isinstance(model, FakeLLMModel) or settings is None:
        raise trio_mesa.CheckpointError(
            directory,
            "not a fault_injection run (made with 'run SCENARIO --checkpoint'); "
            "resume it with trio_mesa.resume()",
        )
    real_time = bool(settings["real_time"])
    plan = model.plan
    expected, scale = _expected(plan.scenario, plan.seed, real_time)
    del model
    started = time.perf_counter()
    report = trio_mesa.resume(directory, clock=None if real_time else _mock_clock())
    return result_of(report, expected, scale, real_time, time.perf_counter() - started)


def _step_result(step: Any, exp: ExpectedStep | None, scale: float) -> StepResult:
    statuses: dict[Any, Status] = {}
    failures: Counter[str] = Counter()
    failed: dict[Any, str] = {}
    durations: list[float] = []
    not_ok: list[tuple[Any, str, str, str]] = []
    for o in step.outcomes:
        statuses[o.unique_id] = o.status
        if o.exception is not None:
            failures[type(o.exception).__name__] += 1
        if o.attempts:
            durations.append(o.duration / scale)
        if o.status is not Status.OK:
            failed[o.unique_id] = type(o.exception).__name__
            text = describe_exception(o.exception, limit=CELL_LIMIT)
            not_ok.append((o.unique_id, type(o.agent).__name__, o.status.value, text))
    mismatches = []
    if exp is None:
        mismatches.append(f"step {step.step}: the oracle has no such step")
    else:
        for uid, want in exp.statuses.items():
            got = statuses.get(uid)
            if got is not want:
                mismatches.append(f"step {step.step}, agent {uid}: {got} (oracle: {want})")
        for uid, name in exp.failures.items():
            if failed.get(uid, name) != name:
                mismatches.append(f"step {step.step}, agent {uid}: {failed[uid]} (oracle: {name})")
    return StepResult(
        step.step,
        statuses,
        failures,
        durations,
        None,
        mismatches,
        not_ok,
        step.attempts,
        sum(1 for o in step.outcomes if o.attempts > 1),
        step.duration / scale,
    )


def result_of(
    report: RunReport, expected: ExpectedRun, scale: float, real_time: bool, wall: float
) -> RunResult:
    """The `RunResult` of a checkpointed run's `RunReport`, checked against ``expected``."""
    plan = expected.plan
    result = RunResult(plan.scenario, plan.seed, "trio", real_time, expected)
    by_step = {e.step: e for e in expected.steps}
    result.steps = [_step_result(s, by_step.get(s.step), scale) for s in report.steps]
    result.wall_time = wall
    result.checkpoint = report.checkpoint
    result.resumed_after = report.resumed_after
    result.stopped_because = report.stopped_because
    return result


__all__ = ["result_of", "resume_checkpointed", "run_checkpointed"]
