"""fault_injection: seeded failing and slow fake LLM agents, with an exact oracle.

Trio's ``trio.testing`` for trio-mesa: build a `Scenario` (or take a named one from
`SCENARIOS`), and `run_scenario` steps a real Mesa model of fake LLM agents through it,
in virtual time, checking every agent's outcome in every step against the oracle's
prediction (`expected_run`) and the invariants (`check_step`)::

    from fault_injection import SCENARIOS, run_scenario

    result = run_scenario(SCENARIOS["flaky"], seed=7)
    assert result.matched, result.mismatches

Or from a shell: ``python -m fault_injection run flaky --seed 7``.

For real clients, `chaos_server` serves an OpenAI-compatible endpoint on loopback that
fails on the same kind of seeded plan (`SERVER_SCENARIOS`), logging every request and
its fault (`FaultLog`), optionally enforcing a provider's request `Quota` (the
``quota`` scenario); ``python -m fault_injection serve`` runs it from a shell. As a
proxy it records a real model's run in a `Cassette` and replays it offline, with or
without faults overlaid. It needs the ``server`` extra (starlette, uvicorn, httpx),
imported only when first used.
"""

from typing import TYPE_CHECKING, Any

from ._agents import AsyncioLLMAgent, FakeLLMAgent, FakeLLMModel, SyncLLMAgent, TrioLLMAgent
from ._checker import ObservedStep, check_step
from ._client import FakeLLM, FakeReply, parse_tool_call
from ._errors import (
    APIConnectionError,
    APIError,
    ContentPolicyViolationError,
    InternalServerError,
    RateLimitError,
    ServiceUnavailableError,
    Timeout,
    ToolCallParseError,
)
from ._latency import Fixed, LogNormal, Uniform
from ._oracle import ExpectedRun, ExpectedStep, expected_run, expected_step, mesa_llm_baseline
from ._plan import FaultPlan, PlannedCall
from ._quota import Quota, TokenBucket
from ._runner import RunResult, StepResult, run_scenario
from ._scenario import FaultKind, FaultRule, Scenario
from ._scenarios import SCENARIOS
from ._toml import ScenarioError, load_scenario, scenario_from_dict
from .chaos import SERVER_SCENARIOS, Cassette, CassetteError, Exchange, FaultLog, RequestRecord

if TYPE_CHECKING:
    from .chaos import ChaosApp, ChaosServer, chaos_server

_LAZY = {"ChaosApp", "ChaosServer", "chaos_server"}


def __getattr__(name: str) -> Any:
    # The chaos server needs starlette and uvicorn: import them on first use only.
    if name in _LAZY:
        from . import chaos

        value = getattr(chaos, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SCENARIOS",
    "SERVER_SCENARIOS",
    "APIConnectionError",
    "APIError",
    "AsyncioLLMAgent",
    "Cassette",
    "CassetteError",
    "ChaosApp",
    "ChaosServer",
    "ContentPolicyViolationError",
    "Exchange",
    "ExpectedRun",
    "ExpectedStep",
    "FakeLLM",
    "FakeLLMAgent",
    "FakeLLMModel",
    "FakeReply",
    "FaultKind",
    "FaultLog",
    "FaultPlan",
    "FaultRule",
    "Fixed",
    "InternalServerError",
    "LogNormal",
    "ObservedStep",
    "PlannedCall",
    "Quota",
    "RateLimitError",
    "RequestRecord",
    "RunResult",
    "Scenario",
    "ScenarioError",
    "ServiceUnavailableError",
    "StepResult",
    "SyncLLMAgent",
    "Timeout",
    "TokenBucket",
    "ToolCallParseError",
    "TrioLLMAgent",
    "Uniform",
    "chaos_server",
    "check_step",
    "expected_run",
    "expected_step",
    "load_scenario",
    "mesa_llm_baseline",
    "parse_tool_call",
    "run_scenario",
    "scenario_from_dict",
]

# Public names live in private modules; they say where users find them (reprs and
# tracebacks read `fault_injection.Scenario`, not `fault_injection._scenario.Scenario`).
for _name in set(__all__) - set(_LAZY):
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("fault_injection._"):
        _obj.__module__ = __name__
del _name, _obj
