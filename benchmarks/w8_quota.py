"""Workload 8: 200 real mesa-llm ``LLMAgent``s (CoT) against a provider quota of 50 requests/s
(and, in a second server, a tokens-per-minute quota as well).

One step of a Mesa model of `Walker` agents (``CoTReasoning``: a planning request and a
tool-call request each, through litellm over HTTP) against the chaos server in its own
process (``python -m fault_injection serve --scenario quota``: a token bucket of 50
requests/s, burst 50, answering 429 with an honest ``Retry-After`` beyond it), side by
side:

- (a) mesa-llm 0.3.2's own ``step_agents_parallel``: every agent backs off on its own
  (litellm's OpenAI client retries twice, honouring ``retry-after-ms``; then mesa-llm's
  tenacity loop, 1 s to 60 s, never stopping). Bounded by ``A_TIMEOUT`` seconds of wall
  time, after which what it had done is reported.
- (b) ``trio_mesa.compat.step_agents_parallel`` inside ``compat.policy(**B_OPTIONS)``.
  When ``B_OPTIONS`` has a ``retry``, mesa-llm's own retry is bounded to one try with no
  SDK retries (`bound_mesa_llm_retries`), so trio-mesa's step-level retry and shared
  rate limit are the one loop; without one (before ``trio_mesa.Retry`` exists) (b) is
  plain compat over mesa-llm's own retry. Its rate limit gates agent attempts, so it is
  set at the quota over the requests one step makes (``RateLimit(25)``).
- (c) compat with the quota written as the provider publishes it: a per-request
  ``RateLimit(requests=50)``, passed by every HTTP request at trio-mesa's seam, with
  ``request_retry`` (a 429 is retried at the request, every holder paused by its
  Retry-After). Targets (issue 23): every agent OK, wall <= 1.10x the quota floor, 429s
  <= 1% of requests.
- (d) the same against a server that also limits tokens: ``--quota-tpm TPM``, enforced
  per second (TPM/60 a second, burst one second's worth), TPM chosen from a clean
  step's tokens so that tokens bind (a token floor of ``TOKEN_FLOOR`` seconds); the
  client writes ``RateLimit(requests=50, tokens=TPM // 60)``. Same targets, against the
  token floor.

Each contender gets a fresh server (a full bucket, an empty log) and a fresh model;
litellm is warmed up first on a server of its own. Reported for each: wall time, agents
whose step finished, HTTP requests the server saw, 429s it sent. The quota floor is the
least time the provider allows for the requests a clean step makes: ``(calls - burst) /
rate``, with ``calls`` counted on a clean server (2 per agent for CoT); with a token
quota, also ``(tokens - token burst) / tokens per second``, tokens counted on the clean
server as it bills them (the larger of the two floors is the floor).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio_mesa
from benchmarks._harness import Config, Row, fmt_s

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENAI_API_KEY", "sk-chaos-not-a-real-key")

AGENTS = 200
RATE = 50.0
BURST = 50
#: Wall-time cap of contender (a), whose agents may retry for ever; (b) gets the same.
A_TIMEOUT = 60.0
MODEL_NAME = "openai/chaos"

#: HTTP requests one CoT agent step makes (a plan, then a tool call). A RateLimit gates
#: agent attempts, not requests, so the agents' rate is the quota over this.
CALLS_PER_STEP = 2
#: The compat policy of contender (b): retry (honouring Retry-After) and one rate limit
#: shared by every agent, at the provider's quota.
B_OPTIONS: dict[str, Any] = {
    "retry": trio_mesa.Retry(attempts=5, initial=0.5, max_delay=8.0),
    "rate_limit": trio_mesa.RateLimit(RATE / CALLS_PER_STEP),
}
#: Contender (c)'s request retry (made per run: (c) and (d) each get a fresh RateLimit).
REQUEST_RETRY = trio_mesa.Retry(attempts=5, initial=0.5, max_delay=8.0)
#: The token floor (seconds) the TPM of contender (d) is chosen for.
TOKEN_FLOOR = 8.5


@dataclass(frozen=True)
class Measured:
    """What one contender's step did."""

    wall: float
    finished: bool  # False: cut off at the time cap
    agents_ok: int
    requests: int
    rate_limited: int


@contextmanager
def serve(*args: str) -> Iterator[str]:
    """``python -m fault_injection serve ARGS`` in its own process; yields its base URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fault_injection", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"the chaos server did not start (exit {proc.wait()})")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def stats(base_url: str) -> dict[str, Any]:
    """The server's ``/_chaos/stats``, once no request is in flight (at most 30 s)."""
    with urllib.request.urlopen(base_url + "/_chaos/stats?wait_idle=30", timeout=60) as r:
        return json.load(r)


def _model(n: int, api_base: str) -> Any:
    from mesa import Model
    from mesa.space import MultiGrid
    from mesa_llm.llm_agent import LLMAgent
    from mesa_llm.reasoning.cot import CoTReasoning

    class Walker(LLMAgent):
        """Plans one move with Chain-of-Thought and makes it; ``done`` once it has."""

        done = False

        async def astep(self) -> None:
            obs = await self.agenerate_obs()
            plan = await self.reasoning.aplan(obs=obs, selected_tools=["move_one_step"])
            await self.aapply_plan(plan)
            self.done = True

    model = Model(rng=8)
    model.grid = MultiGrid(20, 10, torus=True)
    for i in range(n):
        agent = Walker(
            model,
            CoTReasoning,
            llm_model=MODEL_NAME,
            api_base=api_base,
            system_prompt="You are a walker in a small town.",
            step_prompt="Decide where to walk next.",
            vision=1,
        )
        agent.memory.display = False  # it prints rich panels to stdout
        model.grid.place_agent(agent, (i % 20, (i // 20) % 10))
    return model


def _warm_up() -> None:
    # litellm imports its provider and MCP modules on the first call with tools (seconds
    # of CPU): pay that on a server of its own, not on a contender's clock or quota.
    import litellm

    with serve("--scenario", "clean") as url:
        asyncio.run(
            litellm.acompletion(
                model=MODEL_NAME,
                api_base=url + "/v1",
                messages=[{"role": "user", "content": "warm up"}],
                tools=[{"type": "function", "function": {"name": "noop", "parameters": {}}}],
            )
        )


def clean_calls(n: int) -> tuple[int, int]:
    """How many LLM requests one clean step of ``n`` agents makes, and the tokens the
    server bills them (prompt plus completion)."""
    from mesa_llm import parallel_stepping

    with serve("--scenario", "clean") as url:
        model = _model(n, url + "/v1")
        asyncio.run(parallel_stepping.step_agents_parallel(list(model.agents)))
        calls = int(stats(url)["requests"])
        with urllib.request.urlopen(url + "/_chaos/log", timeout=60) as r:
            records = json.load(r)["requests"]
        tokens = sum(int(x["prompt_tokens"]) + int(x["completion_tokens"]) for x in records)
        return calls, tokens


def _options(contender: str, rate: float, tps: int | None) -> dict[str, Any]:
    if contender == "b":
        return B_OPTIONS
    limit = trio_mesa.RateLimit(requests=rate, tokens=tps)
    return {"rate_limit": limit, "request_retry": REQUEST_RETRY}


def _step(
    contender: str, n: int, rate: float, burst: int, cap: float, tps: int | None = None
) -> Measured:
    from mesa_llm import parallel_stepping

    from trio_mesa import compat
    from trio_mesa.compat import _mesa_llm_retries

    flags = ["--scenario", "quota", "--quota", str(rate), "--quota-burst", str(burst)]
    if tps is not None:
        flags += ["--quota-tpm", str(tps * 60)]
    options = _options(contender, rate, tps)
    with serve(*flags) as url:
        model = _model(n, url + "/v1")
        agents = list(model.agents)
        model.steps += 1  # what Model.step() does before the agents act

        async def mesa_llm_step() -> None:
            await parallel_stepping.step_agents_parallel(agents)

        async def compat_step() -> None:
            with compat.policy(**options):
                await compat.step_agents_parallel(agents)

        step = mesa_llm_step if contender == "a" else compat_step
        bound = contender == "b" and "retry" in B_OPTIONS
        if bound:
            _mesa_llm_retries.bound_mesa_llm_retries(1)
        finished = True
        t = time.perf_counter()
        try:
            asyncio.run(asyncio.wait_for(step(), cap))
        except TimeoutError:
            finished = False
        finally:
            wall = time.perf_counter() - t
            if bound:
                _mesa_llm_retries.restore_mesa_llm_retries()
        s = stats(url)
        return Measured(
            wall=wall,
            finished=finished,
            agents_ok=sum(bool(getattr(a, "done", False)) for a in agents),
            requests=int(s["requests"]),
            rate_limited=int(s["rate_limited"]),
        )


def rows(
    a: Measured, b: Measured, *, agents: int, calls: int, rate: float, burst: int, cap: float
) -> list[Row]:
    """The workload's rows from the two contenders' measurements."""
    floor = max(0.0, (calls - burst) / rate)
    share = 100.0 * b.rate_limited / b.requests if b.requests else 0.0
    options = ", ".join(B_OPTIONS) or "no retry/rate_limit yet"

    def ended(m: Measured) -> str:
        return f"{fmt_s(m.wall)} wall" if m.finished else f"cut off at {cap:g} s"

    def counts(m: Measured) -> str:
        return f"{m.requests} requests, {m.rate_limited} x 429"

    return [
        Row(
            workload="8",
            name=f"(b) compat ({options}): wall / quota floor ({calls} calls at {rate:g}/s)",
            value=b.wall / floor if floor else float("nan"),
            unit="x",
            detail=f"{ended(b)} vs {fmt_s(floor)}",
            op="<=",
            target=1.25,
            rounds=1,
            medians={"b": b.wall, "floor": floor},
        ),
        Row(
            workload="8",
            name=f"(b) agents whose step finished, of {agents}",
            value=b.agents_ok,
            unit="agents",
            detail=counts(b),
            op=">=",
            target=agents,
            rounds=1,
        ),
        Row(
            workload="8",
            name="(b) 429s received, share of its HTTP requests",
            value=share,
            unit="%",
            detail=counts(b),
            op="<=",
            target=5.0,
            rounds=1,
        ),
        Row(
            workload="8",
            name="(a) mesa-llm 0.3.2 step_agents_parallel: wall",
            value=a.wall,
            unit="s",
            detail=ended(a),
            rounds=1,
            medians={"a": a.wall},
        ),
        Row(
            workload="8",
            name=f"(a) agents whose step finished, of {agents}",
            value=a.agents_ok,
            unit="agents",
            detail=counts(a),
            rounds=1,
        ),
    ]


def request_rows(
    label: str, m: Measured, *, agents: int, floor: float, what: str, cap: float
) -> list[Row]:
    """Contender (c)'s or (d)'s rows: wall against the floor, agents, 429 share."""
    share = 100.0 * m.rate_limited / m.requests if m.requests else 0.0
    counts = f"{m.requests} requests, {m.rate_limited} x 429"
    ended = f"{fmt_s(m.wall)} wall" if m.finished else f"cut off at {cap:g} s"
    return [
        Row(
            workload="8",
            name=f"{label}: wall / quota floor ({what})",
            value=m.wall / floor if floor else float("nan"),
            unit="x",
            detail=f"{ended} vs {fmt_s(floor)}",
            op="<=",
            target=1.10,
            rounds=1,
            medians={label[:3]: m.wall, "floor": floor},
        ),
        Row(
            workload="8",
            name=f"{label[:3]} agents whose step finished, of {agents}",
            value=m.agents_ok,
            unit="agents",
            detail=counts,
            op=">=",
            target=agents,
            rounds=1,
        ),
        Row(
            workload="8",
            name=f"{label[:3]} 429s received, share of its HTTP requests",
            value=share,
            unit="%",
            detail=counts,
            op="<=",
            target=1.0,
            rounds=1,
        ),
    ]


def token_rate(tokens: int, floor: float = TOKEN_FLOOR) -> int:
    """Tokens per second (burst one second's worth) whose floor for ``tokens`` is about
    ``floor`` seconds: ``(tokens - r) / r = floor``."""
    return max(1, round(tokens / (floor + 1.0)))


def measure(agents: int, rate: float, burst: int, cap: float) -> list[Row]:
    """Warm up, count a clean step's calls and tokens, then step (a) to (d) once each."""
    import litellm

    litellm.suppress_debug_info = True  # its "Give Feedback" banner goes to stdout
    logging.getLogger("mesa_llm").setLevel(logging.CRITICAL)
    logging.getLogger("LiteLLM").setLevel(logging.CRITICAL)
    logging.getLogger("trio_mesa").setLevel(logging.ERROR)  # one warning per 429 retried
    _warm_up()
    calls, tokens = clean_calls(agents)
    a = _step("a", agents, rate, burst, cap)
    b = _step("b", agents, rate, burst, cap)
    c = _step("c", agents, rate, burst, cap)
    tps = token_rate(tokens)
    d = _step("d", agents, rate, burst, cap, tps)
    request_floor = max(0.0, (calls - burst) / rate)
    token_floor = max(0.0, (tokens - tps) / tps)
    out = rows(a, b, agents=agents, calls=calls, rate=rate, burst=burst, cap=cap)
    out += request_rows(
        f"(c) compat, RateLimit(requests={rate:g}), request_retry",
        c,
        agents=agents,
        floor=request_floor,
        what=f"{calls} calls at {rate:g}/s",
        cap=cap,
    )
    out += request_rows(
        f"(d) compat, RateLimit(requests={rate:g}, tokens={tps}), request_retry",
        d,
        agents=agents,
        floor=max(request_floor, token_floor),
        what=f"{tokens} tokens at {tps}/s = {tps * 60} TPM",
        cap=cap,
    )
    return out


def run(config: Config) -> list[Row]:
    if config.quick:
        return measure(20, 10.0, 10, 15.0)
    return measure(AGENTS, RATE, BURST, A_TIMEOUT)


if __name__ == "__main__":
    import argparse

    from benchmarks import run as bench_run

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 agents at 10 requests/s")
    args = parser.parse_args()
    results = run(Config(quick=args.quick))
    bench_run.print_table(results, bench_run.machine(), {})
