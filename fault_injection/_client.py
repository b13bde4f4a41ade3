"""`FakeLLM`: a per-agent fake LLM client that carries out its `FaultPlan`.

The n-th call of agent ``unique_id`` does exactly what ``plan.call(unique_id, n)`` says:
it waits the planned latency with the caller's own sleep (``asyncio.sleep`` for
`acompletion`, ``trio.sleep`` for `trio_acompletion`, so virtual time under Trio's
``MockClock`` applies to both on a Trio host), then returns a reply or raises the planned
exception. `completion` (sync) never sleeps: a sync agent runs inline on the host thread,
where a blocking sleep would stall every other agent while deciding nothing.

With a provider quota (`Scenario.quota`), every call first asks the run's shared
`TokenBucket` (on the run's clock, in model seconds) for a token; refused, the call
raises `RateLimitError` at once with the honest ``retry_after`` (the wait until the next
token) and does nothing else, though it counts as a call (the request was made).

Every reply (well formed or not) is billed with `trio_mesa.record_usage`: one prompt
token per whitespace-separated word of the prompt, one completion token per word of the
reply, cost unknown (``None``), as the chaos server bills. A raised error is not billed.
With usage tracking on (`trio_mesa.track_usage`, or `simulate`), each agent's
`AgentOutcome.usage` holds exactly what its fake LLM billed.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import trio

from trio_mesa import record_usage, track_usage

from ._errors import (
    APIConnectionError,
    ContentPolicyViolationError,
    InternalServerError,
    RateLimitError,
    ServiceUnavailableError,
    Timeout,
    ToolCallParseError,
)
from ._plan import FaultPlan, PlannedCall
from ._quota import TokenBucket
from ._scenario import FaultKind


@dataclass(frozen=True, slots=True)
class FakeReply:
    """A completion's text: JSON ``{"tool": ..., "arguments": {...}}`` when well formed."""

    content: str
    call: PlannedCall


class FakeLLM:
    """The fake LLM client of one agent.

    Args:
        plan: the `FaultPlan` to carry out.
        unique_id: the agent whose calls these are.
        scale: real (or virtual) seconds slept per model second of planned latency.
        quota: the provider's token bucket shared by every agent of the run, or ``None``.

    Attributes:
        calls: how many calls have started (the next call is ``calls + 1``).
    """

    def __init__(
        self,
        plan: FaultPlan,
        unique_id: int,
        *,
        scale: float = 1.0,
        quota: TokenBucket | None = None,
    ) -> None:
        self.plan = plan
        self.unique_id = unique_id
        self.scale = scale
        self.quota = quota
        self.calls = 0
        self.model_name = f"fake/agent-{unique_id}"
        track_usage()  # what `record_usage` asks of a client, once, before its first step

    def _next(self) -> PlannedCall:
        self.calls += 1
        call = self.plan.call(self.unique_id, self.calls)
        if self.quota is not None:
            wait = self.quota.take()
            if wait > 0:
                raise RateLimitError(
                    f"Quota exceeded for {self.model_name} ({self.quota.quota.describe()}): "
                    f"retry after {wait:.3g} s (agent {self.unique_id}, call {call.call})",
                    model=self.model_name,
                    retry_after=wait * self.scale,
                )
        return call

    async def acompletion(self, prompt: str) -> FakeReply:
        """An asyncio-flavored completion (sleeps with ``asyncio.sleep``)."""
        call = self._next()
        if call.kind is FaultKind.HANG:
            await asyncio.get_running_loop().create_future()  # never set: hangs until cancelled
        await asyncio.sleep(call.latency * self.scale)
        return self._finish(call, prompt)

    async def trio_acompletion(self, prompt: str) -> FakeReply:
        """A Trio-flavored completion (sleeps with ``trio.sleep``)."""
        call = self._next()
        if call.kind is FaultKind.HANG:
            await trio.sleep_forever()
        await trio.sleep(call.latency * self.scale)
        return self._finish(call, prompt)

    def completion(self, prompt: str) -> FakeReply:
        """A sync completion (no sleep; see the module docstring)."""
        return self._finish(self._next(), prompt)

    def _finish(self, call: PlannedCall, prompt: str) -> FakeReply:
        kind = call.kind
        if kind is FaultKind.OK:
            return self._bill(FakeReply(_reply_json(call), call), prompt)
        if kind is FaultKind.MALFORMED_JSON:  # cut off mid-object
            return self._bill(FakeReply(_reply_json(call)[:-7], call), prompt)
        if kind is FaultKind.BAD_TOOL_CALL:
            return self._bill(FakeReply(json.dumps({"arguments": "dx=1"}), call), prompt)
        if kind is FaultKind.INTERRUPT:
            raise KeyboardInterrupt(
                f"fault_injection: planned KeyboardInterrupt in agent {self.unique_id}, "
                f"call {call.call}"
            )
        raise self._exception(call)

    @staticmethod
    def _bill(reply: FakeReply, prompt: str) -> FakeReply:
        # A reply is billed, an error is not (a provider charges nothing for a 429); tokens
        # are counted as the chaos server counts them, one per whitespace-separated word.
        record_usage(
            prompt_tokens=len(prompt.split()), completion_tokens=len(reply.content.split())
        )
        return reply

    def _exception(self, call: PlannedCall) -> Exception:
        model = self.model_name
        where = f"(agent {self.unique_id}, call {call.call})"
        kind = call.kind
        if kind is FaultKind.RATE_LIMIT:
            return RateLimitError(
                f"Rate limit reached for {model}: retry after {call.retry_after:g} s {where}",
                model=model,
                retry_after=call.retry_after * self.scale,  # the engine waits real seconds
            )
        exc_type: type[Exception]
        message: str
        exc_type, message = {
            FaultKind.TIMEOUT: (Timeout, "Request timed out"),
            FaultKind.CONNECTION_ERROR: (APIConnectionError, "Connection error: peer reset"),
            FaultKind.SERVER_ERROR: (InternalServerError, "Internal server error"),
            FaultKind.SERVICE_UNAVAILABLE: (ServiceUnavailableError, "Service unavailable"),
            FaultKind.CONTENT_FILTER: (
                ContentPolicyViolationError,
                "The response was filtered due to the prompt triggering content management policy",
            ),
        }[kind]
        return exc_type(f"{message} {where}", model=model)  # type: ignore[call-arg]


def _reply_json(call: PlannedCall) -> str:
    dx = (call.unique_id + call.call) % 3 - 1
    dy = (call.unique_id * 7 + call.call) % 3 - 1
    # Formatted directly (json.dumps costs 10x more); json.loads reads it back unchanged.
    return f'{{"tool": "move", "arguments": {{"dx": {dx}, "dy": {dy}}}}}'


def parse_tool_call(reply: FakeReply) -> tuple[str, dict[str, Any]]:
    """The ``(tool name, arguments)`` in a reply.

    Raises:
        json.JSONDecodeError: the reply is not JSON.
        ToolCallParseError: the JSON has no tool name or its arguments are not an object.
    """
    data = json.loads(reply.content)
    tool = data.get("tool") if isinstance(data, dict) else None
    args = data.get("arguments") if isinstance(data, dict) else None
    if not isinstance(tool, str) or not isinstance(args, dict):
        raise ToolCallParseError(f"unparseable tool call in reply: {reply.content!r}")
    return tool, args
