"""Drop-in replacement for ``mesa_llm.parallel_stepping``: change one import line.

    # from mesa_llm.parallel_stepping import step_agents_parallel
    from trio_mesa.compat import step_agents_parallel

    report = await step_agents_parallel(list(model.agents))   # one failure no longer
    print(report)                                             # aborts the whole step

Same names and parameters as mesa-llm 0.3.2. Each agent runs in its own Trio task
(driven in Trio guest mode on your own asyncio loop when awaited), its exception is
logged and recorded rather than raised, and every function returns a
`trio_mesa.StepReport`. Options that mesa-llm's signatures have no room for come from
`configure` (process-wide), `policy` (a scoped ``with`` block) and the
``TRIO_MESA_STRICT=1`` environment variable. `bound_mesa_llm_retries` bounds mesa-llm's
own endless ``ModuleLLM`` retry (reversibly), so that a ``retry`` set here is the only
retry loop. Importing this module makes ``do_async``
available on Mesa's agent sets, as importing mesa-llm's does; it does not import
trio-asyncio.
"""

from ._config import configure, policy
from ._mesa_llm_retries import (
    MesaLLMRetryBound,
    bound_mesa_llm_retries,
    mesa_llm_retry_bound,
    restore_mesa_llm_retries,
)
from ._patching import (
    disable_automatic_parallel_stepping,
    enable_automatic_parallel_stepping,
    install_do_async,
)
from ._stepping import (
    AgentResults,
    step_agents_multithreaded,
    step_agents_parallel,
    step_agents_parallel_sync,
)

install_do_async()
del install_do_async

__all__ = [
    "AgentResults",
    "MesaLLMRetryBound",
    "bound_mesa_llm_retries",
    "configure",
    "disable_automatic_parallel_stepping",
    "enable_automatic_parallel_stepping",
    "mesa_llm_retry_bound",
    "policy",
    "restore_mesa_llm_retries",
    "step_agents_multithreaded",
    "step_agents_parallel",
    "step_agents_parallel_sync",
]

# Public names say where users find them (`trio_mesa.compat.AgentResults`).
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("trio_mesa.compat._"):
        _obj.__module__ = __name__
del _name, _obj
