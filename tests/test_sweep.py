"""`trio_mesa.sweep`: a grid of runs on real executors (a spawn process pool, threads,
Dask, Ray), each run checked against the fault_injection oracle; the rate limit split;
dead workers; bad input refused before any work goes out; the progress display."""

from __future__ import annotations

import concurrent.futures as cf
import functools
import itertools
import logging
import os
import pickle
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
import sweep_models
import trio
from rich.console import Console
from trio.testing import MockClock

import trio_mesa
from fault_injection import SCENARIOS, FakeLLMModel, expected_run
from trio_mesa import RateLimit, Status, SweepReport
from trio_mesa._portable import RemoteException
from trio_mesa._sweep_progress import SweepFigures, SweepView

VIRTUAL = functools.partial(MockClock, autojump_threshold=0)
FLAKY = SCENARIOS["flaky"]
STEPS = 3
GRID = {"scenario": "flaky", "agents": [5, 8]}
SEEDS = [11, 12]


def flaky_sweep(**kwargs: Any) -> SweepReport:
    return trio_mesa.sweep(
        FakeLLMModel.from_scenario,
        GRID,
        STEPS,
        seeds=SEEDS,
        policy=FLAKY.policy(),
        clock=VIRTUAL,
        progress=False,
        **kwargs,
    )


def check_against_the_oracle(report: SweepReport) -> None:
    assert [r.run_id for r in report] == [0, 1, 2, 3]
    assert [(r.parameters["agents"], r.parameters["seed"]) for r in report] == [
        (5, 11),
        (8, 11),
        (5, 12),
        (8, 12),
    ]
    for run in report:
        assert run.ok, run.traceback
        agents, seed = run.parameters["agents"], run.parameters["seed"]
        expected = expected_run(FLAKY, seed, agents=agents, steps=STEPS)
        assert run.report is not None and len(run.report.steps) == STEPS
        for step, want in zip(run.report.steps, expected.steps, strict=True):
            outcomes = {o.unique_id: o for o in step.outcomes}
            assert {u: o.status for u, o in outcomes.items()} == want.statuses
            assert {
                u: type(o.exception).__name__ for u, o in outcomes.items() if not o.is_ok
            } == want.failures
        ok = sum(s.counts[Status.OK] for s in expected.steps)
        assert run.model_data == {"tally": ok}  # the model's own reporter, sent back
        assert run.model_steps == STEPS


@pytest.fixture(scope="module")
def default_sweep() -> SweepReport:
    return flaky_sweep(max_workers=2)


def test_every_run_matches_the_oracle_on_the_default_process_pool(default_sweep) -> None:
    report = default_sweep
    assert report.workers == 2 and not report.failed
    check_against_the_oracle(report)
    records = report.to_records()
    assert list(records[0]) == [
        "RunId",
        "iteration",
        "Step",
        "scenario",
        "agents",
        "seed",
        "tally",
        "ok",
        "lost",
        "retries",
        "tokens",
        "cost",
        "stopped_because",
        "error",
    ]
    for record, run in zip(records, report, strict=True):
        assert run.report is not None
        assert record["iteration"] == SEEDS.index(run.parameters["seed"])
        assert record["ok"] == record["tally"] == run.report.counts[Status.OK]
        assert record["lost"] == run.report.lost
        assert record["tokens"] == run.report.usage.total_tokens > 0
        assert record["cost"] is None  # the fake LLM's price is unknown, never made up
        assert record["error"] is None
    # what came back pickles again (the stand-ins too) and reads as in the worker
    again = pickle.loads(pickle.dumps(report))
    assert again.to_records() == records
    outcome = report.runs[0].report.outcomes[0]
    assert type(outcome.agent).__name__ == "AsyncioLLMAgent"
    assert outcome.agent.unique_id == outcome.unique_id


def test_the_same_sweep_gives_the_same_records(default_sweep) -> None:
    assert flaky_sweep(max_workers=2).to_records() == default_sweep.to_records()


def test_to_dataframe(default_sweep) -> None:
    pandas = pytest.importorskip("pandas")
    frame = default_sweep.to_dataframe()
    assert isinstance(frame, pandas.DataFrame)
    assert list(frame["RunId"]) == [0, 1, 2, 3]
    assert list(frame["agents"]) == [5, 8, 5, 8]


def test_what_cannot_travel_comes_back_as_stand_ins_named_like_it() -> None:
    # an exception class that cannot be rebuilt from its pickle would fail the whole
    # run's result in the driver; a generator does not pickle at all
    with pytest.raises(TypeError):
        pickle.loads(pickle.dumps(sweep_models.NeedsKeyword("x", code=1)))
    with cf.ThreadPoolExecutor(1) as pool:
        report = trio_mesa.sweep(
            sweep_models.Awkward, {"n": 4}, 1, seeds=[5], executor=pool, progress=False
        )
    (run,) = report
    assert run.ok and run.report is not None
    outcomes = {o.unique_id: o for o in run.report.outcomes}
    for uid, o in outcomes.items():
        assert type(o.agent).__name__ == "AwkwardAgent" and o.agent.unique_id == uid
        if uid % 2:
            assert o.status is Status.FAILED
            assert isinstance(o.exception, RemoteException)
            assert type(o.exception).__name__ == "NeedsKeyword"
            assert str(o.exception) == f"agent {uid} says no"
        else:
            assert o.status is Status.OK
            assert o.result.startswith("<generator object AwkwardAgent.astep")
    records = run.report.to_records()
    assert {r["agent_class"] for r in records} == {"AwkwardAgent"}
    assert {r["exception_type"] for r in records} == {"NeedsKeyword", None}
    again = pickle.loads(pickle.dumps(report))
    assert again.runs[0].report.to_records() == records


# -- the rate limit split ------------------------------------------------------------------


def _starts(interval: float, burst: int, n: int) -> tuple[float, ...]:
    # GCRA, as RateLimit computes it, for n agents asking at t=0
    tolerance, tat, out = (burst - 1) * interval, -float("inf"), []
    for _ in range(n):
        start = max(0.0, tat - tolerance)
        tat = max(tat, start) + interval
        out.append(start)
    return tuple(out)


@pytest.mark.parametrize(("burst", "run_burst"), [(None, 1), (8, 2), (3, 1)])
def test_each_run_gets_its_share_of_the_rate_limit(burst, run_burst) -> None:
    with cf.ThreadPoolExecutor(4) as pool:
        report = trio_mesa.sweep(
            sweep_models.StartTimes,
            {"n": 6},
            1,
            seeds=range(4),
            executor=pool,
            rate_limit=RateLimit(50, burst=burst),
            clock=VIRTUAL,
            progress=False,
        )
    assert report.workers == 4
    share = report.run_rate_limit
    assert share is not None
    assert (share.rate, share.per, share.burst) == (12.5, 1.0, run_burst)
    for run in report:
        # every run's six agents started 1/12.5 s apart (after the share's burst),
        # not 1/50 s: the runs together start at most 50 a second
        assert run.model_data["starts"] == _starts(1 / 12.5, run_burst, 6)
    assert pickle.loads(pickle.dumps(report)).to_records() == report.to_records()


def test_the_split_counts_only_the_runs_there_are() -> None:
    with cf.ThreadPoolExecutor(4) as pool:
        report = trio_mesa.sweep(
            sweep_models.StartTimes,
            {"n": 3},
            1,
            seeds=[1, 2],
            executor=pool,
            rate_limit=RateLimit(10),
            clock=VIRTUAL,
            progress=False,
        )
    assert report.workers == 2  # two runs: never more than two in flight
    assert report.run_rate_limit is not None and report.run_rate_limit.rate == 5
    assert all(run.model_data["starts"] == (0.0, 0.2, 0.4) for run in report)


# -- failed runs ---------------------------------------------------------------------------


def test_a_run_that_raises_is_a_row_and_the_sweep_goes_on(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="trio_mesa")
    with cf.ThreadPoolExecutor(2) as pool:
        report = trio_mesa.sweep(
            sweep_models.fragile,
            [{"mode": "ok"}, {"mode": "raise"}, {"mode": "step"}, {"mode": "ok"}],
            3,
            seeds=[7],
            executor=pool,
            clock=VIRTUAL,
            progress=False,
        )
    assert [r.ok for r in report] == [True, False, False, True]
    raised, stepped = report.runs[1], report.runs[2]
    assert raised.error == "ValueError: no model for mode 'raise'"
    assert raised.model_steps is None and raised.report is None
    assert "in fragile" in (raised.traceback or "")
    assert stepped.error == "RuntimeError: the model's own step failed in step 2"
    assert stepped.model_steps == 2
    records = report.to_records()
    assert records[1]["error"] == raised.error
    assert records[1]["ok"] is records[1]["tokens"] is None
    assert records[3]["ok"] == 6 and records[3]["tokens"] == 6 * 5
    failures = [r.getMessage() for r in caplog.records if "sweep" in r.getMessage()]
    assert len(failures) == 2  # each failed run logged once
    assert "run 1" in failures[0] and "ValueError" in failures[0]


def test_a_dead_worker_is_a_row_the_pool_is_rebuilt_and_the_sweep_goes_on() -> None:
    report = trio_mesa.sweep(
        sweep_models.fragile,
        [{"mode": "exit3"}, {"mode": "ok"}, {"mode": "sigkill"}, {"mode": "ok"}],
        2,
        seeds=[1],
        max_workers=1,
        clock=VIRTUAL,
        progress=False,
    )
    assert [r.error for r in report] == [
        "the worker process exited with code 3 while running it",
        None,
        "the worker process died (SIGKILL) while running it",
        None,
    ]
    assert [r.attempts for r in report] == [1, 1, 1, 1]
    assert report.runs[3].model_data["starts"] == (0.0,) * 4  # 2 agents x 2 steps


def test_a_run_killed_with_its_siblings_pool_is_started_again(tmp_path: Path) -> None:
    report = trio_mesa.sweep(
        sweep_models.fragile,
        [
            {"mode": "innocent", "shared": str(tmp_path)},
            {"mode": "killer", "shared": str(tmp_path)},
        ],
        1,
        seeds=[1],
        max_workers=2,
        clock=VIRTUAL,
        progress=False,
    )
    innocent, killer = report.runs
    assert killer.error == "the worker process died (SIGKILL) while running it"
    assert killer.attempts == 1
    # terminated by the broken pool in its first attempt, it ran again, alone
    assert innocent.ok and innocent.attempts == 2
    assert innocent.model_steps == 1


def test_a_callers_executor_that_breaks_fails_the_rest_with_the_reason() -> None:
    import multiprocessing

    with cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        report = trio_mesa.sweep(
            sweep_models.fragile,
            [{"mode": "ok"}, {"mode": "sigkill"}, {"mode": "ok"}],
            1,
            seeds=[1],
            executor=pool,
            progress=False,
        )
    assert report.runs[0].ok
    reason = (
        "the executor broke: BrokenProcessPool: A process in the process pool was "
        "terminated abruptly while the future was running or pending."
    )
    assert [r.error for r in report.runs[1:]] == [reason, reason]


def test_ctrl_c_stops_the_sweep_and_leaves_no_worker_running(tmp_path: Path) -> None:
    mark = tmp_path / "innocent"

    def interrupt_when_the_run_has_started() -> None:
        sweep_models._wait_for(mark)
        # as Ctrl-C would: SIGINT to the driver's main thread (raise_signal would send
        # it to this thread, where it waits for the main thread to wake up by itself)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)

    interrupter = threading.Thread(target=interrupt_when_the_run_has_started)
    interrupter.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            trio_mesa.sweep(
                sweep_models.fragile,
                {"mode": "innocent", "shared": str(tmp_path)},  # blocks until terminated
                1,
                seeds=[1, 2, 3],
                max_workers=1,
                progress=False,
            )
    finally:
        interrupter.join()
    worker = int(mark.read_text())
    with pytest.raises(ProcessLookupError):  # terminated and reaped: not even a zombie
        os.kill(worker, 0)


# -- bad input -----------------------------------------------------------------------------


class CountingExecutor(cf.ThreadPoolExecutor):
    """A real thread pool that counts what was submitted to it."""

    def __init__(self) -> None:
        super().__init__(2)
        self.submitted = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


BIG = list(range(1000))


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((sweep_models.fragile, [], 1), {}, ValueError, r"empty list \(an empty grid\)"),
        ((sweep_models.fragile, {"mode": []}, 1), {}, ValueError, r"'mode'\] has no values"),
        ((sweep_models.fragile, {}, 1), {"seeds": []}, ValueError, "seeds is empty"),
        ((sweep_models.fragile, {"mode": BIG, "shared": BIG}, 1), {}, ValueError, "1,000,000"),
        ((sweep_models.fragile, {"mode": itertools.count()}, 1), {}, ValueError, "more than"),
        ((sweep_models.fragile, {"mode": {"a", "b"}}, 1), {}, TypeError, "is a set"),
        ((sweep_models.fragile, {"mode": ["ok", lambda: 0]}, 1), {}, TypeError, r"'mode'\] value"),
        ((sweep_models.fragile, {}, 1), {"seeds": [lambda: 0]}, TypeError, r"seeds\[0\]"),
        ((sweep_models.fragile, [{"mode": "ok"}, {"bad": 1}], 1), {}, TypeError, r"\[1\].*bad"),
        ((sweep_models.fragile, {"ok": [1]}, 1), {}, ValueError, "column of the sweep"),
        ((sweep_models.fragile, {"rng": [1]}, 1), {}, ValueError, "seed argument"),
        ((sweep_models.no_seed, {"n": 1}, 1), {}, TypeError, "no rng or seed"),
        (("fragile", {}, 1), {}, TypeError, "factory must be a callable"),
        ((lambda rng: None, {}, 1), {}, TypeError, "factory cannot be sent"),
        ((sweep_models.fragile, {}, -1), {}, ValueError, "steps"),
        ((sweep_models.fragile, {}, 2.5), {}, TypeError, "steps"),
        ((sweep_models.fragile, {}, True), {}, TypeError, "steps"),
        ((sweep_models.fragile, {}, 10**8), {}, ValueError, "steps"),
        ((sweep_models.fragile, {}, 1), {"max_workers": 0}, ValueError, "max_workers"),
        ((sweep_models.fragile, {}, 1), {"clock": MockClock()}, TypeError, "fresh clock"),
        ((sweep_models.fragile, {}, 1), {"progress": "yes"}, TypeError, "progress"),
        ((sweep_models.fragile, {}, 1), {"budget": 5}, TypeError, "budget"),
        ((sweep_models.fragile, {}, 1), {"timeout": -1}, ValueError, "timeout"),
        ((sweep_models.fragile, {}, 1), {"retries": 3}, TypeError, "unknown option"),
        (
            (sweep_models.fragile, {}, 1),
            {"limiter": trio.CapacityLimiter(2)},
            ValueError,
            "max_concurrency",
        ),
    ],
)
def test_bad_input_is_refused_before_any_work_goes_out(args, kwargs, error, match) -> None:
    with CountingExecutor() as pool:
        with pytest.raises(error, match=match) as info:
            trio_mesa.sweep(*args, executor=pool, **kwargs)
        assert pool.submitted == 0
    assert str(info.value).startswith("trio_mesa.sweep()")


def test_an_executor_must_be_an_executor() -> None:
    with pytest.raises(TypeError, match=r"concurrent\.futures\.Executor"):
        trio_mesa.sweep(sweep_models.fragile, {}, 1, executor=object())  # type: ignore[arg-type]


def test_an_unpicklable_value_is_named() -> None:
    lock_holder = threading.Event()  # locks travel (as fresh locks); a socket does not
    import socket

    with socket.socket() as sock, CountingExecutor() as pool:
        with pytest.raises(TypeError) as info:
            trio_mesa.sweep(
                sweep_models.fragile, {"mode": "ok", "shared": [sock]}, 1, executor=pool
            )
        assert pool.submitted == 0
    message = str(info.value)
    assert "parameters['shared'] value <socket.socket" in message
    assert "cannot be sent to a worker process" in message
    assert lock_holder is not None


# -- progress ------------------------------------------------------------------------------


def test_the_display_shows_the_sweep() -> None:
    now = iter([0.0, 60.0])
    figures = SweepFigures(10, 2, lambda: next(now))
    figures.running = 2
    for usage, failed in [(trio_mesa.Usage(4, 9_000, 3_345, 0.0123, 0), False)] + [
        (None, True)
    ] * 2:
        figures.finished(usage, failed)
    console = Console(record=True, width=80, force_terminal=True)
    console.print(SweepView(figures))
    lines = console.export_text().splitlines()
    assert lines[0].startswith("runs 3/10")
    assert lines[0].rstrip().endswith("ETA 02:20")  # 20 s a run, 7 to go
    assert lines[1] == "running 2  failed 2  tokens 12,345  $0.0123"


def test_progress_shown_or_not_changes_no_outcome(capsys) -> None:
    def run(progress: bool | None) -> list[dict[str, Any]]:
        with cf.ThreadPoolExecutor(2) as pool:
            return trio_mesa.sweep(
                sweep_models.fragile,
                {"mode": ["ok", "raise"]},
                2,
                seeds=[3],
                executor=pool,
                clock=VIRTUAL,
                progress=progress,
            ).to_records()

    quiet = run(None)  # stderr is not a terminal under pytest: nothing shown
    assert capsys.readouterr().err == ""
    shown = run(True)
    err = capsys.readouterr().err
    assert "runs 2/2" in err and "failed 1" in err
    assert shown == quiet


# -- Dask and Ray --------------------------------------------------------------------------


def test_a_dask_local_cluster_runs_the_sweep(default_sweep) -> None:
    distributed = pytest.importorskip("distributed")
    # Threads in this process: each run's trio.run is off the main thread there.
    with (
        distributed.LocalCluster(
            processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        report = flaky_sweep(executor=client.get_executor())
    assert report.workers == 2  # the cluster's threads
    check_against_the_oracle(report)
    assert report.to_records() == default_sweep.to_records()


@pytest.mark.skipif(
    not __import__("importlib").util.find_spec("ray"),
    reason="Ray is an optional extra (pip install 'trio-mesa[ray]'): 245 MB installed",
)
def test_ray_runs_the_sweep(default_sweep) -> None:
    before = signal.getsignal(signal.SIGTERM)
    executor = trio_mesa.RayExecutor(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        report = flaky_sweep(executor=executor, max_workers=2)
    finally:
        executor.shutdown()
    assert signal.getsignal(signal.SIGTERM) is before  # put back after ray.init replaced it
    check_against_the_oracle(report)
    assert report.to_records() == default_sweep.to_records()
