"""litellm through trio-mesa's request seam, run in a subprocess by ``tests/test_seam_litellm.py``.

Sync agents call ``litellm.completion`` from worker threads (``sync_mode="thread"``)
with prompts that never name the agent; the run is recorded in-process and replayed
with the server stopped. A step with ``request_retry`` bounds mesa-llm's endless retry
while it runs and restores it after. An Anthropic-routed call (litellm's own httpx
handler, which does not use ``litellm.client_session``) bypasses the seam: the step
warns. Prints one JSON document.
"""

from __future__ import annotations

import json
import logging
import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENAI_API_KEY", "sk-chaos-not-a-real-key")
os.environ.setdefault("ANTHROPIC_API_KEY", "sk-chaos-not-a-real-key")

import litellm
from mesa import Agent, Model

import trio_mesa
from fault_injection import chaos_server

litellm.suppress_debug_info = True


class Caller(Agent):
    def step(self) -> list[str]:
        out = []
        for n in range(2):
            reply = litellm.completion(
                model="openai/chaos",
                api_base=self.model.api_base,
                messages=[{"role": "user", "content": f"same prompt for all, turn {n}"}],
            )
            out.append(reply.choices[0].message.content)
        return out


class BoundChecker(Agent):
    def step(self) -> object:
        from trio_mesa.compat import mesa_llm_retry_bound

        bound = mesa_llm_retry_bound()
        return None if bound is None else [bound.attempts, bound.sdk_retries]


class Bypasser(Agent):
    def step(self) -> None:
        litellm.completion(
            model="anthropic/claude-3-haiku-20240307",
            api_base=self.model.api_base.removesuffix("/v1"),
            messages=[{"role": "user", "content": "hello"}],
            max_retries=0,
        )


class Town(Model):
    def __init__(self, api_base: str, kind: type[Agent], n: int = 4) -> None:
        super().__init__(rng=3)
        self.api_base = api_base
        for _ in range(n):
            kind(self)


def main() -> int:
    cassette = sys.argv[1]
    warnings: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING:
                warnings.append(record.getMessage())

    logging.getLogger("trio_mesa").addHandler(Keep())
    logging.getLogger("trio_mesa").propagate = False
    out: dict[str, object] = {}
    with chaos_server("clean") as server:
        api_base = server.api_base
        model = Town(api_base, Caller)
        report = trio_mesa.run_step(
            model.agents, sync_mode="thread", cassette=cassette, record="all"
        )
        out["record"] = {o.unique_id: o.result for o in report}
        out["record_usage"] = [o.usage.calls for o in report]
        out["server"] = sorted([r.agent, r.call] for r in server.records())
        import mesa_llm.module_llm  # noqa: F401  (bounded only once imported)

        from trio_mesa.compat import mesa_llm_retry_bound

        checked = trio_mesa.run_step(
            Town(api_base, BoundChecker, 1).agents, request_retry=trio_mesa.Retry(attempts=3)
        )
        out["bound_during"] = checked.outcomes[0].result
        out["bound_after"] = mesa_llm_retry_bound()
        warnings.clear()
        bypass = trio_mesa.run_step(Town(api_base, Bypasser, 1).agents)
        out["bypass_status"] = bypass.outcomes[0].status.value
        out["bypass_warnings"] = [w for w in warnings if "did not pass through" in w]
    replayed = trio_mesa.run_step(
        Town(api_base, Caller).agents, sync_mode="thread", cassette=cassette, record="none"
    )
    out["replay"] = {o.unique_id: o.result for o in replayed}
    out["replay_usage"] = [o.usage.calls for o in replayed]
    out["sessions_restored"] = [litellm.aclient_session is None, litellm.client_session is None]
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
