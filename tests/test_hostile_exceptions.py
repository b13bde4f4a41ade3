"""An agent's exception is the agent's code: whatever its ``__str__``/``__repr__`` do,
reports, tables, records and log lines still render (issue 15, class 2).

Hypothesis builds hostile exception classes: ``__str__`` and ``__repr__`` that raise,
return a non-string, return megabytes, terminal escapes, lone surrogates or rich markup,
and ``__notes__`` that refuse a note. Every renderer of a step must survive all of them,
name the exception's type, and write nothing a terminal would act on.
"""

from __future__ import annotations

import io
import json
import logging
import traceback

import mesa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

import trio_mesa
from fault_injection import SCENARIOS, run_scenario
from fault_injection._cli import render_rich, render_text
from trio_mesa import Status, StepFailed
from trio_mesa._text import CELL_LIMIT, describe_exception, exception_message, safe_repr

HOSTILE_TEXT = st.one_of(
    st.text(st.characters(codec=None, exclude_categories=()), max_size=40),  # surrogates too
    st.sampled_from(["[/]", "[bold red]x", "\x1b[2J\x1b]0;pwned\x07", "\r\x00\x9b", "%s %(x)s"]),
    st.integers(CELL_LIMIT, 200_000).map(lambda n: "x" * n),
)


def _method(behaviour: object):
    kind, value = behaviour

    def method(self):
        if kind == "raise":
            raise value("from inside the agent's exception")
        return value

    return method


BEHAVIOUR = st.one_of(
    st.tuples(st.just("raise"), st.sampled_from([ValueError, RuntimeError, TypeError, KeyError])),
    st.tuples(st.just("return"), st.one_of(st.none(), st.integers(), st.binary(max_size=8))),
    st.tuples(st.just("return"), HOSTILE_TEXT),
)


@st.composite
def hostile_exceptions(draw: st.DrawFn) -> BaseException:
    namespace = {}
    if draw(st.booleans()):
        namespace["__str__"] = _method(draw(BEHAVIOUR))
    if draw(st.booleans()):
        namespace["__repr__"] = _method(draw(BEHAVIOUR))
    cls = type(
        "HostileError", (draw(st.sampled_from([Exception, ValueError, OSError])),), namespace
    )
    exc = cls(draw(HOSTILE_TEXT))
    if draw(st.booleans()):
        exc.__notes__ = draw(st.sampled_from(["not a list", (), 42]))
    return exc


class Raiser(mesa.Agent):
    def __init__(self, model: mesa.Model, exc: BaseException) -> None:
        super().__init__(model)
        self.exc = exc

    def step(self) -> None:
        raise self.exc


def _assert_safe(text: str) -> None:
    text.encode("utf-8")  # no lone surrogate: writable to any UTF-8 stream
    assert "\x1b" not in text and "\x9b" not in text and "\x00" not in text


def _render_all(report: trio_mesa.StepReport) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=80, record=True, color_system=None).print(report)
    records = report.to_records()
    json.dumps(records, default=str)
    return [str(report), repr(report), *map(repr, report.outcomes), out.getvalue()] + [
        r["exception_message"] for r in records if r["exception_message"] is not None
    ]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile_exceptions(), min_size=1, max_size=3))
def test_every_renderer_of_a_step_survives_hostile_exceptions(excs: list[BaseException]) -> None:
    model = mesa.Model(rng=0)
    for exc in excs:
        Raiser(model, exc)
    handler = logging.Handler()
    handler.emit = lambda record: logging.Formatter().format(record)  # type: ignore[method-assign]
    log = logging.getLogger("trio_mesa")
    log.addHandler(handler)
    failed: list[str] = []
    handler.handleError = lambda record: failed.append(record.msg)  # type: ignore[method-assign]
    try:
        report = trio_mesa.run_step(model.agents)
    finally:
        log.removeHandler(handler)
    assert failed == [], "a log record could not be formatted"
    assert [o.status for o in report] == [Status.FAILED] * len(excs)
    for text in _render_all(report):
        _assert_safe(text)
    table = str(report)
    # failures grouped by kind, every agent counted in one group, 80 columns at most
    heads = [line for line in table.splitlines()[1:] if not line.startswith("    ")]
    assert sum(int(line.split()[0]) for line in heads) == len(excs)
    assert all(" failed: HostileError" in h or " failed, e.g. HostileError" in h for h in heads)
    assert all(len(line) <= 80 for line in table.splitlines())
    with pytest.raises(StepFailed) as info:
        report.raise_for_failures()
    assert len(info.value.exceptions) == len(excs)
    "".join(traceback.format_exception(info.value))  # Python's own rendering copes too


@settings(max_examples=200, deadline=None)
@given(hostile_exceptions())
def test_describe_exception_never_raises_and_names_the_type(exc: BaseException) -> None:
    text = describe_exception(exc, limit=CELL_LIMIT)
    assert text.startswith("HostileError")
    _assert_safe(text)
    _assert_safe(safe_repr(exc))
    assert len(text) <= CELL_LIMIT + len("HostileError: ... (999999 more characters)")


def test_placeholders_say_what_went_wrong() -> None:
    class Loud(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

        def __repr__(self) -> str:
            return 42  # type: ignore[return-value]

    assert exception_message(Loud()) == "<Loud.__str__ raised RuntimeError>"
    assert describe_exception(Loud()) == "Loud: <Loud.__str__ raised RuntimeError>"
    assert safe_repr(Loud()) == "<Loud.__repr__ returned int>"


def test_a_message_is_shown_as_written_escaped_where_a_terminal_would_act() -> None:
    exc = ValueError("tab\tnewline\nesc\x1b[2J [/] caf\u00e9 \ud800")
    assert exception_message(exc) == "tab\tnewline\nesc\\x1b[2J [/] caf\u00e9 \\ud800"
    assert exception_message(ValueError("y" * 600), limit=500) == (
        "y" * 500 + "... (100 more characters)"
    )


def test_the_rich_table_shows_markup_in_a_message_as_text() -> None:
    model = mesa.Model(rng=0)
    Raiser(model, ValueError("closing [/] and [bold]opening"))
    report = trio_mesa.run_step(model.agents)
    out = io.StringIO()
    Console(file=out, width=120, record=True, color_system=None).print(report)
    assert "ValueError: closing [/] and [bold]opening" in out.getvalue()


# -- fault_injection's summary at 80 columns (issue 11, item 5) -------------------------


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_run_summary_fits_80_columns_and_loses_nothing(name: str) -> None:
    result = run_scenario(SCENARIOS[name])
    console = Console(file=io.StringIO(), width=80, record=True, color_system=None)
    console.print(render_rich(result))
    rich_text = console.export_text()
    plain = render_text(result, width=80)
    for text in (rich_text, plain):
        lines = text.splitlines()
        assert all(len(line) <= 80 for line in lines), name
        assert "…" not in text  # rich cut nothing short
        # Every step has its own row, on one line: nothing wrapped.
        for st_ in result.steps:
            assert sum(1 for line in lines if _first_cell(line) == str(st_.step)) >= 1, st_.step
        # Every kind of failure is named whole, with its count over the run.
        for kind in {k for s in result.steps for k in s.failures}:
            n = sum(s.failures[kind] for s in result.steps)
            assert any(kind in line and f" {n} " in f" {line} " for line in lines), kind
        for raised in {s.raised for s in result.steps if s.raised}:
            assert f"raised {raised}" in text
        assert "oracle: every outcome" in text


def _first_cell(line: str) -> str:
    return line.strip("│ ").split(" ")[0].strip("│") if line else ""
