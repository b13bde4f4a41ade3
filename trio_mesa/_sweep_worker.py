"""A sweep's work as it travels: what goes out to a worker, what runs there, what comes back.

Work goes out as bytes the driver pickled itself (`pack`), never as live models or
clients: the factory (by reference), the run's parameters and the run's settings. The
driver's own pickler (`TaskPickler`) turns each `RateLimit` into a fresh one of the
run's share (`split_rate_limit`) and any other lock-holding policy object (a
`CircuitBreaker`, a hook) into a copy with fresh locks, so every run, even runs sharing
one process (a Dask worker's threads), gets policy objects of its own. What comes back
is bytes too: a `RunOutcome` holding the run's portable `RunReport`
(`trio_mesa._portable`) or the reason it failed, pickled in the worker so that a value
that cannot travel is caught there and reported, not lost with the run.
"""

from __future__ import annotations

import io
import os
import pickle
import threading
import time
import traceback as tb
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._budget import Budget
from ._portable import portable_report, round_trips
from ._rate_limit import RateLimit
from ._run_report import RunReport
from ._text import CELL_LIMIT, describe_exception, safe_repr

_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))

__all__ = [
    "RunOutcome",
    "RunSettings",
    "TaskPickler",
    "pack",
    "ready",
    "run_task",
    "split_rate_limit",
]


def split_rate_limit(limit: RateLimit, workers: int) -> RateLimit:
    """The share of ``limit`` one of ``workers`` concurrent runs gets.

    ``rate / workers`` per the same ``per`` (so the runs' long-run rates sum to
    ``rate`` exactly), and ``burst // workers``, at least 1 (a limit needs one slot).
    """
    return RateLimit(limit.rate / workers, per=limit.per, burst=max(1, limit.burst // workers))


def _fresh_lock(kind: type) -> Any:
    return threading.RLock() if kind is _LOCK_TYPES[1] else threading.Lock()


class TaskPickler(pickle.Pickler):
    """Pickles a sweep's work: rate limits as their run's share, locks as fresh locks."""

    def __init__(self, file: Any, workers: int) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.workers = workers

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, RateLimit):
            share = split_rate_limit(obj, self.workers)
            return (RateLimit, (share.rate, share.per, share.burst))
        if type(obj) in _LOCK_TYPES:
            return (_fresh_lock, (type(obj),))
        return NotImplemented


def pack(value: Any, workers: int) -> bytes:
    """``value`` pickled by `TaskPickler` (raises what pickling raises)."""
    buffer = io.BytesIO()
    TaskPickler(buffer, workers).dump(value)
    return buffer.getvalue()


@dataclass(frozen=True, slots=True)
class RunSettings:
    """What every run of a sweep shares: sent once per run as the same bytes."""

    factory: Any
    steps: int
    policy: Any
    budget: Budget | None
    clock: Any  # a zero-argument callable returning a trio.abc.Clock, or None


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What comes back from a worker for one run."""

    report: RunReport | None = None
    error: str | None = None
    traceback: str | None = None
    model_steps: int | None = None
    model_data: dict[str, Any] = field(default_factory=dict)
    duration: float = 0.0


def _model_data(model: Any) -> dict[str, Any]:
    """The DataCollector's model reporters at its last collection (batch_run's row)."""
    collector = getattr(model, "datacollector", None)
    variables = getattr(collector, "model_vars", None)
    if not isinstance(variables, dict):
        return {}
    data = {}
    for name, values in variables.items():
        if values:
            value = values[-1]
            data[str(name)] = value if round_trips(value) else safe_repr(value, limit=CELL_LIMIT)
    return data


def ready() -> int:
    """A new worker's first task (the default pool's warm-up): import what runs need,
    and say which process this is."""
    from ._simulate import simulate  # noqa: F401  (each run needs it: pay for it up front)

    return os.getpid()


def _mark_started(marker: str | None, run_id: int, attempt: int) -> None:
    # The default process pool tells a dead worker's run from the runs killed with it
    # by this file: which process was running which run.
    if marker is not None:
        Path(marker, f"{run_id}.{attempt}").write_text(str(os.getpid()))


def run_task(sweep_id: str, run_id: int, attempt: int, settings_blob: bytes,
             kwargs_blob: bytes, marker: str | None = None) -> bytes:  # fmt: skip
    """Run one sweep run in this worker: build the model, `simulate` it, send back bytes.

    ``sweep_id`` is unique per sweep and unused here: it keeps an executor that caches
    results by their arguments (Dask's ``Client.get_executor()`` submits with
    ``pure=True``) from answering a second, identical sweep with the first one's
    results instead of running it.

    Never raises for what the run does: an exception (or KeyboardInterrupt, SystemExit)
    from the factory, a step or the clock becomes a `RunOutcome` with ``error`` and the
    traceback, with the model's step counter when a model was built.
    """
    from ._simulate import simulate

    _mark_started(marker, run_id, attempt)
    started = time.perf_counter()
    model = None
    try:
        settings: RunSettings = pickle.loads(settings_blob)
        kwargs: dict[str, Any] = pickle.loads(kwargs_blob)
        model = settings.factory(**kwargs)
        clock = settings.clock() if settings.clock is not None else None
        report = simulate(
            model,
            settings.steps,
            policy=settings.policy,
            budget=settings.budget,
            clock=clock,
            progress=False,  # the driver shows the sweep's progress; workers share its tty
        )
        outcome = RunOutcome(
            report=portable_report(report),
            model_steps=_steps_of(model),
            model_data=_model_data(model),
            duration=time.perf_counter() - started,
        )
    except BaseException as exc:  # the run's own failure, whatever it is: a row, not a crash
        outcome = RunOutcome(
            error=describe_exception(exc, limit=CELL_LIMIT),
            traceback="".join(tb.format_exception(exc)),
            model_steps=_steps_of(model),
            duration=time.perf_counter() - started,
        )
    try:
        return pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # a model reporter's value, say: report that instead
        failed = RunOutcome(
            error=f"the run's result could not be sent back: {describe_exception(exc)}",
            traceback="".join(tb.format_exception(exc)),
            model_steps=outcome.model_steps,
            duration=outcome.duration,
        )
        return pickle.dumps(failed, protocol=pickle.HIGHEST_PROTOCOL)


def _steps_of(model: Any) -> int | None:
    steps = getattr(model, "steps", None)
    return steps if isinstance(steps, int) and not isinstance(steps, bool) else None
