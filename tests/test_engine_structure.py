"""The engine's shape: one path (imports one way, one place builds outcomes) and one way
options reach it (``policy=`` everywhere, errors naming the function the user called)."""

from __future__ import annotations

import ast
import asyncio
import inspect
import logging
from pathlib import Path

import pytest
import trio
from core_agents import FLAVORS, AsyncioAgent, Model, SyncAgent, TrioAgent

import trio_mesa
from trio_mesa import Status, StepPolicy, compat

PACKAGE = Path(trio_mesa.__file__).parent


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(("trio_mesa", *path.relative_to(PACKAGE).with_suffix("").parts))
        out[name.removesuffix(".__init__")] = ast.parse(path.read_text())
    return out


def _imports(name: str, tree: ast.Module) -> set[str]:
    """The trio_mesa modules ``name`` imports at run time (TYPE_CHECKING blocks left out)."""
    package = name if name.count(".") == 0 or name.endswith("compat") else name.rsplit(".", 1)[0]
    found: set[str] = set()
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            else:
                target = node.module or ""
            if target.startswith("trio_mesa"):
                found.add(target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("trio_mesa"))
    found.discard(name)
    return found


def test_no_import_circle_inside_trio_mesa() -> None:
    modules = _modules()
    graph = {
        name: {m for m in _imports(name, tree) if m in modules} for name, tree in modules.items()
    }
    # Packages (trio_mesa, trio_mesa.compat) re-export: only their own submodules count as
    # edges out of them, so a package importing what imports the package is a circle.
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_agent_outcomes_are_built_in_the_recorder_only() -> None:
    builders = set()
    for name, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in (
                "AgentOutcome",
                "_new_outcome",
            ):
                builders.add(name)
            if isinstance(node, ast.Call) and "AgentOutcome" in [ast.unparse(a) for a in node.args]:
                builders.add(name)  # tuple.__new__(AgentOutcome, ...)
    assert builders == {"trio_mesa._recorder"}


ENTRY_POINTS = [
    trio_mesa.run_step,
    trio_mesa.step_agents,
    trio_mesa.call_agents,
    trio_mesa.aio_step_agents,
    trio_mesa.aio_call_agents,
]


@pytest.mark.parametrize("fn", ENTRY_POINTS, ids=lambda f: f.__name__)
def test_every_entry_point_takes_a_policy(fn) -> None:
    parameter = inspect.signature(fn).parameters["policy"]
    assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
    assert parameter.default is None


def test_run_step_takes_policy_and_options_on_top(mock_clock) -> None:
    model = Model()
    SyncAgent(model, ("raise", ValueError("bad JSON")))
    policy = StepPolicy(strict=True)
    with pytest.raises(trio_mesa.StepFailed):
        trio_mesa.run_step(model.agents, policy=policy, clock=mock_clock)
    report = trio_mesa.run_step(model.agents, policy=policy, strict=False, clock=mock_clock)
    assert report.counts[Status.FAILED] == 1


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda a, **kw: trio_mesa.run_step(a, **kw), "trio_mesa.run_step()"),
        (lambda a, **kw: trio.run(lambda: trio_mesa.step_agents(a, **kw)), "step_agents()"),
        (
            lambda a, **kw: asyncio.run(trio_mesa.aio_step_agents(a, **kw)),
            "trio_mesa.aio_step_agents()",
        ),
    ],
    ids=["run_step", "step_agents", "aio_step_agents"],
)
@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"policy": {"timeout": 3}}, TypeError, "policy must be a trio_mesa.StepPolicy"),
        ({"timout": 3}, TypeError, "unknown option.*'timout'"),
        ({"timeout": -1}, ValueError, "timeout must be a non-negative"),
        ({"strict": "false"}, TypeError, "strict must be True or False"),
        ({"shuffle": 1}, TypeError, "shuffle must be True, False or None"),
        ({"hooks": [object()]}, TypeError, "on_outcome.*on_report"),
    ],
)
def test_bad_options_name_the_function_called(call, name, options, error, message) -> None:
    model = Model()
    agent = SyncAgent(model)
    with pytest.raises(error, match=message) as info:
        call(model.agents, **options)
    assert name in str(info.value)
    assert agent.calls == 0


async def test_shuffle_lives_in_the_policy() -> None:
    model = Model(seed=5)
    agents = [TrioAgent(model) for _ in range(20)]
    given = [a.unique_id for a in agents]
    report = await trio_mesa.step_agents(agents, policy=StepPolicy(shuffle=True))
    assert sorted(o.unique_id for o in report) == sorted(given)
    assert [o.unique_id for o in report] != given
    report = await trio_mesa.step_agents(model.agents, policy=StepPolicy(shuffle=False))
    assert [o.unique_id for o in report] == given


class Recording:
    def __init__(self) -> None:
        self.outcomes: list[trio_mesa.AgentOutcome] = []
        self.reports: list[trio_mesa.StepReport] = []

    def on_outcome(self, outcome) -> None:
        self.outcomes.append(outcome)

    def on_report(self, report) -> None:
        self.reports.append(report)


@pytest.mark.parametrize("flavor", ["trio", "asyncio", "sync"])
async def test_a_policy_hook_sees_every_outcome_and_the_report(flavor) -> None:
    model = Model()
    cls = FLAVORS[flavor]
    agents = [cls(model), cls(model, ("raise", ValueError("x"))), cls(model)]
    hook = Recording()
    report = await trio_mesa.step_agents(model.agents, hooks=[hook], sync_mode="thread")
    assert sorted(o.unique_id for o in hook.outcomes) == sorted(a.unique_id for a in agents)
    assert set(hook.outcomes) == set(report.outcomes)
    assert hook.reports == [report]


async def test_process_wide_hooks_replace_logging_and_a_raising_hook_changes_nothing(
    caplog,
) -> None:
    class Broken:
        def on_outcome(self, outcome) -> None:
            raise RuntimeError("hook bug")

    model = Model()
    AsyncioAgent(model, ("raise", ValueError("bad JSON")))
    AsyncioAgent(model)
    saved = trio_mesa.get_outcome_hooks()
    recording = Recording()
    try:
        trio_mesa.set_outcome_hooks([Broken(), recording])
        with caplog.at_level(logging.ERROR, logger="trio_mesa"):
            report = await trio_mesa.step_agents(model.agents)
    finally:
        trio_mesa.set_outcome_hooks(saved)
    assert [o.status for o in sorted(report, key=lambda o: o.unique_id)] == [
        Status.FAILED,
        Status.OK,
    ]
    assert len(recording.outcomes) == 2 and recording.reports == [report]
    messages = [r.getMessage() for r in caplog.records]
    # No LoggingHook: the agent's failure is not logged; each hook failure is.
    assert not any("failed: ValueError" in m for m in messages)
    assert sum("hook bug" in m for m in messages) == 2
    assert trio_mesa.get_outcome_hooks() == saved


def test_set_outcome_hooks_refuses_a_non_hook() -> None:
    with pytest.raises(TypeError, match="set_outcome_hooks"):
        trio_mesa.set_outcome_hooks([42])  # type: ignore[list-item]


def test_compat_configure_refuses_what_step_policy_refuses() -> None:
    limiter = trio.CapacityLimiter(3)
    with pytest.raises(ValueError, match=r"configure.*either max_concurrency or limiter"):
        compat.configure(max_concurrency=2, limiter=limiter)
    with (
        pytest.raises(ValueError, match=r"policy.*either max_concurrency or limiter"),
        compat.policy(max_concurrency=2, limiter=limiter),
    ):
        pass  # pragma: no cover
    # Across layers the inner choice replaces the outer one, visibly.
    with compat.policy(max_concurrency=2), compat.policy(limiter=limiter) as effective:
        assert (effective.max_concurrency, effective.limiter) == (None, limiter)


def test_each_failure_is_one_agent_record_and_fail_fast_is_a_step_record(caplog) -> None:
    # A handler counting failures from records (those with agent_status) counts the
    # agent that fired fail_fast once: the "cancelling the others" record is the step's.
    model = Model()
    bad = SyncAgent(model, ("raise", ValueError("bad")))
    SyncAgent(model)
    with caplog.at_level(logging.DEBUG, logger="trio_mesa"):
        report = trio_mesa.run_step(model.agents, fail_fast=True)
    records = [r for r in caplog.records if r.name == "trio_mesa"]
    agent_records = [r for r in records if hasattr(r, "agent_status")]
    assert [(r.agent_unique_id, r.agent_status) for r in agent_records] == [
        (bad.unique_id, "failed")
    ]
    assert len(agent_records) == len([o for o in report if o.status is Status.FAILED])
    (step_record,) = [r for r in records if getattr(r, "trio_mesa_event", None) == "fail_fast"]
    assert step_record.first_failed_unique_id == bad.unique_id
    assert not hasattr(step_record, "agent_unique_id")
