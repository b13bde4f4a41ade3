"""`StepPolicy`: the options that shape one step, validated before any agent runs.

Every entry point takes its options the same way (`resolve_policy`): a ``policy=``
value, keyword options on top of it, or both; errors name the public function called.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

import trio

from ._breaker import CircuitBreaker
from ._checks import check_bool, check_count, check_seconds, shown
from ._hooks import check_hooks
from ._rate_limit import RateLimit
from ._retry import Retry

SyncMode = Literal["inline", "thread"]


@dataclass(frozen=True, slots=True)
class StepPolicy:
    """How a step runs its agents. Every field is validated on construction.

    Attributes:
        strict: raise `StepFailed` after every agent has finished if any failed.
        fail_fast: the first ``FAILED`` or ``TIMED_OUT`` agent cancels the others (they
            end ``CANCELLED``); with ``strict`` the step then raises, without it returns.
        timeout: seconds one agent's turn may take before it is cancelled
            (``TIMED_OUT``). ``None`` means no limit. Counted from the moment the agent
            starts, so time spent waiting for a concurrency slot does not count. With a
            ``retry`` it bounds the whole turn, every attempt and wait included, not
            each attempt: the worst case of a step stays ``timeout`` whatever the retry
            policy, and a hung first attempt cannot push the others past it. A wait
            that would end past it is not begun (the agent ends ``FAILED`` with its
            last exception and a note saying why).
        deadline: seconds the whole step may take, counted from the step's start. Agents
            still running then are cancelled and agents not yet started are not started;
            both end ``TIMED_OUT`` and the report is still complete.
        max_concurrency: at most this many agents in flight at once in this step.
        limiter: a ``trio.CapacityLimiter`` to share between steps (and models): at most
            ``limiter.total_tokens`` agents in flight across all of them. Exclusive
            with ``max_concurrency``. Like every Trio synchronization primitive it is
            not thread-safe: share it between steps of one Trio run, or of runs made
            one after another (each ``run_step`` or sync compat call is a run of its
            own), never between runs going on at the same time in different threads.
        sync_mode: how sync ``step()`` agents run. ``"inline"`` (default): one after
            another, in start order, on the Trio thread, as Mesa would; they cannot be
            interrupted, so ``timeout`` does not apply to them (the ``deadline`` still
            keeps later ones from starting). ``"thread"``: each in a worker thread, so
            blocking calls (an HTTP request) overlap.
        max_threads: at most this many worker threads for ``sync_mode="thread"``.
        shuffle: the order agents start in. ``None`` (default): a Mesa agent set
            (``model.agents``, an ``AgentSet``, ``agents_by_type[T]``) starts in the
            order Mesa's ``shuffle_do`` would use, drawn from the set's ``random`` (a
            seeded model reproduces it); any other iterable keeps its own order.
            ``True`` shuffles any input (a plain iterable with its first agent's
            ``model.random``); ``False`` keeps the given order, as ``AgentSet.do``.
        retry: a `Retry`: try a failed agent's call again, in its own task, when the
            failure is transient (by default: rate limits, timeouts, connection errors,
            5xx), waiting the backoff or the ``Retry-After`` it asks for. Only that
            agent is called again; one that succeeded never is. ``None``: one attempt.
            It runs the agent's step again, side effects included (tool calls, memory
            writes): for failures of one LLM request prefer ``request_retry``.
        request_retry: a `Retry` applied to each LLM request at the seam
            (`trio_mesa._seam`): a request that fails transiently (a 408, 409, 429 or
            5xx answer, a dropped connection, a timeout) is sent again there, after the
            backoff or its ``Retry-After``, before the agent's code sees the failure,
            so nothing the agent did before that request happens twice. Waits are
            cancelled by the agent's ``timeout`` and the step ``deadline`` (the agent
            then ends ``TIMED_OUT``). While it is set, mesa-llm's own endless retry is
            bounded to one try (`trio_mesa.compat.bound_mesa_llm_retries`). Counted in
            ``Usage.request_retries``. ``None`` (default): requests are not retried.
        rate_limit: a `RateLimit`, shared across steps and models like ``limiter``.
            Per request (``RateLimit(requests=50)``, ``RateLimit(requests=500,
            tokens=30_000, per=60)``): every LLM request passing the seam waits for
            it just before it is sent (each request retry too), its tokens reserved
            from an estimate and settled from the response's usage; a wait that would
            end at or after the agent's time limit is not begun (no request is made:
            the agent ends ``TIMED_OUT``). Per attempt (``RateLimit(25)``): every
            attempt of an agent's step passes it first. Either way a 429 asking to
            wait (``Retry-After``) closes it for everyone until then.
        breaker: a `CircuitBreaker`: when enough of the recent calls failed with an
            outage (`is_outage`: 5xx, connection errors, timeouts; never a 429), no
            call is made until a probe succeeds. An agent that meets it open waits for
            the probe if its time limit allows, else ends ``FAILED`` with
            `CircuitOpen` (no call made). The report lists when it opened,
            half-opened and closed.
        hooks: `OutcomeHook` objects called for the steps this policy shapes, after the
            process-wide ones (`set_outcome_hooks`). ``()`` (default) adds none.
        abandon_threads: threads cannot be cancelled. With ``False`` (default) a thread
            agent that outlives its timeout or the deadline is waited for: the step
            returns only when the thread has finished, a warning is logged, and the
            outcome is what the thread did (``OK`` with its result, or ``FAILED``), its
            ``duration`` showing the overrun. Nothing is left running. With ``True`` the
            step stops waiting at the timeout: the outcome is ``TIMED_OUT`` with
            ``abandoned=True``, a warning is logged, the report's ``str()`` says so, and
            the thread keeps running (its side effects may still happen).
    """

    strict: bool = False
    fail_fast: bool = False
    timeout: float | None = None
    deadline: float | None = None
    max_concurrency: int | None = None
    limiter: trio.CapacityLimiter | None = None
    sync_mode: SyncMode = "inline"
    max_threads: int = 128
    abandon_threads: bool = False
    shuffle: bool | None = None
    retry: Retry | None = None
    request_retry: Retry | None = None
    rate_limit: RateLimit | None = None
    breaker: CircuitBreaker | None = None
    hooks: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        for name in ("strict", "fail_fast", "abandon_threads"):
            check_bool(name, getattr(self, name))
        if self.shuffle is not None and self.shuffle is not True and self.shuffle is not False:
            raise TypeError(f"shuffle must be True, False or None, not {shown(self.shuffle)}")
        for name, kind in (
            ("retry", Retry),
            ("request_retry", Retry),
            ("rate_limit", RateLimit),
            ("breaker", CircuitBreaker),
        ):
            value = getattr(self, name)
            if value is not None and not isinstance(value, kind):
                raise TypeError(
                    f"{name} must be a trio_mesa.{kind.__name__} or None, not {shown(value)}"
                )
        object.__setattr__(self, "hooks", check_hooks(self.hooks, "hooks"))  # as a tuple
        for name in ("timeout", "deadline"):
            value = getattr(self, name)
            if value is not None:  # infinity is allowed: no limit, as None
                check_seconds(name, value, allow_inf=True)
        if self.max_concurrency is not None:
            mc = check_count("max_concurrency", self.max_concurrency)
            if self.limiter is not None:
                raise ValueError(
                    "pass either max_concurrency or limiter, not both "
                    f"(max_concurrency={mc!r}, limiter={self.limiter!r})"
                )
        if self.limiter is not None and not isinstance(self.limiter, trio.CapacityLimiter):
            raise TypeError(f"limiter must be a trio.CapacityLimiter, not {shown(self.limiter)}")
        if self.sync_mode not in ("inline", "thread"):
            raise ValueError(f"sync_mode must be 'inline' or 'thread', not {shown(self.sync_mode)}")
        check_count("max_threads", self.max_threads)

    def replace(self, **changes: Any) -> StepPolicy:
        """A copy with ``changes`` applied (and validated)."""
        return replace(self, **changes)

    def as_kwargs(self) -> dict[str, Any]:
        """The fields as keyword arguments for `step_agents` / `run_step`."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def metered(self) -> bool:
        """Whether agent attempts go through `Retry`, a per-attempt `RateLimit` or
        `CircuitBreaker` (a per-request `RateLimit` is passed at the seam instead)."""
        limit = self.rate_limit
        return (
            self.retry is not None
            or (limit is not None and not limit.per_request)
            or self.breaker is not None
        )

    @property
    def effective_timeout(self) -> float:
        return math.inf if self.timeout is None else float(self.timeout)


POLICY_FIELDS = frozenset(f.name for f in fields(StepPolicy))
_DEFAULT = StepPolicy()


def resolve_policy(where: str, policy: Any, options: Mapping[str, Any]) -> StepPolicy:
    """The `StepPolicy` a call to the public function ``where`` runs with.

    ``policy`` (or the defaults) with ``options`` applied on top, validated. Every error
    (an unknown option, a bad value, a ``policy`` that is not a `StepPolicy`) is a
    TypeError or ValueError whose message starts with ``where``, the function the user
    called, never an internal one.
    """
    if policy is None:
        policy = _DEFAULT
    elif not isinstance(policy, StepPolicy):
        raise TypeError(
            f"{where}: policy must be a trio_mesa.StepPolicy or None, not {shown(policy)}"
        )
    if not options:
        return policy
    unknown = sorted(set(options) - POLICY_FIELDS)
    if unknown:
        raise TypeError(
            f"{where} got unknown option(s) {', '.join(map(repr, unknown))}; "
            f"the options are {', '.join(sorted(POLICY_FIELDS))}"
        )
    try:
        return replace(policy, **options)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{where}: {exc}") from None
