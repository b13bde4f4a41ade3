"""The command line: ``python -m fault_injection list``, ``run SCENARIO [options]``, ``serve``.

``run`` prints a progress bar over steps and a summary table (with rich when it is
installed, plain text otherwise), or with ``--json`` exactly one JSON document on stdout.
Exit status: 0 when every step matched the oracle, 1 on any mismatch, 2 on bad
arguments (an argparse-style message on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from trio_mesa import Status

from ._oracle import mesa_llm_baseline, without_retries
from ._runner import HOSTS, RunResult, StepResult, run_scenario
from ._scenario import Scenario
from ._scenarios import SCENARIOS
from ._toml import ScenarioError, load_scenario
from .chaos._cli import add_serve_parser, run_serve

_STEP_COLUMNS = (
    (Status.OK, "ok"),
    (Status.FAILED, "failed"),
    (Status.TIMED_OUT, "timed out"),
    (Status.CANCELLED, "cancel"),
    (Status.SKIPPED, "skip"),
)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fault_injection",
        description="Run fake LLM agents through seeded failure scenarios and check every "
        "outcome against an exact oracle.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{list,run,resume,serve}")
    sub.add_parser("list", help="list the named scenarios")
    run = sub.add_parser("run", help="run a scenario and check it against the oracle")
    run.add_argument("scenario", help="a scenario name (see 'list') or a path to a .toml file")
    run.add_argument("--agents", type=_positive_int, metavar="N", help="number of agents")
    run.add_argument("--steps", type=_positive_int, metavar="S", help="number of steps")
    run.add_argument("--seed", type=_int, metavar="K", help="the seed (default: the scenario's)")
    run.add_argument("--strict", action="store_true", help="run the steps in strict mode")
    run.add_argument("--host", choices=HOSTS, default="trio", help="the host event loop")
    run.add_argument(
        "--real-time",
        action="store_true",
        help="real time, scaled by the scenario's real_time_scale (the asyncio host always is)",
    )
    run.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    run.add_argument(
        "--checkpoint",
        metavar="DIR",
        help="keep the run in DIR (new or empty) through trio_mesa.simulate, so that "
        "'resume DIR' continues it after a kill, Ctrl-C or crash (Trio host only)",
    )
    run.add_argument(
        "--every", type=_positive_int, default=1, metavar="K", help="snapshot every K steps"
    )
    resume = sub.add_parser(
        "resume", help="continue a run kept with 'run --checkpoint DIR' and check it"
    )
    resume.add_argument("directory", metavar="DIR", help="the run directory")
    resume.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    add_serve_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "list":
        _list(sys.stdout)
        return 0
    if args.command == "serve":
        return run_serve(args)
    if args.command == "resume":
        return _kept(parser, args, None)
    scenario = _resolve(parser, args.scenario)
    if args.host == "asyncio" and not _compat_available():
        parser.error("--host asyncio needs trio_mesa.compat, which this installation lacks")
    try:
        scenario = scenario.replace(
            **{k: v for k, v in (("agents", args.agents), ("steps", args.steps)) if v is not None}
        )
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    if args.checkpoint is not None:
        if args.host != "trio" or args.strict:
            parser.error("--checkpoint runs on the Trio host, without --strict")
        if scenario.quota is not None:
            # The bucket reads the run's clock, which a resumed run starts afresh.
            parser.error("--checkpoint: a scenario with a quota cannot be resumed exactly")
        return _kept(parser, args, scenario)
    options: dict[str, Any] = {
        "seed": args.seed,
        "strict": True if args.strict else None,
        "host": args.host,
        "real_time": args.real_time,
    }
    if args.json:
        result = run_scenario(scenario, **options)
        # json.dumps, not json.dump: only the one-shot encoder is json's C one (same text).
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
    else:
        result = _run_with_progress(scenario, options)
    return 0 if result.matched else 1


def _kept(parser: argparse.ArgumentParser, args: Any, scenario: Scenario | None) -> int:
    """``run --checkpoint DIR`` (``scenario`` given) or ``resume DIR``."""
    import trio_mesa

    from ._durable import resume_checkpointed, run_checkpointed

    try:
        if scenario is None:
            result = resume_checkpointed(args.directory)
        else:
            result = run_checkpointed(
                scenario,
                args.checkpoint,
                args.seed,
                real_time=args.real_time,
                every=args.every,
            )
    except trio_mesa.CheckpointError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except KeyboardInterrupt:
        where = args.directory if scenario is None else args.checkpoint
        parser.exit(
            130,
            f"interrupted; the run is kept in {where}: "
            f"python -m fault_injection resume {where} continues it\n",
        )
    if args.json:
        sys.stdout.write(json.dumps(result.to_json()) + "\n")
    else:
        try:
            from rich.console import Console
        except ImportError:
            sys.stdout.write(render_text(result))
        else:
            Console().print(render_rich(result))
    return 0 if result.matched else 1


def _kept_lines(result: RunResult) -> list[str]:
    if result.checkpoint is None:
        return []
    lines = []
    if result.resumed_after:
        lines.append(f"resumed after step {', '.join(map(str, result.resumed_after))}.")
    if result.stopped_because:
        lines.append(f"stopped early: {result.stopped_because}.")
    lines.append(
        f"run kept in {result.checkpoint}: python -m fault_injection resume "
        f"{result.checkpoint} continues it after a kill or Ctrl-C."
    )
    return lines


def _compat_available() -> bool:
    try:
        import trio_mesa.compat  # noqa: F401
    except ImportError:
        return False
    return True


def _resolve(parser: argparse.ArgumentParser, name: str) -> Scenario:
    if name in SCENARIOS:
        return SCENARIOS[name]
    if name.endswith(".toml") or Path(name).is_file():
        try:
            return load_scenario(name)
        except ScenarioError as exc:
            parser.error(str(exc))
    parser.error(f"unknown scenario {name!r}; named scenarios: {', '.join(SCENARIOS)}")
    raise AssertionError  # parser.error exits


def _list(out: TextIO) -> None:
    width = max(len(n) for n in SCENARIOS)
    for name, s in SCENARIOS.items():
        out.write(
            f"{name.ljust(width)}  {s.agents:>4} agents x {s.steps:>3} steps  {s.description}\n"
        )


def _run_with_progress(scenario: Scenario, options: dict[str, Any]) -> RunResult:
    try:
        from rich.console import Console
        from rich.markup import escape
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
    except ImportError:  # rich is optional: plain text
        result = run_scenario(scenario, **options)
        sys.stdout.write(render_text(result))
        return result
    err = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[last]}"),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task(escape(scenario.name), total=scenario.steps, last="")

        def on_step(step: StepResult) -> None:
            ok = step.counts[Status.OK]
            last = f"step {step.step}: {ok} ok" + (" [red]mismatch[/]" if step.mismatches else "")
            progress.update(task, advance=1, last=last)

        result = run_scenario(scenario, on_step=on_step, **options)
    Console().print(render_rich(result))
    return result


def _fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.2f}"


def _steps_text(steps: Sequence[int]) -> str:
    """``[1, 2, 3, 5, 7, 8]`` as ``"1-3, 5, 7-8"``."""
    runs: list[list[int]] = []
    for n in steps:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def _raised_lines(result: RunResult) -> list[str]:
    """What the steps raised (strict mode's `StepFailed`, an interrupt), one line per
    type: under the step table rather than in it, where a long name would not fit."""
    where: dict[str, list[int]] = {}
    for st in result.steps:
        if st.raised:
            where.setdefault(st.raised, []).append(st.step)
    return [
        f"{'step' if len(steps) == 1 else 'steps'} {_steps_text(steps)} raised {name}"
        for name, steps in where.items()
    ]


def _kind_rows(result: RunResult) -> list[tuple[str, int, str]]:
    """(exception type, agent-steps, the steps it happened in) per kind of failure, the
    commonest first: one row per kind, so a long type name never squeezes the step table."""
    total: dict[str, int] = {}
    where: dict[str, list[int]] = {}
    for st in result.steps:
        for name, n in st.failures.items():
            total[name] = total.get(name, 0) + n
            where.setdefault(name, []).append(st.step)
    order = sorted(total, key=lambda name: (-total[name], name))
    return [(name, total[name], _steps_text(where[name])) for name in order]


def _header(result: RunResult) -> list[str]:
    s = result.scenario
    clock = f"real time x{s.real_time_scale:g}" if result.real_time else "virtual time (MockClock)"
    policy = ", ".join(
        f"{k}={v:g}" if isinstance(v, float | int) and not isinstance(v, bool) else f"{k}={v}"
        for k, v in (
            ("timeout", s.timeout),
            ("deadline", s.deadline),
            ("strict", s.strict),
            ("retry", None if s.retry is None else f"{s.retry.attempts} attempts"),
            ("rate_limit", s.rate_limit),
        )
        if v not in (None, False)
    )
    if result.real_time:
        took = (
            f"took {result.wall_time:.2f} s of wall-clock time "
            f"({result.model_seconds:.1f} model seconds at x{s.real_time_scale:g})"
        )
    else:
        # Both, labelled: the events are in virtual time, which can be far longer than
        # the wall-clock time the run took (or far shorter, for a CPU-bound run).
        took = (
            f"took {result.model_seconds:.2f} s of virtual time "
            f"({result.wall_time:.2f} s of wall-clock time)"
        )
    return [
        f"scenario {s.name!r}: {s.agents} agents x {s.steps} steps, seed {result.seed}, "
        f"host {result.host}, {clock}, {policy or 'no limits'}; {took}",
    ]


def _baseline_lines(result: RunResult) -> list[str]:
    b = mesa_llm_baseline(result.expected)
    # model seconds: what the latencies and limits of the scenario are written in
    unit = "s" if result.real_time else "virtual s"
    # trio-mesa's own time as measured, not the oracle's estimate: the estimate caps
    # each step at its slowest planned call and knows nothing of rate-limit waits.
    ours = result.model_seconds
    hangs = b["model_seconds"] == float("inf")
    theirs = "and then hangs forever" if hangs else f"in {b['model_seconds']:.1f} {unit}"
    lines = [f"mesa-llm 0.3 stepping, same plan: {b['why']}."]
    if b["stopped_at"] is not None:
        lines.append(
            f"  It completes {b['completed_steps']} of {len(result.expected.steps)} steps "
            f"({b['agent_steps_done']} agent-steps of work) {theirs}; trio-mesa: "
            f"{len(result.steps)} steps ({b['ours_agent_steps_done']} agent-steps) "
            f"in {ours:.1f} {unit}."
        )
    else:
        lines.append(
            f"  It runs {theirs}; trio-mesa, cutting slow calls at the time limit, "
            f"{ours:.1f} {unit}."
        )
    return lines


def recovery_lines(result: RunResult) -> list[str]:
    """With a retry: agent-steps lost with retries and (the oracle's counterfactual, same
    scenario and seed) without them; with a quota: the requests it admitted and refused."""
    lines: list[str] = []
    s = result.scenario
    if s.retry is not None:
        lost = sum(
            1 for st in result.steps for status in st.statuses.values() if status is not Status.OK
        )
        plain = without_retries(result.expected).steps[: len(result.steps)]
        lost_without = sum(e.lost for e in plain)
        retried = sum(st.retried for st in result.steps)
        attempts = sum(st.attempts for st in result.steps)
        total = sum(len(st.statuses) for st in result.steps)
        lines.append(
            f"retries: {lost} of {total} agent-steps lost with Retry(attempts="
            f"{s.retry.attempts}), {lost_without} without it (same plan, no retry); "
            f"{retried} agent-steps retried, {attempts} calls in all."
        )
    if result.quota is not None and s.quota is not None:
        q = result.quota
        lines.append(
            f"quota {s.quota.describe()}: {q['admitted']} requests admitted, "
            f"{q['refused']} refused with 429."
        )
    return lines


def _verdict(result: RunResult) -> list[str]:
    mismatches = result.mismatches
    if not mismatches:
        return [f"oracle: every outcome of all {len(result.steps)} steps matched."]
    lines = [f"oracle: {len(mismatches)} MISMATCH(ES):"]
    lines += [f"  {m}" for m in mismatches[:30]]
    if len(mismatches) > 30:
        lines.append(f"  ... and {len(mismatches) - 30} more")
    return lines


def render_text(result: RunResult, width: int = 80) -> str:
    """The plain-text summary (when rich is not installed), ``width`` columns wide: a
    row per step, a row per kind of failure, the agents that did not succeed in the
    last step that had any, the mesa-llm comparison and the verdict."""
    wrap = textwrap.TextWrapper(width=width, subsequent_indent="  ", break_on_hyphens=False)
    lines = [line for text in _header(result) for line in wrap.wrap(text)]
    head = ["step", *(c for _, c in _STEP_COLUMNS), "p50 s", "p95 s"]
    rows = [head]
    for st in result.steps:
        counts = st.counts
        rows.append(
            [
                str(st.step),
                *(str(counts[s]) for s, _ in _STEP_COLUMNS),
                _fmt(st.percentile(0.5)),
                _fmt(st.percentile(0.95)),
            ]
        )
    lines += _columns(rows)
    lines += _raised_lines(result)
    kinds = _kind_rows(result)
    if kinds:
        lines.append("failures by kind:")
        table = [["kind", "agent-steps", "steps"], *([k, str(n), w] for k, n, w in kinds)]
        lines += _columns(table, names_first=True)
    last = _last_not_ok(result)
    if last is not None:
        step, not_ok = last
        lines.append(f"step {step}: the {len(not_ok)} agent(s) that did not succeed")
        for uid, cls, status, text in not_ok:
            lines += wrap.wrap(f"{uid}  {cls}  {status}  {text}")
    tail = [
        *_baseline_lines(result),
        *recovery_lines(result),
        *_verdict(result),
        *_kept_lines(result),
    ]
    lines += [line for text in tail for line in (wrap.wrap(text) or [""])]
    return "\n".join(lines) + "\n"


def _columns(rows: list[list[str]], *, names_first: bool = False) -> list[str]:
    """Rows of cells, each column as wide as its widest cell: numbers to the right (a
    first column of names, with ``names_first``, to the left), the last column (free
    text) as it is."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return [
        "  ".join(
            c.ljust(w) if names_first and i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=False))
        )
        + "  "
        + r[-1]
        for r in rows
    ]


def _last_not_ok(result: RunResult) -> tuple[int, list[tuple[Any, str, str, str]]] | None:
    """The last step with agents that did not succeed, and those agents."""
    for st in reversed(result.steps):
        if st.not_ok:
            return st.step, st.not_ok
    return None


def render_rich(result: RunResult) -> Any:
    """The rich summary, readable on an 80-column terminal: the run's header, a row per
    step (counts, latencies, the oracle's verdict), a row per kind of failure, the agents
    that did not succeed in the last step that had any, the mesa-llm comparison and the
    verdict. Every cell made from a scenario or an agent is `Text`, never markup."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    def numbers(title: str | None = None) -> Table:
        return Table(title=title, title_justify="left", padding=(0, 1))

    table = numbers()
    table.add_column("step", justify="right", no_wrap=True)
    short = ("ok", "fail", "t/o", "canc", "skip")
    styles = ("green", "red", "yellow", "magenta", "dim")
    for name, style in zip(short, styles, strict=True):
        table.add_column(name, justify="right", style=style, no_wrap=True)
    table.add_column("p50 s", justify="right", no_wrap=True)
    table.add_column("p95 s", justify="right", no_wrap=True)
    table.add_column("oracle", no_wrap=True)
    for st in result.steps:
        counts = st.counts
        table.add_row(
            str(st.step),
            *(str(counts[s]) for s, _ in _STEP_COLUMNS),
            _fmt(st.percentile(0.5)),
            _fmt(st.percentile(0.95)),
            Text("ok", style="green")
            if not st.mismatches
            else Text(f"{len(st.mismatches)} off", style="red"),
        )
    parts: list[Any] = [Text(_header(result)[0], style="bold"), table]
    parts += [Text(line, style="bold") for line in _raised_lines(result)]
    kinds = _kind_rows(result)
    if kinds:
        by_kind = numbers("failures by kind")
        by_kind.add_column("kind", overflow="fold")
        by_kind.add_column("agent-steps", justify="right", no_wrap=True)
        by_kind.add_column("steps", ratio=1)
        for kind, n, steps in kinds:
            by_kind.add_row(Text(kind), str(n), Text(steps))
        parts.append(by_kind)
    last = _last_not_ok(result)
    if last is not None:
        step, rows = last
        agents = numbers(f"step {step}: the {len(rows)} agent(s) that did not succeed")
        agents.add_column("unique_id", justify="right", no_wrap=True)
        agents.add_column("class", overflow="fold")
        agents.add_column("status", no_wrap=True)
        agents.add_column("exception", ratio=1, overflow="fold")
        for uid, cls, status, text in rows:
            agents.add_row(Text(str(uid)), Text(cls), Text(status), Text(text))
        parts.append(agents)
    baseline = Text("\n".join(_baseline_lines(result)), style="bold yellow")
    recovery = recovery_lines(result)
    if recovery:
        parts.append(baseline)
        baseline = Text("\n".join(recovery), style="bold cyan")
    verdict = Text(
        "\n".join(_verdict(result)), style="bold green" if result.matched else "bold red"
    )
    kept = Text("\n".join(_kept_lines(result)))
    return Group(*parts, baseline, verdict, kept)
