"""Real mesa-llm agents stepped by trio-mesa against an OpenAI-compatible endpoint.

Run as a script in a subprocess by ``tests/test_e2e_mesa_llm.py`` (importing mesa_llm
patches Mesa's AgentSet for the whole process, so it must not happen in the test
process). A Mesa model of ``agents`` `Walker` agents (real ``LLMAgent`` subclasses
with ``CoTReasoning``: one planning request and one tool-call request per step, through
litellm over HTTP) on a ``MultiGrid``, stepped ``steps`` times by:

- ``asyncio``: ``await trio_mesa.compat.step_agents_parallel(...)`` in ``asyncio.run``;
- ``trio``: ``trio_mesa.run_step(model.agents, ...)`` (a Trio host; trio-asyncio runs
  the agents' asyncio code, on a loop opened for each step);
- ``trio-own-loop``: ``await trio_mesa.step_agents(...)`` in ``trio.run``, every step
  inside one ``trio_asyncio.open_loop()`` of the caller's (so litellm's clients outlive
  a step, as in a user's long run).

Prints one JSON document: per step, every agent's outcome (status, attempts, usage),
its plan's text and tool call, and where it stands; per run, every agent's final
position and memory. A run whose ``api_base`` is ``null`` waits for it: the script
prints ``{"ready": NAME}`` on stdout and reads the URL from a line of stdin (so a test
can start that run's server after the previous run, as record-then-replay needs).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
import urllib.request
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENAI_API_KEY", "sk-chaos-not-a-real-key")

import litellm
from mesa import Model
from mesa.space import MultiGrid
from mesa_llm.llm_agent import LLMAgent
from mesa_llm.reasoning.cot import CoTReasoning

import trio_mesa
from trio_mesa import Status
from trio_mesa.compat import policy, step_agents_parallel

# litellm prints a "Give Feedback / Get Help" banner to stdout for every error it
# maps; stdout is our JSON channel.
litellm.suppress_debug_info = True
MODEL_NAME = "openai/chaos"


class Walker(LLMAgent):
    """Plans one move per step with Chain-of-Thought and carries it out."""

    def _build_observation(self) -> tuple[Any, dict[str, Any]]:
        # mesa-llm 0.3.2 lists the neighbours that share a cell in the order they moved
        # there: under parallel stepping, the order their LLM replies arrived. Sorted by
        # unique_id, a prompt depends on where the agents are, not on network timing,
        # so a strict replay (same replies, any arrival order) sees the same prompts.
        self_state, local_state = super()._build_observation()
        ordered = sorted(local_state.items(), key=lambda item: int(item[0].rsplit(" ", 1)[1]))
        return self_state, dict(ordered)

    async def astep(self) -> None:
        obs = await self.agenerate_obs()
        plan = await self.reasoning.aplan(obs=obs, selected_tools=["move_one_step"])
        await self.aapply_plan(plan)


class Town(Model):
    def __init__(self, n: int, api_base: str, seed: int = 42) -> None:
        super().__init__(rng=seed)
        self.grid = MultiGrid(8, 8, torus=True)
        for i in range(n):
            agent = Walker(
                self,
                CoTReasoning,
                llm_model=MODEL_NAME,
                api_base=api_base,
                system_prompt="You are a walker in a small town.",
                step_prompt="Decide where to walk next.",
                vision=1,
            )
            agent.memory.display = False  # it prints rich panels to stdout
            self.grid.place_agent(agent, (i % 8, i // 8))


def _agent_view(agent: Walker) -> dict[str, Any]:
    plan = agent._current_plan
    tool_calls = getattr(plan.llm_plan, "tool_calls", None) if plan is not None else None
    entries = list(agent.memory.short_term_memory)
    actions = entries[-1].content.get("action", []) if entries else []  # this step's
    if isinstance(actions, dict):
        actions = [actions]
    return {
        "plan_step": None if plan is None else plan.step,
        "plan_text": agent._step_display_data.get("plan_content"),
        "tool_calls": [
            {"name": tc.function.name, "arguments": tc.function.arguments}
            for tc in tool_calls or []
        ],
        "tool_responses": [tc["response"] for a in actions for tc in a.get("tool_calls", [])],
        "pos": list(agent.pos),
    }


def _report_json(model: Town, report: trio_mesa.StepReport, requests: int | None) -> dict[str, Any]:
    agents = {a.unique_id: a for a in model.agents}
    return {
        "requests": requests,
        "outcomes": [
            {
                "unique_id": o.unique_id,
                "status": o.status.value,
                "exception": None if o.exception is None else type(o.exception).__name__,
                "message": None if o.exception is None else str(o.exception)[:300],
                "attempts": o.attempts,
                "usage": [o.usage.calls, o.usage.prompt_tokens, o.usage.completion_tokens],
                **(_agent_view(agents[o.unique_id]) if o.status is Status.OK else {}),
            }
            for o in report.outcomes
        ],
    }


async def _warm_up(api_base: str) -> None:
    # litellm imports its provider and MCP modules on the first call with tools (seconds
    # of CPU on a cold cache): pay that before the first timed step, not inside it.
    await litellm.acompletion(
        model=MODEL_NAME,
        api_base=api_base,
        messages=[{"role": "user", "content": "warm up"}],
        tools=[{"type": "function", "function": {"name": "noop", "parameters": {}}}],
        headers={"x-agent-id": "0"},
    )


def _server_requests(api_base: str) -> int | None:
    # Every request of a finished step has reached the server (trio-mesa leaves nothing
    # running); wait_idle lets the server finish recording the ones we abandoned.
    url = api_base.removesuffix("/v1") + "/_chaos/health?wait_idle=10"
    with urllib.request.urlopen(url, timeout=30) as response:
        return int(json.load(response)["requests"])


def run(
    host: str,
    api_base: str,
    agents: int,
    steps: int,
    timeout: float,
    cassette: str | None = None,
    record: str | None = None,
) -> dict[str, Any]:
    """Step a new `Town` ``steps`` times on ``host``; the JSON summary of every step.

    Each step's summary has ``requests``: how many requests the server had recorded when
    the step ended, so a test can split the server's log into steps (``None`` when the
    run replays a cassette offline: no server to ask). With ``cassette``, every step
    records or replays through trio-mesa's in-process seam (`trio_mesa.use_cassette`).
    """
    if cassette is not None:
        with trio_mesa.use_cassette(cassette, record=record or "once") as recording:
            offline = recording.replays and not recording.records
            result = _run(host, api_base, agents, steps, timeout, offline)
        result["cassette"] = {"replayed": recording.replayed, "recorded": recording.recorded}
        return result
    return _run(host, api_base, agents, steps, timeout, False)


def _run(
    host: str, api_base: str, agents: int, steps: int, timeout: float, offline: bool
) -> dict[str, Any]:
    model = Town(agents, api_base)
    out: list[dict[str, Any]] = []
    started = time.perf_counter()
    if offline:  # a replay: the server is gone, there is no request count to read

        def _requests_so_far(api_base: str) -> int | None:
            return None
    else:
        _requests_so_far = _server_requests
    if host == "asyncio":

        async def stepping() -> None:
            with policy(timeout=timeout):
                for _ in range(steps):
                    model.steps += 1  # what Model.step() does before the agents act
                    report = await step_agents_parallel(list(model.agents))
                    out.append(_report_json(model, report, _requests_so_far(api_base)))

        asyncio.run(stepping())
    elif host == "trio-own-loop":
        import trio
        import trio_asyncio

        async def stepping_in_one_loop() -> None:
            async with trio_asyncio.open_loop():
                for _ in range(steps):
                    model.steps += 1
                    report = await trio_mesa.step_agents(model.agents, timeout=timeout)
                    # A blocking call in a Trio task: fine here, nothing else runs.
                    out.append(_report_json(model, report, _requests_so_far(api_base)))

        trio.run(stepping_in_one_loop)
    else:
        for _ in range(steps):
            model.steps += 1
            report = trio_mesa.run_step(model.agents, timeout=timeout)
            out.append(_report_json(model, report, _requests_so_far(api_base)))
    return {
        "host": host,
        "seconds": time.perf_counter() - started,
        "steps": out,
        "agents": {str(a.unique_id): _final_view(a) for a in model.agents},
    }


def _final_view(agent: Walker) -> dict[str, Any]:
    memory = agent.memory
    return {
        "pos": list(agent.pos),
        "short_term": [
            {"step": e.step, "content": json.loads(json.dumps(e.content, default=repr))}
            for e in memory.short_term_memory
        ],
        "long_term": memory.long_term_memory,
    }


def main(argv: list[str] | None = None) -> int:
    """``mesa_llm_e2e.py RUNS_JSON``: a list of `run` keyword dicts, each with a ``name``.

    Prints ``{"runs": {name: summary}}`` as one line of JSON on stdout.
    """
    runs = json.loads((argv or sys.argv[1:])[0])
    logging.getLogger("trio_mesa").addHandler(logging.NullHandler())
    logging.getLogger("trio_mesa").propagate = False
    logging.getLogger("mesa_llm").setLevel(logging.CRITICAL)  # tool errors: in the report
    if not runs[0].pop("skip_warm_up", False):
        asyncio.run(_warm_up(runs[0]["api_base"]))
    results = {}
    for spec in runs:
        name = spec.pop("name")
        if spec["api_base"] is None:
            sys.stdout.write(json.dumps({"ready": name}) + "\n")
            sys.stdout.flush()
            spec["api_base"] = sys.stdin.readline().strip()
        results[name] = run(**spec)
    sys.stdout.write(json.dumps({"runs": results}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
