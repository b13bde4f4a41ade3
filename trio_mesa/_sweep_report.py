"""`SweepRun` and `SweepReport`: the account of a `trio_mesa.sweep`, one row per run.

A run that finished has its `RunReport` (in the portable form a worker sends back: see
`trio_mesa._portable`); a run that did not (its factory raised, ``model.step()`` raised,
its worker process died) has ``error``, the reason, instead. `SweepReport.to_records`
lays the runs out as Mesa's ``batch_run`` lays out its results (``RunId``,
``iteration``, ``Step``, the parameters, the model's reporters), plus our columns.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ._outcome import Status
from ._run_report import RunReport
from ._text import clean
from ._usage import Usage, sum_usage

#: The columns every record has besides the parameters and the model's reporters, in
#: order: ``batch_run``'s first three, then ours.
RECORD_COLUMNS = (
    "RunId",
    "iteration",
    "Step",
    "ok",
    "lost",
    "retries",
    "tokens",
    "cost",
    "stopped_because",
    "error",
)
_LEADING = RECORD_COLUMNS[:3]
_TRAILING = RECORD_COLUMNS[3:]


class RateLimitShare(NamedTuple):
    """The `RateLimit` each run of a sweep got: ``RateLimit(rate, per, burst)`` of its own."""

    rate: float
    per: float
    burst: int


@dataclass(frozen=True, slots=True, repr=False)
class SweepRun:
    """One run of a sweep: the factory called with ``parameters``, stepped ``steps`` times.

    Attributes:
        run_id: the run's number, from 0, in the order of the grid (seed by seed, and
            for each seed every parameter combination, as ``batch_run`` numbers them).
        iteration: the index of the run's seed in ``seeds``.
        parameters: the keyword arguments the factory was called with, the seed's
            included (under ``rng`` or ``seed``, the name the factory takes).
        steps: the steps asked for.
        report: the run's `RunReport`, or ``None`` when the run did not finish. Its
            outcomes are the portable form: see `trio_mesa.sweep`.
        error: ``None`` when the run finished; otherwise why not, e.g.
            ``"ZeroDivisionError: division by zero"`` or ``"the worker process died
            (signal SIGKILL) while running it"``.
        traceback: the formatted traceback of ``error`` when there is one (from the
            worker), else ``None``.
        model_steps: the model's ``steps`` counter when the run ended (``None`` when no
            model was built).
        model_data: the model's ``DataCollector`` model reporters at the last
            collection (what ``batch_run`` reports by default), ``{}`` without one. A
            value that could not be sent back is its ``repr``.
        attempts: how many times the run was started: 2 when a sibling's worker death
            took this run's worker down with it and it was started again.
        duration: wall-clock seconds the run took in its worker (``0.0`` when it never
            ran there).
    """

    run_id: int
    iteration: int
    parameters: dict[str, Any]
    steps: int
    report: RunReport | None = None
    error: str | None = None
    traceback: str | None = None
    model_steps: int | None = None
    model_data: dict[str, Any] = field(default_factory=dict)
    attempts: int = 1
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        """``True`` when the run finished (its agents may still have failed: see
        ``report``)."""
        return self.error is None

    @property
    def usage(self) -> Usage:
        """The run's `Usage` (empty when it did not finish: a run that died took its
        figures with it)."""
        return self.report.usage if self.report is not None else Usage()

    def to_record(self) -> dict[str, Any]:
        """The run as one ``batch_run``-shaped row (see `SweepReport.to_records`)."""
        row: dict[str, Any] = {"RunId": self.run_id, "iteration": self.iteration}
        row["Step"] = self.model_steps
        row.update(self.parameters)
        for name, value in self.model_data.items():
            row[f"model:{name}" if name in RECORD_COLUMNS or name in row else name] = value
        report = self.report
        if report is None:
            row.update(dict.fromkeys(_TRAILING))
        else:
            usage = report.usage
            row["ok"] = report.counts[Status.OK]
            row["lost"] = report.lost
            row["retries"] = report.retries
            row["tokens"] = usage.total_tokens
            row["cost"] = usage.cost
            row["stopped_because"] = report.stopped_because
        row["error"] = self.error
        return row

    def __repr__(self) -> str:
        state = f"error={clean(self.error, 120)!r}" if self.error is not None else repr(self.report)
        return f"<SweepRun {self.run_id} parameters={self.parameters!r} {state}>"


@dataclass(frozen=True, slots=True, repr=False)
class SweepReport:
    """What a `trio_mesa.sweep` did: one `SweepRun` per run, in ``run_id`` order.

    Attributes:
        runs: every run, finished or not.
        workers: how many runs were in flight at most at once (each `RateLimit` was
            split among that many).
        run_rate_limit: the share of the policy's `RateLimit` each run got, as
            ``(rate, per, burst)`` (a ``RateLimit`` of these in each run), ``None``
            without one.
        duration: wall-clock seconds the whole sweep took.
    """

    runs: tuple[SweepRun, ...]
    workers: int
    run_rate_limit: RateLimitShare | None = None
    duration: float = 0.0

    def __len__(self) -> int:
        return len(self.runs)

    def __iter__(self) -> Iterator[SweepRun]:
        return iter(self.runs)

    def __getitem__(self, run_id: int) -> SweepRun:
        return self.runs[run_id]

    @property
    def finished(self) -> tuple[SweepRun, ...]:
        """Runs that finished (their agents may have failed: see each report)."""
        return tuple(r for r in self.runs if r.error is None)

    @property
    def failed(self) -> tuple[SweepRun, ...]:
        """Runs that did not finish, each with its ``error``."""
        return tuple(r for r in self.runs if r.error is not None)

    @property
    def reports(self) -> tuple[RunReport | None, ...]:
        """Each run's `RunReport` in ``run_id`` order (``None`` for a failed run)."""
        return tuple(r.report for r in self.runs)

    @property
    def usage(self) -> Usage:
        """The finished runs' `Usage`, summed."""
        return sum_usage(r.usage for r in self.runs)

    @property
    def lost(self) -> int:
        """Lost agent-steps over the finished runs."""
        return sum(r.report.lost for r in self.runs if r.report is not None)

    def to_records(self) -> list[dict[str, Any]]:
        """One plain dict per run, in ``run_id`` order, shaped like ``batch_run``'s rows.

        Keys, in order: ``RunId``, ``iteration``, ``Step`` (the model's ``steps`` when
        the run ended), the run's parameters (the seed under ``rng`` or ``seed``), the
        model's ``DataCollector`` model reporters at its last collection (one named like
        another column is renamed ``"model:<name>"``), then ours: ``ok`` (agent-steps
        that ended ``OK``), ``lost``, ``retries``, ``tokens``, ``cost`` (``None`` when
        unknown), ``stopped_because`` (a `Budget` limit) and ``error`` (``None``, or why
        the run did not finish; its figures are then ``None``). Wall-clock times are
        left out, so the same sweep with the same seeds gives equal records.
        """
        return [r.to_record() for r in self.runs]

    def to_dataframe(self) -> Any:
        """`to_records` as a ``pandas.DataFrame`` (pandas is imported here, and needed).

        Raises:
            ImportError: pandas is not installed.
        """
        try:
            import pandas
        except ImportError:
            raise ImportError(
                "SweepReport.to_dataframe() needs pandas (pip install pandas); "
                "to_records() gives the same rows as plain dicts"
            ) from None
        return pandas.DataFrame(self.to_records())

    def _summary(self) -> str:
        failed = len(self.failed)
        line = (
            f"sweep: {len(self.runs)} runs ({len(self.runs) - failed} finished, {failed} failed) "
            f"on {self.workers} workers in {self.duration:.3f} s"
        )
        usage = self.usage
        if usage:
            line += f"; {usage.total_tokens} tokens"
        if self.lost:
            line += f"; {self.lost} agent-steps lost"
        return line

    def __repr__(self) -> str:
        return (
            f"<SweepReport runs={len(self.runs)} failed={len(self.failed)} "
            f"workers={self.workers} tokens={self.usage.total_tokens} "
            f"duration={self.duration:.6g}>"
        )

    def __str__(self) -> str:
        lines = [self._summary()]
        lines.append(
            f"  {'run':>4}  {'steps':>5}  {'ok':>6}  {'lost':>5}  {'retry':>5}  "
            f"{'tokens':>8}  error / parameters"
        )
        for run in self.runs:
            report = run.report
            if report is None:
                lines.append(
                    f"  {run.run_id:>4}  {'-':>5}  {'-':>6}  {'-':>5}  {'-':>5}  {'-':>8}  "
                    f"{clean(run.error or '', 200)}"
                )
                continue
            lines.append(
                f"  {run.run_id:>4}  {len(report.steps):>5}  {report.counts[Status.OK]:>6}  "
                f"{report.lost:>5}  {report.retries:>5}  {report.usage.total_tokens:>8}  "
                f"{clean(repr(run.parameters), 200)}"
            )
        return "\n".join(lines)


__all__ = ["RECORD_COLUMNS", "RateLimitShare", "SweepReport", "SweepRun"]
