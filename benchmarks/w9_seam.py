"""Workload 9: what trio-mesa's request seam costs per LLM request (issue 23).

100 Trio-flavored agents each send 10 chat requests through an ``httpx.AsyncClient``
inside one ``trio_mesa.step_agents`` step. The provider is an in-memory
``httpx.MockTransport`` answering a canned completion, so the time is the client's and
the seam's, not a network's. Contenders, alternated round by round: the client over the
bare transport, and the same client over the seam (`trio_mesa._transport`: agent
attributed, ``X-Agent-Id`` set, call counted, body read, usage parsed and added to the
agent's ledger). The rows are the ratio of the medians and the seam's cost per request
(the difference of the medians over the 1,000 requests).
"""

from __future__ import annotations

import json
import statistics
import time

import httpx
import trio
from mesa import Agent, Model

import trio_mesa
from benchmarks._harness import Config, Row, alternate, ratio_row
from trio_mesa._transport import SeamAsyncTransport

AGENTS = 100
REQUESTS = 10
REPLY = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
).encode()
BODY = {"model": "bench", "messages": [{"role": "user", "content": "where next?"}]}


def _answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "application/json"}, content=REPLY)


class Caller(Agent):
    client: httpx.AsyncClient

    @trio_mesa.trio_native
    async def astep(self) -> None:
        for _ in range(REQUESTS):
            reply = await Caller.client.post("http://bench.invalid/v1/chat/completions", json=BODY)
            reply.raise_for_status()


class Town(Model):
    def __init__(self) -> None:
        super().__init__(rng=1)
        for _ in range(AGENTS):
            Caller(self)


def step_seconds(seam: bool) -> float:
    inner = httpx.MockTransport(_answer)
    transport = SeamAsyncTransport(inner) if seam else inner
    Caller.client = httpx.AsyncClient(transport=transport)
    model = Town()
    trio_mesa.track_usage()

    async def main() -> float:
        start = time.perf_counter()
        report = await trio_mesa.step_agents(model.agents)
        took = time.perf_counter() - start
        assert report.all_ok, str(report)
        if seam:
            assert report.usage.calls == AGENTS * REQUESTS
        return took

    return trio.run(main)


def measure(rounds: int) -> list[Row]:
    samples = alternate(
        {"bare transport": lambda: step_seconds(False), "seam": lambda: step_seconds(True)},
        rounds,
    )
    ratio = ratio_row(
        "9",
        f"{AGENTS} agents x {REQUESTS} requests: client over the seam / over the bare transport",
        samples,
        "seam",
        "bare transport",
    )
    per_request = (
        statistics.median(samples["seam"]) - statistics.median(samples["bare transport"])
    ) / (AGENTS * REQUESTS)
    cost = Row(
        workload="9",
        name="the seam's cost per request (difference of the medians)",
        value=round(per_request * 1e6, 1),
        unit="us/request",
        detail=f"over {AGENTS * REQUESTS} requests per step",
        rounds=rounds,
    )
    return [ratio, cost]


def run(config: Config) -> list[Row]:
    return measure(config.rounds(15, quick=3))
