"""`model_reporters`: Mesa ``DataCollector`` model reporters for a `simulate` run.

A reporter is called as ``reporter(model)`` by ``datacollector.collect(model)``, usually
at the end of the model's own ``step()``, while `simulate` is still inside that step. It
finds the figures through the run registered for that model
(`trio_mesa._simulate.runs_by_model`, weakly keyed by the model, set when the run starts):
the agent-set steps of the model step running now, so far; or, called between steps or
after the run, those of the last model step that ran. Outside any run the counts are 0
and tokens and cost NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._checks import shown
from ._outcome import Status
from ._report import StepReport
from ._usage import sum_usage


def _latest(model: Any) -> tuple[StepReport, ...]:
    from ._simulate import runs_by_model

    run = runs_by_model.get(model)
    return run.latest_reports() if run is not None else ()


def _status_count(status: Status) -> Callable[[Any], int]:
    def reporter(model: Any) -> int:
        return sum(1 for r in _latest(model) for o in r.outcomes if o.status is status)

    reporter.__name__ = f"trio_mesa_{status.value}"
    return reporter


def _retries(model: Any) -> int:
    return sum(o.attempts - 1 for r in _latest(model) for o in r.outcomes if o.attempts > 1)


# Unknown figures are NaN, not None and not 0. A DataCollector's model_vars become a
# pandas frame: NaN keeps the column float64 whether some steps or all are unknown
# (None would leave an all-unknown column as dtype object, which .plot() refuses), and
# pandas reads NaN as missing (isna, mean, plots skip it), where 0 would look free.
_UNKNOWN = float("nan")


def _tokens(model: Any) -> float:
    usage = sum_usage(r.usage for r in _latest(model))
    return usage.total_tokens if usage.recorded else _UNKNOWN


def _cost(model: Any) -> float:
    cost = sum_usage(r.usage for r in _latest(model)).cost
    return _UNKNOWN if cost is None else cost


def model_reporters(prefix: str = "") -> dict[str, Callable[[Any], Any]]:
    """Model reporters for a Mesa ``DataCollector``: this step's figures, per model step.

    ``DataCollector(model_reporters=trio_mesa.model_reporters())``, or merged with
    yours: ``{**trio_mesa.model_reporters(), "mine": ...}``. Keys (each with ``prefix``
    in front): ``ok``, ``failed`` (status ``FAILED``), ``timed_out``, ``retries``
    (attempts beyond each agent's first), ``tokens`` (prompt + completion) and ``cost``.
    Each counts the agent outcomes of the model step that `simulate` (or
    `aio_simulate`) is running for that model, over every agent-set step made in it so
    far (so call ``collect`` after your agents have stepped); between steps or after the
    run, the last model step's. ``tokens`` and ``cost`` are ``float("nan")`` when
    unknown: no LLM call was recorded (or, for cost, some call's price is unknown);
    pandas reads NaN as missing and keeps the column numeric. Outside a run: counts 0,
    tokens and cost NaN.

    Raises:
        TypeError: ``prefix`` is not a str.
    """
    if not isinstance(prefix, str):
        raise TypeError(f"trio_mesa.model_reporters(): prefix must be a str, not {shown(prefix)}")
    return {
        f"{prefix}ok": _status_count(Status.OK),
        f"{prefix}failed": _status_count(Status.FAILED),
        f"{prefix}timed_out": _status_count(Status.TIMED_OUT),
        f"{prefix}retries": _retries,
        f"{prefix}tokens": _tokens,
        f"{prefix}cost": _cost,
    }


__all__ = ["model_reporters"]
