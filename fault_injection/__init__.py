"""fault_injection: seeded failing and slow fake LLM agents, with an exact oracle.

Trio's ``trio.testing`` for trio-mesa: build a `Scenario` (or take a named one from
`SCENARIOS`), and `run_scenario` steps a real Mesa model of fake LLM agents through it,
in virtual time, checking every agent's outcome in every step against the oracle's
prediction (`expected_run`) and the invariants (`check_step`)::

    from fault_injection import SCENARIOS, run_scenario

    result = run_scenario(SCENARIOS["flaky"], seed=7)
    assert result.matched, result.mismatches

Or from a shell: ``python -m fault_injection run flaky --seed 7``.
"""

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
from ._runner import RunResult, StepResult, run_scenario
from ._scenario import FaultKind, FaultRule, Scenario
from ._scenarios import SCENARIOS
from ._toml import ScenarioError, load_scenario, scenario_from_dict

__all__ = [
    "APIConnectionError",
    "APIError",
    "AsyncioLLMAgent",
    "ContentPolicyViolationError",
    "ExpectedRun",
    "ExpectedStep",
    "FakeLLM",
    "FakeLLMAgent",
    "FakeLLMModel",
    "FakeReply",
    "FaultKind",
    "FaultPlan",
    "FaultRule",
    "Fixed",
    "InternalServerError",
    "LogNormal",
    "ObservedStep",
    "PlannedCall",
    "RateLimitError",
    "SCENARIOS",
    "RunResult",
    "Scenario",
    "ScenarioError",
    "ServiceUnavailableError",
    "StepResult",
    "SyncLLMAgent",
    "Timeout",
    "ToolCallParseError",
    "TrioLLMAgent",
    "Uniform",
    "check_step",
    "expected_run",
    "expected_step",
    "load_scenario",
    "mesa_llm_baseline",
    "parse_tool_call",
    "run_scenario",
    "scenario_from_dict",
]
