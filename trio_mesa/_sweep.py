"""`sweep`: one model factory over a grid of parameters and seeds, each run a `simulate` in
a worker, every run's account gathered in a `SweepReport`.

The shape is Mesa's: ``batch_run(model_cls, parameters, rng=..., max_steps=...)`` for the
grid and its rows, Mesa 4's ``run_scenarios(..., executor=)`` for the engine (any
``concurrent.futures.Executor``). The driver (this module) checks everything it can
before any work goes out, then keeps at most ``workers`` runs in flight, submitting the
next as one finishes: that bound, not the executor's size, is what each `RateLimit` is
split by, so the runs together never start more than the limit allows whatever the
executor could run at once. What goes out and comes back is in `trio_mesa._sweep_worker`.

The default executor is a local ``ProcessPoolExecutor`` on a "spawn" context of its own
(`DefaultPool`), made and shut down here. When one of its workers dies (``os._exit``,
SIGKILL, a segfault) the pool breaks and fails every run in flight; the pool is then
rebuilt and the sweep goes on: the run whose process died is a failed row naming how it
died, and the runs killed with it are started once more.
"""

from __future__ import annotations

import concurrent.futures as cf
import inspect
import itertools
import math
import multiprocessing
import os
import pickle
import signal
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from ._budget import Budget
from ._checks import check_count, shown
from ._log import logger
from ._policy import StepPolicy, resolve_policy
from ._simulate import MAX_RUN_STEPS
from ._sweep_progress import SweepFigures, live_sweep_progress
from ._sweep_report import RECORD_COLUMNS, RateLimitShare, SweepReport, SweepRun
from ._sweep_worker import RunOutcome, RunSettings, pack, ready, run_task, split_rate_limit
from ._text import describe_exception, safe_repr

#: The most runs one sweep makes (parameter combinations x seeds). Every run's
#: `RunReport` is held in the driver's memory until the sweep returns (a 50-agent,
#: 10-step report is about 100 KB pickled: 100,000 runs is some 10 GB), and a grid
#: written by mistake (ten parameters of ten values: 10**10 runs) must be refused at
#: once, not expanded. Larger studies are several sweeps.
MAX_SWEEP_RUNS = 100_000
#: The most runs in flight at once (``max_workers``).
MAX_SWEEP_WORKERS = 4096
#: How many times one run is started at most: once, and once more if a sibling's
#: worker death took its process down with it.
MAX_ATTEMPTS = 2

WHERE = "trio_mesa.sweep()"

__all__ = ["MAX_SWEEP_RUNS", "DefaultPool", "sweep"]


# -- checks ------------------------------------------------------------------------------


def _bounded(values: Iterable[Any], what: str) -> list[Any]:
    # Never expand more than the bound: `itertools.count()` is refused, not looped over.
    items = list(itertools.islice(values, MAX_SWEEP_RUNS + 1))
    if len(items) > MAX_SWEEP_RUNS:
        raise ValueError(
            f"{WHERE}: {what} has more than {MAX_SWEEP_RUNS:,} values (the most runs one "
            "sweep makes)"
        )
    return items


def _values(name: str, values: Any) -> list[Any]:
    """One parameter's values in a grid, as ``batch_run`` reads them (sets refused)."""
    if isinstance(values, str | bytes | Mapping):
        return [values]  # one value (batch_run would iterate a dict's keys)
    if isinstance(values, set | frozenset):
        raise TypeError(
            f"{WHERE}: parameters[{name!r}] is a set, which has no order: run ids would "
            "change from one run of the program to the next; pass a list (sorted(...))"
        )
    try:
        iterator = iter(values)
    except TypeError:
        return [values]
    items = _bounded(iterator, f"parameters[{name!r}]")
    if not items:
        raise ValueError(f"{WHERE}: parameters[{name!r}] has no values (an empty grid)")
    return items


def _check_names(where: str, names: Iterable[Any]) -> None:
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{where}: parameter names must be strings, not {shown(name)}")
        if name in RECORD_COLUMNS:
            raise ValueError(
                f"{where}: parameter {name!r} has the name of a column of the sweep's records "
                f"({', '.join(RECORD_COLUMNS)}); rename it"
            )


def _combinations(parameters: Any, seeds: int) -> list[dict[str, Any]]:
    """Every parameter combination, in ``batch_run``'s order, refused if too many."""
    if isinstance(parameters, Mapping):
        _check_names(WHERE, parameters)
        grid = {name: _values(name, values) for name, values in parameters.items()}
        total = math.prod(len(v) for v in grid.values()) * seeds
        if total > MAX_SWEEP_RUNS:
            sizes = " x ".join(f"{len(v)} {n}" for n, v in grid.items())
            raise ValueError(
                f"{WHERE}: the grid makes {total:,} runs ({sizes} x {seeds} seeds), more "
                f"than the {MAX_SWEEP_RUNS:,} one sweep makes; split it into several sweeps"
            )
        return [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    if isinstance(parameters, str | bytes) or not isinstance(parameters, Iterable):
        raise TypeError(
            f"{WHERE}: parameters must be a mapping of name to values (a grid) or a list of "
            f"mappings (one per combination), not {shown(parameters)}"
        )
    combos = _bounded(parameters, "parameters")
    if not combos:
        raise ValueError(f"{WHERE}: parameters is an empty list (an empty grid): no runs")
    if len(combos) * seeds > MAX_SWEEP_RUNS:
        raise ValueError(
            f"{WHERE}: {len(combos):,} combinations x {seeds} seeds make more than the "
            f"{MAX_SWEEP_RUNS:,} runs one sweep makes; split it into several sweeps"
        )
    out = []
    for i, combo in enumerate(combos):
        if not isinstance(combo, Mapping):
            raise TypeError(f"{WHERE}: parameters[{i}] must be a mapping, not {shown(combo)}")
        _check_names(f"{WHERE}: parameters[{i}]", combo)
        out.append(dict(combo))
    return out


def _seed_name(factory: Callable[..., Any]) -> str:
    """``"seed"`` if the factory takes ``seed``, else ``"rng"`` (batch_run's rule)."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin: it will say so itself
        return "rng"
    parameters = signature.parameters
    if "seed" in parameters:
        return "seed"
    if "rng" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return "rng"
    raise TypeError(
        f"{WHERE}: factory {shown(factory)} takes no rng or seed argument; each run's seed "
        "is passed as one (a Mesa model takes both)"
    )


def _check_binds(factory: Callable[..., Any], kwargs: dict[str, Any], where: str) -> None:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        raise TypeError(
            f"{where}: factory {shown(factory)} cannot be called with parameters "
            f"{', '.join(sorted(kwargs))}: {exc}"
        ) from None


def _check_factory(factory: Any) -> None:
    if not callable(factory) or isinstance(factory, trio.abc.Clock):
        raise TypeError(
            f"{WHERE}: factory must be a callable that builds a model (a Mesa model class or "
            f"a module-level function), not {shown(factory)}"
        )
    module = getattr(factory, "__module__", None)
    main = sys.modules.get("__main__")
    if module == "__main__" and getattr(main, "__file__", None) is None:
        raise ValueError(
            f"{WHERE}: factory {shown(factory)} was defined in an interactive session, which "
            "worker processes cannot import; define it in a module (a .py file) and import it"
        )
    _check_packs(factory, "factory", 1, hint=" (a module-level function or class)")


def _check_packs(value: Any, what: str, workers: int, hint: str = "") -> None:
    try:
        pack(value, workers)
    except Exception as exc:
        raise TypeError(
            f"{WHERE}: {what} cannot be sent to a worker process{hint}: {describe_exception(exc)}"
        ) from None


def _check_values(combos: list[dict[str, Any]], grid: bool, workers: int) -> None:
    seen: set[int] = set()
    for i, combo in enumerate(combos):
        for name, value in combo.items():
            if id(value) in seen:
                continue
            seen.add(id(value))
            what = f"parameters[{name!r}] value {shown(value)}"
            _check_packs(value, what if grid else f"parameters[{i}][{name!r}]", workers)


def _check_clock(clock: Any) -> None:
    if clock is None:
        return
    if isinstance(clock, trio.abc.Clock) or not callable(clock):
        raise TypeError(
            f"{WHERE}: clock must be a callable that makes a fresh clock for each run, e.g. "
            f"functools.partial(trio.testing.MockClock, autojump_threshold=0), not {shown(clock)}"
        )
    _check_packs(clock, "clock", 1)


def _check_policy(policy: StepPolicy, workers: int) -> None:
    if policy.limiter is not None:
        raise ValueError(
            f"{WHERE}: limiter (a trio.CapacityLimiter) belongs to one Trio run and cannot be "
            "shared by runs in other processes; pass max_concurrency (per run) instead"
        )
    for i, hook in enumerate(policy.hooks):
        _check_packs(hook, f"policy hooks[{i}] {shown(hook)}", workers)
    _check_packs(policy, "policy", workers)


def _show_progress(progress: bool | None) -> bool:
    """As `simulate` decides: ``None`` shows it only on a terminal, with rich installed."""
    if progress is False:
        return False
    if progress is None:
        isatty = getattr(sys.stderr, "isatty", None)
        if not (callable(isatty) and isatty()):
            return False
    try:
        import rich  # noqa: F401
    except ImportError:
        if progress:
            raise ImportError(
                f"{WHERE}: progress=True needs rich: pip install 'trio-mesa[progress]'"
            ) from None
        return False
    return True


def _default_workers(executor: cf.Executor | None) -> int:
    size = getattr(executor, "_max_workers", None)
    if isinstance(size, int) and not isinstance(size, bool) and size >= 1:
        return size
    client = getattr(executor, "_client", None)  # a Dask ClientExecutor: its threads
    try:
        threads = sum(client.nthreads().values())  # type: ignore[union-attr]
    except Exception:
        threads = 0
    if isinstance(threads, int) and threads >= 1:
        return threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# -- the default executor ------------------------------------------------------------------


def _ignore_sigint() -> None:
    # Ctrl-C in a terminal reaches every process of the foreground group: the workers
    # leave it to the driver, which stops the sweep and terminates them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class DefaultPool:
    """The sweep's own ``ProcessPoolExecutor``, rebuilt when a worker dies.

    It uses a "spawn" context of its own, never the global start method (``batch_run``
    forces it globally): the driver has threads (the pool's own manager thread, rich's
    refresh thread, Trio's worker threads, maybe Dask's) and "fork" copies only the
    calling one, leaving any lock another thread held (logging's, the import lock,
    malloc's) locked forever in the child; Python 3.12 warns about exactly that. Spawned
    workers also start clean: no trio-asyncio patch of asyncio, no Mesa class patched,
    nothing the driver imported. The price is each worker importing Mesa and trio-mesa
    once (it is reused for later runs).

    Every new pool is warmed up: one trivial task per worker, waited for, before any
    run goes out. CPython 3.12's pool spawns a worker inside ``submit`` *after* waking
    its manager thread, which may already be waiting on the worker sentinels it knew:
    the death of a worker spawned then goes unnoticed until some other task ends (seen
    here: a SIGKILLed run's sibling ran on for two minutes). The warm-up's last result
    wakes the manager once every worker exists, and with every worker then idle,
    ``submit`` never spawns another.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._markers = tempfile.TemporaryDirectory(prefix="trio-mesa-sweep-")
        self.marker = self._markers.name
        #: Why no pool could be started (workers dying before their first task), if so.
        self.unusable: str | None = None
        self.pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        for _ in range(MAX_ATTEMPTS):
            pool = cf.ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_ignore_sigint,
            )
            warm_up = [pool.submit(ready) for _ in range(self.workers)]
            cf.wait(warm_up)
            failed = [f.exception() for f in warm_up if f.exception() is not None]
            if not failed:
                return pool
            pool.shutdown(wait=True)
        self.unusable = (
            "the default process pool's workers died before their first task "
            f"({MAX_ATTEMPTS} pools in a row): {describe_exception(failed[0])}"
        )
        return pool

    def deaths(self) -> dict[int, int | None]:
        """After the pool broke: each worker's exit code by pid; the pool is then rebuilt.

        Reads the pool's process table (``_processes``, private but there since 3.2)
        before shutting it down, which joins every process; without it, no codes.
        """
        processes = dict(getattr(self.pool, "_processes", None) or {})
        self.pool.shutdown(wait=True)
        self.pool = self._new_pool()
        return {pid: getattr(p, "exitcode", None) for pid, p in processes.items()}

    def started_by(self, run_id: int, attempt: int) -> int | None:
        """The pid of the worker that started ``run_id``'s ``attempt``, if one did."""
        try:
            return int(Path(self.marker, f"{run_id}.{attempt}").read_text())
        except (OSError, ValueError):
            return None

    def close(self, *, abort: bool = False) -> None:
        if abort:
            processes = list((getattr(self.pool, "_processes", None) or {}).values())
            self.pool.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.terminate()
            for process in processes:
                process.join()
        else:
            self.pool.shutdown(wait=True)
        self._markers.cleanup()


def _death(code: int | None) -> str:
    if code is None:
        return "the worker process died while running it"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the worker process died ({name}) while running it"
    return f"the worker process exited with code {code} while running it"


# -- the driver ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    run_id: int
    iteration: int
    kwargs: dict[str, Any]
    blob: bytes
    attempt: int = 1


class _Driver:
    def __init__(
        self,
        runs: list[_Pending],
        settings: bytes,
        steps: int,
        executor: cf.Executor | None,
        workers: int,
        figures: SweepFigures,
    ) -> None:
        self.pending = deque(runs)
        self.settings = settings
        self.steps = steps
        self.workers = workers
        self.own = DefaultPool(workers) if executor is None else None
        self.executor = executor
        self.figures = figures
        self.in_flight: dict[cf.Future[Any], _Pending] = {}
        self.done: dict[int, SweepRun] = {}
        self.broken: str | None = None  # a caller's executor that broke: why
        self.idle_breaks = 0  # default pool breaks in a row with no run started
        self.sweep_id = uuid.uuid4().hex
        if self.own is not None and self.own.unusable is not None:
            self.broken = self.own.unusable

    # -- results -----------------------------------------------------------------------

    def _record(self, run: _Pending, outcome: RunOutcome | None, error: str | None = None) -> None:
        if outcome is None:
            outcome = RunOutcome(error=error)
        row = SweepRun(
            run.run_id,
            run.iteration,
            run.kwargs,
            self.steps,
            report=outcome.report,
            error=outcome.error,
            traceback=outcome.traceback,
            model_steps=outcome.model_steps,
            model_data=outcome.model_data,
            attempts=run.attempt,
            duration=outcome.duration,
        )
        self.done[run.run_id] = row
        if row.error is not None:
            logger.warning(
                "trio_mesa.sweep: run %d %s failed: %s",
                run.run_id,
                safe_repr(run.kwargs, limit=200),
                row.error,
            )
        usage = outcome.report.usage if outcome.report is not None else None
        self.figures.finished(usage, row.error is not None)

    def _collect(self, future: cf.Future[Any], run: _Pending) -> bool:
        """File a finished future; ``False`` when the default pool broke under it."""
        try:
            blob = future.result()
        except cf.process.BrokenProcessPool:
            if self.own is not None:
                return False
            self._executor_broke(run, future.exception())
            return True
        except cf.BrokenExecutor as exc:
            self._executor_broke(run, exc)
            return True
        except (Exception, cf.CancelledError) as exc:  # Dask's KilledWorker, Ray's errors...
            self._record(run, None, f"the executor failed the run: {describe_exception(exc)}")
            return True
        try:
            outcome = pickle.loads(blob)
            if not isinstance(outcome, RunOutcome):
                raise TypeError(f"expected the run's outcome, got {shown(outcome)}")
        except Exception as exc:
            why = f"the run's result could not be read: {describe_exception(exc)}"
            self._record(run, None, why)
            return True
        self._record(run, outcome)
        return True

    def _executor_broke(self, run: _Pending, exc: BaseException | None) -> None:
        self.broken = f"the executor broke: {describe_exception(exc)}"
        self._record(run, None, self.broken)

    # -- the default pool's workers dying ------------------------------------------------

    def _rebuild(self, lost: list[_Pending]) -> None:
        """The default pool broke under ``lost`` (every run in flight): sort them out."""
        own = self.own
        assert own is not None
        codes = own.deaths()
        started = [r for r in lost if own.started_by(r.run_id, r.attempt) is not None]
        self.idle_breaks = 0 if started else self.idle_breaks + 1
        if own.unusable is not None:
            self.broken = own.unusable
        elif self.idle_breaks >= MAX_ATTEMPTS:
            # Workers that die before running anything (trio_mesa not importable there,
            # say) would break every new pool: end the sweep's remaining runs instead.
            exits = sorted(set(codes.values()), key=str)
            self.broken = (
                "the default process pool's workers died before starting any run "
                f"({self.idle_breaks} pools in a row; exit codes {exits})"
            )
            for run in sorted(lost, key=lambda r: r.run_id):
                self._record(run, None, self.broken)
            return
        again = []
        for run in sorted(lost, key=lambda r: r.run_id):
            pid = own.started_by(run.run_id, run.attempt)
            if pid is None:  # never started: no attempt spent
                again.append(run)
                continue
            code = codes.get(pid)
            if code is not None and code != -signal.SIGTERM:
                self._record(run, None, _death(code))  # its own process died
            elif run.attempt < MAX_ATTEMPTS:
                run.attempt += 1  # terminated with the pool: start it once more
                again.append(run)
            else:
                self._record(run, None, _death(code) + f" ({run.attempt} attempts)")
        self.pending.extendleft(reversed(again))

    # -- the loop ------------------------------------------------------------------------

    def _submit(self, run: _Pending) -> None:
        own = self.own
        executor = own.pool if own is not None else self.executor
        assert executor is not None
        marker = own.marker if own is not None else None
        try:
            future = executor.submit(
                run_task, self.sweep_id, run.run_id, run.attempt, self.settings, run.blob, marker
            )
        except cf.BrokenExecutor as exc:
            if own is not None:  # broke between two checks: rebuild, try again later
                self._rebuild([])
                self.pending.appendleft(run)
                return
            self._executor_broke(run, exc)
            return
        except Exception as exc:
            self._record(run, None, f"the executor refused the run: {describe_exception(exc)}")
            return
        self.in_flight[future] = run

    def run(self) -> None:
        while self.pending or self.in_flight:
            while self.pending and len(self.in_flight) < self.workers:
                run = self.pending.popleft()
                if self.broken is not None:
                    self._record(run, None, self.broken)
                    continue
                self._submit(run)
            self.figures.running = len(self.in_flight)
            if not self.in_flight:
                continue
            finished, _ = cf.wait(self.in_flight, return_when=cf.FIRST_COMPLETED)
            lost = []
            for future in finished:
                run = self.in_flight.pop(future)
                if not self._collect(future, run):
                    lost.append(run)
            if lost:
                # The pool fails every future in flight at once: wait for all of them.
                cf.wait(self.in_flight)
                for future, run in list(self.in_flight.items()):
                    del self.in_flight[future]
                    if not self._collect(future, run):
                        lost.append(run)
                self._rebuild(lost)
        self.figures.running = 0

    def close(self, *, abort: bool) -> None:
        if abort:
            for future in self.in_flight:
                future.cancel()
        if self.own is not None:
            self.own.close(abort=abort)


# -- the public function -------------------------------------------------------------------


def sweep(
    factory: Callable[..., Any],
    parameters: Mapping[str, Any] | Iterable[Mapping[str, Any]],
    steps: int,
    *,
    seeds: Iterable[Any] = (None,),
    executor: cf.Executor | None = None,
    max_workers: int | None = None,
    budget: Budget | None = None,
    policy: StepPolicy | None = None,
    clock: Callable[[], trio.abc.Clock] | None = None,
    progress: bool | None = None,
    **options: Any,
) -> SweepReport:
    """Run ``factory`` over every combination of ``parameters`` and ``seeds``, each run a
    `simulate` of ``steps`` steps in a worker, and gather every run's account.

    The grid is Mesa's ``batch_run``'s: ``parameters`` maps each name to one value or an
    iterable of values (a ``str``, ``bytes`` or mapping is one value), and the runs are
    every combination, for each seed in turn: ``run_id`` counts them in that order, and
    ``iteration`` is the seed's index. Or pass a list of mappings, one per combination.
    Each run calls ``factory(**combination, rng=seed)`` (``seed=seed`` if the factory
    takes ``seed``, as ``batch_run`` does), then ``simulate(model, steps, ...)`` with
    ``policy``/``options`` (`StepPolicy` fields), ``budget`` and a fresh ``clock()``.

    Where runs go: ``executor``, any ``concurrent.futures.Executor`` (a Dask
    ``Client.get_executor()``, a `RayExecutor`, a ``ProcessPoolExecutor`` of yours,
    which you shut down; a ``ThreadPoolExecutor`` works too, its runs sharing one
    process). Default: a local process pool of ``max_workers`` processes ("spawn", made
    and shut down here; no global setting is changed). At most ``max_workers`` runs are
    in flight at once (default: the executor's ``_max_workers`` if it has one, else the
    CPUs this process may use; never more than there are runs): the next is submitted
    when one finishes.

    What travels: work goes out as bytes, the factory by reference (so it must be
    importable by the workers: a module-level function or class, not a lambda or a
    function typed into an interactive session) with the run's parameters; never a live
    model or client. What comes back is the run's `RunReport` in a portable form: each
    outcome's ``agent`` is a stand-in holding its ``unique_id`` and class name, an
    ``exception`` or ``result`` that does not survive pickling is replaced by a
    stand-in of the same type name (or its ``repr``), and exceptions lose their
    tracebacks.

    Policies without a shared store: each run gets policy objects of its own. A
    `RateLimit` is split statically: each run gets ``rate / workers`` per the same
    ``per`` and a burst of ``burst // workers`` (at least 1), so the runs' rates sum to
    the limit's (``RateLimit(50)`` over 4 workers: 12.5 a second each; the share is
    `SweepReport.run_rate_limit`). Each run starting its first slot at once, up to
    ``max(burst, workers)`` may start in the same instant. A hold-off (``Retry-After``)
    pauses only the run that saw it. A `CircuitBreaker` is a copy per run; a `Budget`
    limits each run, not the sweep; a ``limiter`` is refused (use ``max_concurrency``).

    Failures never end the sweep. A run whose factory or step raises (anything, even
    KeyboardInterrupt), or whose result cannot be sent back, is a row with ``error``
    (and the worker's traceback); the others go on. When a worker of the default pool
    dies (killed, ``os._exit``, a crash), the pool is rebuilt: that run's row names how
    its process died, and the runs in flight whose processes the broken pool terminated
    are started once more (``attempts == 2``; work they had done, LLM calls included,
    is done again). A caller's executor that breaks cannot be rebuilt: its runs in
    flight and every run not yet submitted become rows naming why. Every failed run is
    logged once (WARNING, logger ``trio_mesa``).

    ``progress`` shows one live display for the whole sweep on stderr (runs done,
    running and failed, tokens and cost of the runs done, ETA), as `simulate` does:
    ``None`` only when stderr is a terminal and rich is installed. The runs' own
    displays are off. It changes no outcome.

    Cancellation: KeyboardInterrupt (or any exception) in the driver cancels the runs
    not yet started; the default pool's workers (which ignore SIGINT) are terminated,
    and the exception propagates. A caller's executor finishes the runs it started.

    Returns:
        A `SweepReport`: the runs in ``run_id`` order, ``to_records()`` in the shape of
        ``batch_run``'s results, ``to_dataframe()``.

    Raises:
        TypeError, ValueError: before any work goes out, naming the culprit: a factory
            that is not callable, cannot be sent to a worker or takes neither ``rng``
            nor ``seed``, parameters it cannot be called with; an empty grid or seeds;
            more than `MAX_SWEEP_RUNS` (100,000) runs; a set of values (no order); a
            parameter named like a record column; a value that cannot be pickled; bad
            ``steps``, ``max_workers``, ``executor``, ``budget``, ``clock``,
            ``progress`` or policy options.
        ImportError: ``progress=True`` without rich.
    """
    started = time.perf_counter()
    _check_factory(factory)
    check_count(f"{WHERE}: steps", steps, minimum=0, maximum=MAX_RUN_STEPS)
    if executor is not None and not isinstance(executor, cf.Executor):
        raise TypeError(
            f"{WHERE}: executor must be a concurrent.futures.Executor or None, not "
            f"{shown(executor)}"
        )
    if max_workers is not None:
        check_count(f"{WHERE}: max_workers", max_workers, maximum=MAX_SWEEP_WORKERS)
    if budget is not None and not isinstance(budget, Budget):
        raise TypeError(f"{WHERE}: budget must be a trio_mesa.Budget or None, not {shown(budget)}")
    if progress is not None and progress is not True and progress is not False:
        raise TypeError(f"{WHERE}: progress must be True, False or None, not {shown(progress)}")
    _check_clock(clock)
    resolved = resolve_policy(WHERE, policy, options)
    if isinstance(seeds, str | bytes) or not isinstance(seeds, Iterable):
        raise TypeError(f"{WHERE}: seeds must be an iterable of seeds, not {shown(seeds)}")
    seed_list = _bounded(seeds, "seeds")
    if not seed_list:
        raise ValueError(f"{WHERE}: seeds is empty: no runs")
    grid = isinstance(parameters, Mapping)
    combos = _combinations(parameters, len(seed_list))
    seed_name = _seed_name(factory)
    for i, combo in enumerate(combos):
        if seed_name in combo:
            raise ValueError(
                f"{WHERE}: parameter {seed_name!r} is the factory's seed argument; pass "
                "seeds=[...] instead"
            )
        where = WHERE if grid else f"{WHERE}: parameters[{i}]"
        _check_binds(factory, {**combo, seed_name: seed_list[0]}, where)
        if grid:
            break  # every combination of a grid has the same names
    total = len(combos) * len(seed_list)
    workers = min(max_workers or _default_workers(executor), total)
    _check_values(combos, grid, workers)
    for i, seed in enumerate(seed_list):
        _check_packs(seed, f"seeds[{i}] {shown(seed)}", workers)
    _check_policy(resolved, workers)
    show = _show_progress(progress)

    settings = pack(RunSettings(factory, steps, resolved, budget, clock), workers)
    runs: list[_Pending] = []
    for iteration, seed in enumerate(seed_list):
        for combo in combos:
            kwargs = {**combo, seed_name: seed}
            runs.append(_Pending(len(runs), iteration, kwargs, pack(kwargs, workers)))
    share = None
    if resolved.rate_limit is not None:
        limit = split_rate_limit(resolved.rate_limit, workers)
        share = RateLimitShare(limit.rate, limit.per, limit.burst)

    figures = SweepFigures(total, workers, time.perf_counter)
    driver = _Driver(runs, settings, steps, executor, workers, figures)
    aborted = True
    try:
        with live_sweep_progress(figures, show):
            driver.run()
        aborted = False
    finally:
        driver.close(abort=aborted)
    return SweepReport(
        tuple(driver.done[i] for i in range(total)),
        workers,
        run_rate_limit=share,
        duration=time.perf_counter() - started,
    )
