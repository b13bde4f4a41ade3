"""`resume` and `aio_resume`: continue a run kept by ``simulate(checkpoint=DIR)``.

The newest snapshot the manifest names (its digest checked) gives the model as it was
after step *s*; the ledger gives the reports of steps 1..*s* (lines after *s*, steps
that finished after the snapshot, are dropped: they are redone); the cassette in the
directory, opened in ``new_episodes`` mode with each agent's call count as it was
after step *s*, answers every call the redone steps make again, so only calls never
answered reach the provider. The run then goes on to its step count as any
`simulate` run would, writing to the same directory.
"""

from __future__ import annotations

import os
from typing import Any

import trio

from ._budget import Budget
from ._checkpoint import CheckpointError, Durability, RunDirectory
from ._checks import check_count, shown
from ._run_report import RunReport
from ._simulate import MAX_RUN_STEPS, aio_run, run_on_trio
from ._simulate import _check_clock as check_clock
from ._simulate import _refuse_inside_event_loop as refuse_inside_event_loop


def _budget_of(doc: Any) -> Budget | None:
    return None if doc is None else Budget(**doc)


def _prepare(
    where: str,
    directory: Any,
    steps: int | None,
    budget: Budget | None,
    policy: Any,
    options: dict[str, Any],
) -> tuple[Any, int, Budget | None, Any, dict[str, Any], Durability]:
    if steps is not None:
        check_count(f"{where}: steps", steps, minimum=0, maximum=MAX_RUN_STEPS)
    if budget is not None and not isinstance(budget, Budget):
        raise TypeError(f"{where}: budget must be a trio_mesa.Budget or None, not {shown(budget)}")
    run_dir = RunDirectory.open(where, directory)
    manifest = run_dir.manifest
    step, model, calls = run_dir.newest_snapshot()
    prior = tuple(run_dir.ledger_steps(step))
    target = manifest["steps"] if steps is None else steps
    if target < step:
        raise CheckpointError(
            run_dir.path,
            f"{where}: steps={target}, but the run has finished {step} steps already",
        )
    if budget is None:
        budget = _budget_of(manifest.get("budget"))
    if policy is None and not options:
        settings = run_dir.settings()
        if settings is None:
            raise CheckpointError(
                run_dir.path,
                f"{where}: the run's policy could not be saved (it does not pickle: "
                f"{manifest.get('settings_error')}); pass policy= (or its options) to resume",
            )
        policy, options = settings["policy"], dict(settings["options"])
    run_dir.keep_ledger(step)
    manifest["steps"] = target
    manifest["budget"] = None if budget is None else _budget_doc(budget)
    manifest["resumes"] = [*manifest.get("resumes", []), step]
    run_dir.write_manifest()
    durable = Durability(
        run_dir, prior=prior, calls=calls, resumed_after=tuple(manifest["resumes"])
    )
    return model, target, budget, policy, options, durable


def _budget_doc(budget: Budget) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(budget)


def resume(
    directory: str | os.PathLike[str],
    *,
    steps: int | None = None,
    budget: Budget | None = None,
    progress: bool | None = None,
    policy: Any = None,
    clock: trio.abc.Clock | None = None,
    **options: Any,
) -> RunReport:
    """Continue the run kept in ``directory`` (``simulate(checkpoint=directory)``).

    Loads the newest snapshot (after the last step that finished, or the last of
    every ``every``) and the ledger of the steps before it, and runs the model on to
    the run's step count (``steps`` sets another, at least the steps done). Steps
    finished after the snapshot are run again; the calls they, and the step that was
    interrupted, made are answered from the run's cassette at no cost.

    ``budget`` (default: the run's) counts the whole run's usage, the steps before the
    resume included: a run stopped at ``max_cost=20`` and resumed with ``max_cost=30``
    spends at most the difference. ``policy`` and options (default: the run's, as
    saved when it started), ``progress`` and ``clock`` are as in `simulate`.

    Returns:
        One `RunReport` for the whole run: the steps before the resume (rebuilt from
        the ledger: agents and exceptions as portable stand-ins) and after it.
        ``resumed_after`` names the snapshot step of each resume.

    Raises:
        CheckpointError: not a run directory; a manifest, snapshot or ledger that is
            damaged or edited (a snapshot whose digest differs from the manifest's is
            never loaded); a run made by another trio-mesa version; a snapshot of
            another model class; ``steps`` below the steps done. Naming the file and
            the reason, before any step runs. Otherwise whatever `simulate` raises.

    A run directory holds pickles, and loading one runs code: resume only directories
    you trust like code.
    """
    where = "trio_mesa.resume()"
    refuse_inside_event_loop(where)
    check_clock(where, clock)
    model, target, budget, policy, options, durable = _prepare(
        where, directory, steps, budget, policy, options
    )
    return run_on_trio(
        where, model, target, budget, progress, policy, clock, None, None, options, durable
    )


async def aio_resume(
    directory: str | os.PathLike[str],
    *,
    steps: int | None = None,
    budget: Budget | None = None,
    progress: bool | None = None,
    policy: Any = None,
    **options: Any,
) -> RunReport:
    """Asyncio twin of `resume`, as `aio_simulate` is of `simulate`."""
    where = "trio_mesa.aio_resume()"
    model, target, budget, policy, options, durable = _prepare(
        where, directory, steps, budget, policy, options
    )
    try:
        return await aio_run(
            where, model, target, budget, progress, policy, None, None, options, durable
        )
    except BaseException as exc:
        durable.note(exc)
        raise


__all__ = ["aio_resume", "resume"]
