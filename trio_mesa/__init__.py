"""trio-mesa: parallel stepping of Mesa agents that survives the failures LLM calls have.

Every agent runs in its own Trio task; an agent's exception is captured in its
`AgentOutcome` and never cancels its siblings; every step returns a `StepReport`.

    import trio_mesa

    report = trio_mesa.run_step(model.agents, timeout=30, max_concurrency=50)
    print(report)                      # counts, and a table of the agents that failed
    report.raise_for_failures()        # or strict=True: a StepFailed ExceptionGroup
"""

from ._core import call_agents, run_step, step_agents
from ._errors import AgentCancelled, AgentTimeout, StepFailed
from ._flavor import Flavor, trio_native
from ._guest import aio_call_agents, aio_step_agents
from ._outcome import AgentOutcome, Status
from ._policy import StepPolicy
from ._report import StepReport

__all__ = [
    "AgentCancelled",
    "AgentOutcome",
    "AgentTimeout",
    "Flavor",
    "Status",
    "StepFailed",
    "StepPolicy",
    "StepReport",
    "aio_call_agents",
    "aio_step_agents",
    "call_agents",
    "run_step",
    "step_agents",
    "trio_native",
]

__version__ = "0.1.0"
