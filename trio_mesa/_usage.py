"""Usage attribution: the `Usage` value, each agent's ledger, and `record_usage`.

Every agent runs in its own task, so a ``contextvars.ContextVar`` set in that task (and
copied into its worker thread, and into the tasks litellm's logging spawns from it)
names the agent's ledger: whatever reports an LLM call there (`record_usage`, or the
litellm callback in `trio_mesa._litellm_usage`) adds to that agent, with no change to
agent code. A ledger is a plain list (built at C speed on the hot path):
``[calls, prompt_tokens, completion_tokens, known_cost, unpriced_calls, pending,
agent, requests, request_retries, litellm_calls, deadline]``, where ``pending`` is the set of
litellm call ids started but not yet logged (litellm logs a call's success from a task
or thread of its own, after the call has returned), or ``None``; ``agent`` is the
agent's ``unique_id`` and the last three are what the request seam
(`trio_mesa._seam`) counts in this step: HTTP requests it saw, requests it retried, and
litellm calls started (a call litellm made without passing the seam shows as more calls
than requests); ``deadline`` is when the agent's time runs out, on the run's clock (its
start plus ``timeout``, capped by the step's deadline: the seam's rate-limit gate does not
wait past it). The recorder freezes a ledger into a `Usage` when the agent's outcome is
built, and again at the step's end for agents whose calls were still pending.
"""

from __future__ import annotations

import contextvars
import math
import threading
from dataclasses import dataclass
from typing import Any

#: The ledger of the agent whose task this is (``None`` outside an agent's call).
current_ledger: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "trio_mesa_usage_ledger", default=None
)
#: Ledgers are updated from agent tasks, worker threads and litellm's logging threads.
ledger_lock = threading.Lock()

CALLS, PROMPT, COMPLETION, KNOWN_COST, UNPRICED, PENDING = range(6)
AGENT, REQUESTS, REQUEST_RETRIES, LITELLM_CALLS, DEADLINE = range(6, 11)


class _Switch:
    # A ledger and a context variable per agent cost about 1.5-6% of a no-op agent's
    # step: paid only once something reports usage.
    on = False


switch = _Switch()


def track_usage() -> None:
    """Give every agent of every later step a usage ledger (`AgentOutcome.usage`).

    Off until something reports usage, so that steps that never do pay nothing for it:
    `track_litellm_usage` turns it on (a step does that by itself once litellm is
    imported), and so does `trio_mesa.simulate`. A client that reports its calls with
    `record_usage` calls this once, before the first step (when it is created, say).
    There is no off switch: it costs a few percent of a no-op agent's step.
    """
    switch.on = True


@dataclass(frozen=True, slots=True)
class Usage:
    """LLM calls and what they cost, for one agent's step or summed over many.

    ``a + b`` sums two values; ``sum(usages, Usage())`` sums many. Cost comes only from
    what the reporter knows (litellm's local cost map for litellm calls): a call whose
    cost is unknown adds its tokens and counts in ``unpriced_calls``, never a made-up
    price.

    Nothing recorded (``Usage()``, falsy, ``recorded`` is ``False``) means unknown, not
    free: the agent's client may report nothing (usage is tracked for litellm and
    `record_usage` only), so its ``cost`` is ``None`` and ``str()`` says "tokens n/a,
    cost unknown". The token fields stay ``0`` so that sums still add up.

    Attributes:
        calls: completed LLM calls reported (a call that raised reports nothing).
        prompt_tokens: input tokens billed, summed.
        completion_tokens: output tokens billed, summed.
        known_cost: the summed cost of the calls whose cost is known (USD for litellm).
        unpriced_calls: calls whose cost is unknown (a model not in the cost map).
        request_retries: requests the seam sent again after a transient failure
            (``StepPolicy(request_retry=...)``); step retries are the outcomes'
            ``attempts``, counted apart.
    """

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    known_cost: float = 0.0
    unpriced_calls: int = 0
    request_retries: int = 0

    @property
    def recorded(self) -> bool:
        """Whether any call was recorded; ``False``: the figures are unknown, not 0."""
        return bool(self.calls or self.prompt_tokens or self.completion_tokens)

    @property
    def cost(self) -> float | None:
        """The total cost, or ``None`` when it is unknown: nothing was recorded, or
        some call's cost is unknown (then ``known_cost`` is what the priced calls cost:
        a lower bound)."""
        return None if self.unpriced_calls or not self.recorded else self.known_cost

    @property
    def total_tokens(self) -> int:
        """``prompt_tokens + completion_tokens``."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        if not isinstance(other, Usage):
            return NotImplemented
        return Usage(
            self.calls + other.calls,
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.known_cost + other.known_cost,
            self.unpriced_calls + other.unpriced_calls,
            self.request_retries + other.request_retries,
        )

    def __bool__(self) -> bool:
        return bool(
            self.calls or self.prompt_tokens or self.completion_tokens or self.request_retries
        )

    def __str__(self) -> str:
        if not self.recorded:
            return "no LLM calls recorded: tokens n/a, cost unknown"
        cost = self.cost
        if cost is not None:
            money = f"${cost:.4f}"
        else:
            money = f"cost unknown for {self.unpriced_calls} call(s)"
            if self.known_cost:
                money += f", ${self.known_cost:.4f} for the rest"
        retried = f", {self.request_retries} request(s) retried" if self.request_retries else ""
        return (
            f"{self.calls} call(s), {self.prompt_tokens} prompt + "
            f"{self.completion_tokens} completion tokens, {money}{retried}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields, plus ``cost`` and ``total_tokens``, as a plain dict."""
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cost": self.cost,
            "known_cost": self.known_cost,
            "unpriced_calls": self.unpriced_calls,
            "request_retries": self.request_retries,
        }


NO_USAGE = Usage()


def new_ledger(agent: Any = None, deadline: float = math.inf) -> list[Any]:
    return [0, 0, 0, 0.0, 0, None, agent, 0, 0, 0, deadline]


def open_ledger(
    ledgers: list[Any], i: int, agent: Any, deadline: float = math.inf
) -> contextvars.Token[list[Any] | None]:
    """Give agent ``i`` (``agent``) a fresh ledger in ``ledgers`` and make it this
    context's current one (set it in the agent's own task: worker threads copy the
    context); the token resets it where the context is shared (inline agents run in
    the spawner's). The ledger names the agent (its ``unique_id``) and its
    ``deadline``, so the request seam knows whose request it sees and how long it may
    wait at a rate limit. The one place every launcher opens an agent's context."""
    ledgers[i] = ledger = new_ledger(getattr(agent, "unique_id", None), deadline)
    return current_ledger.set(ledger)


def freeze(ledger: list[Any] | None) -> Usage:
    """The ledger's figures as a `Usage` (the shared empty one when nothing was reported)."""
    if ledger is None or not (
        ledger[CALLS] or ledger[PROMPT] or ledger[COMPLETION] or ledger[REQUEST_RETRIES]
    ):
        return NO_USAGE
    with ledger_lock:
        return Usage(ledger[0], ledger[1], ledger[2], ledger[3], ledger[4], ledger[8])


def add_call(
    ledger: list[Any], prompt_tokens: int, completion_tokens: int, cost: float | None
) -> None:
    """One call's figures added to ``ledger``."""
    with ledger_lock:
        ledger[CALLS] += 1
        ledger[PROMPT] += prompt_tokens
        ledger[COMPLETION] += completion_tokens
        if cost is None:
            ledger[UNPRICED] += 1
        else:
            ledger[KNOWN_COST] += cost


def record_usage(
    *, prompt_tokens: int = 0, completion_tokens: int = 0, cost: float | None = None
) -> bool:
    """Report one LLM call made by the agent whose step is running here.

    For any client that is not litellm (a fake LLM, your own HTTP client): call it once
    per completed call, from the agent's own code (its task, or the worker thread a sync
    agent runs in, or a task or thread started from there with the context copied). The
    figures are added to that agent's `AgentOutcome.usage` and its step's
    `StepReport.usage`. ``cost=None`` means unknown: the call counts in
    ``Usage.unpriced_calls``. Thread-safe.

    Attribution needs `track_usage` (or `track_litellm_usage`, or `simulate`) to have
    been called before the step started.

    Returns:
        ``True`` when the call was attributed to an agent; ``False`` (and nothing
        recorded) outside a trio-mesa step's agent call, or in a step that started
        before usage tracking was turned on.

    Raises:
        TypeError, ValueError: for negative or non-integer token counts, or a cost
            that is not a non-negative number or ``None``.
    """
    for name, value in (("prompt_tokens", prompt_tokens), ("completion_tokens", completion_tokens)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"trio_mesa.record_usage(): {name} must be an int, not {value!r}")
        if value < 0:
            raise ValueError(f"trio_mesa.record_usage(): {name} must be >= 0, not {value!r}")
    if cost is not None:
        if isinstance(cost, bool) or not isinstance(cost, (int, float)):
            raise TypeError(
                f"trio_mesa.record_usage(): cost must be a number or None, not {cost!r}"
            )
        if not cost >= 0:
            raise ValueError(f"trio_mesa.record_usage(): cost must be >= 0, not {cost!r}")
        cost = float(cost)
    ledger = current_ledger.get()
    if ledger is None:
        return False
    add_call(ledger, prompt_tokens, completion_tokens, cost)
    return True


def sum_usage(usages: Any) -> Usage:
    """The sum of an iterable of `Usage` values (the empty one if there are none)."""
    calls = prompt = completion = unpriced = retries = 0
    known = 0.0
    for u in usages:
        if u is NO_USAGE:
            continue
        calls += u.calls
        prompt += u.prompt_tokens
        completion += u.completion_tokens
        known += u.known_cost
        unpriced += u.unpriced_calls
        retries += u.request_retries
    if not (calls or prompt or completion or retries):
        return NO_USAGE
    return Usage(calls, prompt, completion, known, unpriced, retries)


__all__ = ["Usage", "record_usage", "track_usage"]
