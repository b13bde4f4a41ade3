"""trio-mesa: parallel stepping of Mesa agents that survives the failures LLM calls have.

Every agent runs in its own Trio task; an agent's exception is captured in its
`AgentOutcome` and never cancels its siblings; every step returns a `StepReport`.

    import trio_mesa

    report = trio_mesa.run_step(model.agents, timeout=30, max_concurrency=50)
    print(report)                      # counts, and a table of the agents that failed
    report.raise_for_failures()        # or strict=True: a StepFailed ExceptionGroup
"""

from importlib.metadata import PackageNotFoundError, version

from ._api import aio_call_agents, aio_step_agents, call_agents, run_step, step_agents
from ._breaker import CircuitBreaker, CircuitOpen
from ._budget import Budget
from ._cassette import Cassette, CassetteError, Exchange
from ._checkpoint import CheckpointError
from ._errors import AgentCancelled, AgentTimeout, StepFailed
from ._flavor import Flavor, trio_native
from ._hooks import LoggingHook, OutcomeHook, get_outcome_hooks, set_outcome_hooks
from ._litellm_usage import track_litellm_usage
from ._outcome import AgentOutcome, Status
from ._policy import StepPolicy
from ._rate_limit import RateLimit
from ._ray_executor import RayExecutor
from ._recording import Recording, use_cassette
from ._report import StepReport
from ._reporters import model_reporters
from ._resume import aio_resume, resume
from ._retry import Retry, is_outage, is_transient, retry_after_of
from ._run_report import ModelStep, RunReport
from ._seam import async_http_client, http_client
from ._simulate import aio_simulate, simulate
from ._sweep import sweep
from ._sweep_report import SweepReport, SweepRun
from ._usage import Usage, record_usage, track_usage

__all__ = [
    "AgentCancelled",
    "AgentOutcome",
    "AgentTimeout",
    "Budget",
    "Cassette",
    "CassetteError",
    "CheckpointError",
    "CircuitBreaker",
    "CircuitOpen",
    "Exchange",
    "Flavor",
    "LoggingHook",
    "ModelStep",
    "OutcomeHook",
    "RateLimit",
    "RayExecutor",
    "Recording",
    "Retry",
    "RunReport",
    "Status",
    "StepFailed",
    "StepPolicy",
    "StepReport",
    "SweepReport",
    "SweepRun",
    "Usage",
    "aio_call_agents",
    "aio_resume",
    "aio_simulate",
    "aio_step_agents",
    "async_http_client",
    "call_agents",
    "get_outcome_hooks",
    "http_client",
    "is_outage",
    "is_transient",
    "model_reporters",
    "record_usage",
    "resume",
    "retry_after_of",
    "run_step",
    "set_outcome_hooks",
    "simulate",
    "step_agents",
    "sweep",
    "track_litellm_usage",
    "track_usage",
    "trio_native",
    "use_cassette",
]

# Public names live in private modules; they say where users find them (reprs, help(),
# tracebacks and pickles read `trio_mesa.StepReport`, not `trio_mesa._report.StepReport`).
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("trio_mesa._"):
        _obj.__module__ = __name__
del _name, _obj

try:
    __version__ = version("trio-mesa")
except PackageNotFoundError:  # pragma: no cover - imported from a source tree
    __version__ = "0+unknown"
